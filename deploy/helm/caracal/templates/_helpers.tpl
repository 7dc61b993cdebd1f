{{/*
Names, labels and the pieces both binaries share: secret files (NAME_FILE), TLS and CA mounts,
security contexts. Components: gateway, control-plane, ledger.
*/}}

{{- define "caracal.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "caracal.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* "<fullname>-<component>", kept within the 63 characters of a DNS label. */}}
{{- define "caracal.componentName" -}}
{{- $full := include "caracal.fullname" .root | trunc (int (sub 62 (len .component))) | trimSuffix "-" }}
{{- printf "%s-%s" $full .component }}
{{- end }}

{{- define "caracal.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: stable across upgrades (a Deployment's selector is immutable). */}}
{{- define "caracal.selectorLabels" -}}
app.kubernetes.io/name: {{ include "caracal.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "caracal.labels" -}}
helm.sh/chart: {{ include "caracal.chart" .root }}
{{ include "caracal.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: caracal
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The pods of this release that may reach Postgres, Redis and (gateway) the control plane. */}}
{{- define "caracal.ourPodsPeer" -}}
- namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: {{ .Release.Namespace }}
  podSelector:
    matchLabels:
      app.kubernetes.io/name: {{ include "caracal.name" . }}
      app.kubernetes.io/instance: {{ .Release.Name }}
    matchExpressions:
      - key: app.kubernetes.io/component
        operator: In
        values: [gateway, control-plane, ledger]
{{- end }}

{{- define "caracal.serviceAccountName" -}}
{{- $sa := index .root.Values .values "serviceAccount" }}
{{- if $sa.create }}
{{- default (include "caracal.componentName" .) $sa.name }}
{{- else }}
{{- default "default" $sa.name }}
{{- end }}
{{- end }}

{{- define "caracal.image" -}}
{{- $tag := default .root.Chart.AppVersion .image.tag }}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository $tag }}
{{- end }}
{{- end }}

{{/* Whether a component serves TLS itself. */}}
{{- define "caracal.controlPlane.scheme" -}}
{{- if .Values.controlPlane.tls.existingSecret }}https{{ else }}http{{ end }}
{{- end }}

{{- define "caracal.gateway.scheme" -}}
{{- if .Values.gateway.tls.existingSecret }}https{{ else }}http{{ end }}
{{- end }}

{{/* STS_URL for the gateway: the value, or the in-cluster control plane Service. */}}
{{- define "caracal.gateway.stsUrl" -}}
{{- if .Values.gateway.stsUrl }}
{{- .Values.gateway.stsUrl }}
{{- else }}
{{- $svc := include "caracal.componentName" (dict "root" . "component" "control-plane") }}
{{- printf "%s://%s.%s.svc:%d" (include "caracal.controlPlane.scheme" .) $svc .Release.Namespace (int .Values.controlPlane.service.port) }}
{{- end }}
{{- end }}

{{/*
Production refuses plaintext hops (README, Configuration): say so at render time rather than let the
pods crash-loop with exit code 64.
*/}}
{{- define "caracal.validate" -}}
{{- if eq .Values.mode "production" }}
{{- if not .Values.issuerUrl }}
{{- fail "issuerUrl is required (ISSUER_URL, https in production)" }}
{{- end }}
{{- if not (hasPrefix "https://" .Values.issuerUrl) }}
{{- fail "issuerUrl must be https:// in production" }}
{{- end }}
{{- if and .Values.gateway.enabled (not .Values.gateway.tls.existingSecret) }}
{{- fail "gateway.tls.existingSecret is required in production (TLS_CERT_FILE/TLS_KEY_FILE)" }}
{{- end }}
{{- if and (not .Values.controlPlane.tls.existingSecret) (not .Values.controlPlane.tls.terminatedByProxy) }}
{{- fail "controlPlane.tls.existingSecret is required in production, unless controlPlane.tls.terminatedByProxy" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Secret files: every entry NAME: {key, secretName?} of `files` is mounted read-only at
<secrets.mountPath>/<NAME> from its Secret and passed as NAME_FILE (shared/src/config_env.rs).
Args: root, files (map). A null entry (values override `NAME: null`) is skipped.
*/}}
{{- define "caracal.secretEnv" -}}
{{- range $name, $ref := .files }}
{{- if $ref }}
- name: {{ $name }}_FILE
  value: {{ printf "%s/%s" $.root.Values.secrets.mountPath $name | quote }}
{{- end }}
{{- end }}
{{- end }}

{{- define "caracal.secretVolume" -}}
- name: secret-files
  projected:
    defaultMode: 0440
    sources:
{{- range $name, $ref := .files }}
{{- if $ref }}
      - secret:
          name: {{ default $.root.Values.secrets.existingSecret $ref.secretName | quote }}
          items:
            - key: {{ $ref.key | quote }}
              path: {{ $name }}
{{- end }}
{{- end }}
{{- end }}

{{/* The CA bundle (STS_CA_FILE, REDIS_CA_FILE, Postgres sslrootcert): a Secret key mounted as a file. */}}
{{- define "caracal.caFile" -}}
{{- printf "%s/%s" .Values.caBundle.mountPath .Values.caBundle.key }}
{{- end }}

{{- define "caracal.caVolume" -}}
{{- if .Values.caBundle.existingSecret }}
- name: ca-bundle
  secret:
    secretName: {{ .Values.caBundle.existingSecret | quote }}
    defaultMode: 0444
    items:
      - key: {{ .Values.caBundle.key | quote }}
        path: {{ .Values.caBundle.key }}
{{- end }}
{{- end }}

{{- define "caracal.caVolumeMount" -}}
{{- if .Values.caBundle.existingSecret }}
- name: ca-bundle
  mountPath: {{ .Values.caBundle.mountPath }}
  readOnly: true
{{- end }}
{{- end }}

{{- define "caracal.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext }}
{{- end }}

{{- define "caracal.containerSecurityContext" -}}
{{- toYaml .Values.containerSecurityContext }}
{{- end }}

{{/* A probe from values: {path, ...timings}; scheme follows the component's listener. */}}
{{- define "caracal.probe" -}}
httpGet:
  path: {{ .probe.path }}
  port: http
  scheme: {{ upper .scheme }}
{{- with omit .probe "path" "enabled" }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The audit chain key goes to whichever deployment runs the ledger. */}}
{{- define "caracal.chainKeyFiles" -}}
{{- $ref := .Values.audit.chainKey }}
{{- if $ref }}
{{- toYaml (dict "AUDIT_CHAIN_KEY" $ref) }}
{{- else }}
{{- toYaml dict }}
{{- end }}
{{- end }}

{{/*
Egress peers for an external dependency from {cidrs, podSelector, namespaceSelector}. Empty when
nothing is given: the rule then allows its ports to any destination.
*/}}
{{- define "caracal.dependencyPeers" -}}
{{- range .cidrs }}
- ipBlock:
    cidr: {{ . }}
{{- end }}
{{- if or .podSelector .namespaceSelector }}
{{- $peer := dict }}
{{- with .podSelector }}{{ $_ := set $peer "podSelector" . }}{{ end }}
{{- with .namespaceSelector }}{{ $_ := set $peer "namespaceSelector" . }}{{ end }}
{{- toYaml (list $peer) | nindent 0 }}
{{- end }}
{{- end }}

{{/* Egress to the cluster DNS and to Postgres: all the migrations Job needs. */}}
{{- define "caracal.databaseEgress" -}}
- to:
    - namespaceSelector:
        {{- toYaml .Values.networkPolicy.dns.namespaceSelector | nindent 8 }}
      podSelector:
        {{- toYaml .Values.networkPolicy.dns.podSelector | nindent 8 }}
  ports:
    - {port: 53, protocol: UDP}
    - {port: 53, protocol: TCP}
{{- $pg := include "caracal.dependencyPeers" .Values.postgres.egress | trim }}
- ports:
    - {port: {{ .Values.postgres.port }}, protocol: TCP}
  {{- if $pg }}
  to:
    {{- $pg | nindent 4 }}
  {{- end }}
{{- end }}

{{/* Egress rules every serving component of ours needs: DNS, Postgres, Redis. */}}
{{- define "caracal.commonEgress" -}}
{{- include "caracal.databaseEgress" . }}
{{- $redis := include "caracal.dependencyPeers" .Values.redis.egress | trim }}
- ports:
    {{- range .Values.redis.ports }}
    - {port: {{ . }}, protocol: TCP}
    {{- end }}
  {{- if $redis }}
  to:
    {{- $redis | nindent 4 }}
  {{- end }}
{{- end }}

{{/* Prometheus may scrape /metrics on a component's port. */}}
{{- define "caracal.prometheusPeer" -}}
- namespaceSelector:
    {{- toYaml .Values.networkPolicy.prometheus.namespaceSelector | nindent 4 }}
  podSelector:
    {{- toYaml .Values.networkPolicy.prometheus.podSelector | nindent 4 }}
{{- end }}

{{/* Admin API clients: configured CIDRs and namespaces. */}}
{{- define "caracal.adminPeers" -}}
{{- range .Values.networkPolicy.controlPlane.adminCidrs }}
- ipBlock:
    cidr: {{ . }}
{{- end }}
{{- range .Values.networkPolicy.controlPlane.adminNamespaceSelectors }}
- namespaceSelector:
    {{- toYaml . | nindent 4 }}
{{- end }}
{{- end }}

{{/*
The Secret key the migrations Job reads DATABASE_URL from, as YAML {key, secretName?}:
migrations.databaseUrl, else controlPlane.secretFiles.DATABASE_URL.
*/}}
{{- define "caracal.migrations.databaseUrl" -}}
{{- $ref := .Values.migrations.databaseUrl | default dict }}
{{- if not $ref.key }}
{{- $ref = index .Values.controlPlane.secretFiles "DATABASE_URL" | default dict }}
{{- end }}
{{- if not $ref.key }}
{{- fail "migrations.enabled needs a DATABASE_URL: set migrations.databaseUrl.key or controlPlane.secretFiles.DATABASE_URL" }}
{{- end }}
{{- toYaml (pick $ref "key" "secretName") }}
{{- end }}

{{/* Annotations of the objects the migrations Job needs, created before it (weight - 1). */}}
{{- define "caracal.migrations.hookAnnotations" -}}
helm.sh/hook: pre-install,pre-upgrade
helm.sh/hook-weight: {{ sub (int .Values.migrations.hookWeight) 1 | quote }}
helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
{{- end }}
