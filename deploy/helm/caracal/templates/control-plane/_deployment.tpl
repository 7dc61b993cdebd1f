{{/*
The control plane Deployment, shared by the serving control plane and the separate ledger (the
same binary; the ledger differs in AUDIT_LEDGER_ENABLED, the chain key and its own overrides).
Args: root, component, s (component values: replicas, resources, scheduling, pod metadata),
files (secret files NAME -> {key, secretName?, optional?}).
*/}}
{{- define "caracal.controlPlane.deployment" -}}
{{- $root := .root }}
{{- $c := $root.Values.controlPlane }}
{{- $s := .s }}
{{- $ctx := dict "root" $root "component" .component "values" "controlPlane" }}
{{- $scheme := include "caracal.controlPlane.scheme" $root }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "caracal.componentName" $ctx }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "caracal.labels" $ctx | nindent 4 }}
spec:
  replicas: {{ $s.replicas }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "caracal.selectorLabels" $ctx | nindent 6 }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxUnavailable: 0
      maxSurge: 1
  template:
    metadata:
      labels:
        {{- include "caracal.labels" $ctx | nindent 8 }}
        {{- with $s.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        checksum/config: {{ include (print $root.Template.BasePath "/control-plane/configmap.yaml") $root | sha256sum }}
        {{- with $s.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "caracal.serviceAccountName" (dict "root" $root "component" "control-plane" "values" "controlPlane") }}
      automountServiceAccountToken: false
      enableServiceLinks: false
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $s.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      securityContext:
        {{- include "caracal.podSecurityContext" $root | nindent 8 }}
      terminationGracePeriodSeconds: {{ $c.terminationGracePeriodSeconds }}
      containers:
        - name: control-plane
          image: {{ include "caracal.image" (dict "root" $root "image" $c.image) | quote }}
          imagePullPolicy: {{ $c.image.pullPolicy }}
          {{- with $c.command }}
          command:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with $c.args }}
          args:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          ports:
            - name: http
              containerPort: {{ $c.port }}
              protocol: TCP
          envFrom:
            - configMapRef:
                name: {{ include "caracal.componentName" $ctx }}
          env:
            {{- with include "caracal.secretEnv" (dict "root" $root "files" .files) | trim }}{{ . | nindent 12 }}{{ end }}
            {{- with $c.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          {{- with $c.startupProbe }}
          startupProbe:
            {{- include "caracal.probe" (dict "probe" . "scheme" $scheme) | nindent 12 }}
          {{- end }}
          {{- with $c.livenessProbe }}
          livenessProbe:
            {{- include "caracal.probe" (dict "probe" . "scheme" $scheme) | nindent 12 }}
          {{- end }}
          {{- with $c.readinessProbe }}
          readinessProbe:
            {{- include "caracal.probe" (dict "probe" . "scheme" $scheme) | nindent 12 }}
          {{- end }}
          resources:
            {{- toYaml $s.resources | nindent 12 }}
          securityContext:
            {{- include "caracal.containerSecurityContext" $root | nindent 12 }}
          volumeMounts:
            - name: secret-files
              mountPath: {{ $root.Values.secrets.mountPath }}
              readOnly: true
            {{- if $c.tls.existingSecret }}
            - name: tls
              mountPath: {{ $c.tls.mountPath }}
              readOnly: true
            {{- end }}
            {{- with include "caracal.caVolumeMount" $root | trim }}{{ . | nindent 12 }}{{ end }}
            - name: tmp
              mountPath: /tmp
            {{- with $c.extraVolumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
      volumes:
        {{- with include "caracal.secretVolume" (dict "root" $root "files" .files) | trim }}{{ . | nindent 8 }}{{ end }}
        {{- if $c.tls.existingSecret }}
        - name: tls
          secret:
            secretName: {{ $c.tls.existingSecret | quote }}
            defaultMode: 0440
            items:
              - key: {{ $c.tls.certKey | quote }}
                path: {{ $c.tls.certKey }}
              - key: {{ $c.tls.keyKey | quote }}
                path: {{ $c.tls.keyKey }}
        {{- end }}
        {{- with include "caracal.caVolume" $root | trim }}{{ . | nindent 8 }}{{ end }}
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
        {{- with $c.extraVolumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with $s.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $s.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $s.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $s.topologySpreadConstraints }}
      topologySpreadConstraints:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}
