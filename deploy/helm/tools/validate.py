#!/usr/bin/env python3
"""Validates manifests rendered from deploy/helm/caracal.

1. YAML well-formedness, with duplicate keys refused (PyYAML would keep the last one silently;
   the API server and kubectl apply disagree on what such an object means).
2. Each object against the Kubernetes OpenAPI schemas bundled by kubernetes-validate (offline),
   strict: unknown fields are errors. A kind without a schema is an error too, except
   ServiceMonitor, which goes to the prometheus-operator CRD validators (node, see
   validate-servicemonitors.mjs).
3. The chart's own promises: hardened pods, probes on /health and /ready, every NAME_FILE under a
   mounted volume, the audit chain key exactly where the ledger runs, the gateway's audit spool on
   an emptyDir and a grace period above its drain, selectors that select something, references
   that resolve. The migrations Job: hardened the same way, a pre-install/pre-upgrade hook running
   `migrate` with DATABASE_URL as its only secret file, depending on no object the release creates
   (a pre-install hook runs before them) and fenced by hook NetworkPolicies created before it.

Usage: validate.py --k8s-version 1.30.0 [--node-validator FILE] rendered.yaml...
Exit status 0 when every file passes; problems are printed one per line.
"""

import argparse
import json
import subprocess
import sys

import yaml
import kubernetes_validate.utils as kv


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping with the same key twice."""


def _mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)

OUR_COMPONENTS = {"gateway", "control-plane", "ledger"}


def name_of(obj):
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def selects(selector, labels):
    """Whether a LabelSelector (matchLabels + matchExpressions) selects `labels`."""
    if selector is None:
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def check_pod(problems, dep, configmaps):
    """Hardening, probes, secret files and (gateway) spool and grace period of one Deployment or Job."""
    where = name_of(dep)
    pod = dep["spec"]["template"]["spec"]
    serving = dep["kind"] == "Deployment"
    psc = pod.get("securityContext") or {}
    if psc.get("runAsNonRoot") is not True:
        problems.append(f"{where}: pod securityContext.runAsNonRoot is not true")
    if pod.get("automountServiceAccountToken") is not False:
        problems.append(f"{where}: automountServiceAccountToken is not false")
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    for c in pod["containers"]:
        cw = f"{where} container {c['name']}"
        sc = c.get("securityContext") or {}
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{cw}: readOnlyRootFilesystem is not true")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{cw}: allowPrivilegeEscalation is not false")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            problems.append(f"{cw}: capabilities.drop lacks ALL")
        seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp != "RuntimeDefault":
            problems.append(f"{cw}: seccompProfile is {seccomp!r}, not RuntimeDefault")
        for probe, path in (("livenessProbe", "/health"), ("readinessProbe", "/ready")) if serving else ():
            got = ((c.get(probe) or {}).get("httpGet") or {}).get("path")
            if got != path:
                problems.append(f"{cw}: {probe} path is {got!r}, expected {path}")
        mounts = {m["mountPath"].rstrip("/"): m for m in c.get("volumeMounts") or []}
        for m in mounts.values():
            if m["name"] not in volumes:
                problems.append(f"{cw}: volumeMount {m['name']} has no volume")
        # Every NAME_FILE must be a file some mounted volume provides.
        env = {}
        for ref in c.get("envFrom") or []:
            cm = (ref.get("configMapRef") or {}).get("name")
            if cm is not None:
                if cm not in configmaps:
                    problems.append(f"{cw}: envFrom ConfigMap {cm} is not rendered")
                else:
                    env.update(configmaps[cm].get("data") or {})
        for e in c.get("env") or []:
            if "value" in e:
                env[e["name"]] = e["value"]
        for var, path in env.items():
            if not (var.endswith("_FILE") or var in ("TLS_CERT_FILE", "TLS_KEY_FILE")):
                continue
            directory, _, filename = path.rpartition("/")
            mount = mounts.get(directory)
            if mount is None:
                problems.append(f"{cw}: {var}={path} is not in a mounted directory")
                continue
            vol = volumes.get(mount["name"], {})
            items = []
            if "secret" in vol:
                items = [i["path"] for i in vol["secret"].get("items") or []]
            for src in (vol.get("projected") or {}).get("sources") or []:
                items += [i["path"] for i in (src.get("secret") or {}).get("items") or []]
            if filename not in items:
                problems.append(f"{cw}: {var}={path}: volume {mount['name']} provides no {filename}")
        component = dep["metadata"]["labels"].get("app.kubernetes.io/component")
        if component in ("control-plane", "ledger"):
            # The chain key is held where the ledger runs, and only there (docs/audit.md).
            ledger = env.get("AUDIT_LEDGER_ENABLED", "true") == "true"
            if ledger != ("AUDIT_CHAIN_KEY_FILE" in env):
                problems.append(f"{cw}: AUDIT_LEDGER_ENABLED={str(ledger).lower()} but AUDIT_CHAIN_KEY_FILE is "
                                f"{'absent' if ledger else 'present'}")
        if component == "gateway":
            spool = env.get("AUDIT_REPLAY_DIR", "/var/lib/caracal/audit-replay").rstrip("/")
            m = mounts.get(spool)
            if m is None or "emptyDir" not in volumes.get(m["name"], {}):
                problems.append(f"{cw}: AUDIT_REPLAY_DIR {spool} is not an emptyDir mount")
            grace = int(env.get("SHUTDOWN_GRACE_SECONDS", "30"))
            sleep = (((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}).get("seconds", 0)
            drain = sleep + grace + 5  # Pingora's graceful_shutdown_timeout_seconds (gateway/src/app.rs)
            tgps = pod.get("terminationGracePeriodSeconds", 30)
            if tgps <= drain:
                problems.append(f"{where}: terminationGracePeriodSeconds {tgps} <= drain {drain}")


HOOK_EVENTS = {"pre-install", "pre-upgrade"}
# Secrets a migrations Job must never hold: it needs DATABASE_URL only (MigrateConfig).
SERVING_ONLY_SECRETS = ("ZONE_KEK", "GATEWAY_STS_HMAC_KEY", "STREAMS_HMAC_KEY", "AUDIT_HMAC_KEY", "AUDIT_CHAIN_KEY",
                        "REDIS_URL", "METRICS_BEARER", "BOOTSTRAP_ADMIN_TOKEN")


def hook_of(obj):
    """(events, weight, delete policies) of a Helm hook, or None for an ordinary release object."""
    ann = obj["metadata"].get("annotations") or {}
    if "helm.sh/hook" not in ann:
        return None
    events = {e.strip() for e in ann["helm.sh/hook"].split(",")}
    policies = {p.strip() for p in ann.get("helm.sh/hook-delete-policy", "").split(",") if p.strip()}
    return events, int(ann.get("helm.sh/hook-weight", "0")), policies


def check_migrations_job(problems, job, objs):
    """The migrations Job: a hook running `migrate` with only DATABASE_URL, fenced by earlier hooks."""
    where = name_of(job)
    hook = hook_of(job)
    if hook is None or not HOOK_EVENTS <= hook[0]:
        problems.append(f"{where}: not a pre-install,pre-upgrade hook")
        return
    events, weight, policies = hook
    if not {"before-hook-creation", "hook-succeeded"} <= policies:
        problems.append(f"{where}: hook-delete-policy {sorted(policies)} lacks before-hook-creation,hook-succeeded")
    spec = job["spec"]
    for field in ("backoffLimit", "activeDeadlineSeconds", "ttlSecondsAfterFinished"):
        if field not in spec:
            problems.append(f"{where}: spec.{field} is not set")
    pod = spec["template"]["spec"]
    if pod.get("restartPolicy") != "Never":
        problems.append(f"{where}: restartPolicy is {pod.get('restartPolicy')!r}, not Never (each try keeps its logs)")
    if len(pod["containers"]) != 1 or pod["containers"][0].get("args") != ["migrate"]:
        problems.append(f"{where}: expected one container with args [\"migrate\"]")
    # Only DATABASE_URL: no other NAME_FILE, no secret in env or envFrom, no other secret file mounted.
    for c in pod["containers"] + pod.get("initContainers", []):
        files = {e["name"] for e in c.get("env") or [] if e["name"].endswith("_FILE")}
        if files != {"DATABASE_URL_FILE"}:
            problems.append(f"{where} container {c['name']}: secret files {sorted(files)}, expected only DATABASE_URL_FILE")
        for e in c.get("env") or []:
            if "secretKeyRef" in (e.get("valueFrom") or {}) or e["name"].removesuffix("_FILE") in SERVING_ONLY_SECRETS:
                problems.append(f"{where} container {c['name']}: env {e['name']} carries a secret the Job must not hold")
        if c.get("envFrom"):
            problems.append(f"{where} container {c['name']}: envFrom (a ConfigMap that does not exist at "
                            f"pre-install, or a whole Secret)")
    for v in pod.get("volumes") or []:
        paths = [i["path"] for src in (v.get("projected") or {}).get("sources") or []
                 for i in (src.get("secret") or {}).get("items") or []]
        if "secret" in v and v["name"] != "ca-bundle":
            paths += [i["path"] for i in v["secret"].get("items") or []] or ["<every key>"]
        if any(p != "DATABASE_URL" for p in paths):
            problems.append(f"{where}: volume {v['name']} mounts {paths}; only DATABASE_URL (and the CA bundle) allowed")
    # A pre-install hook runs before the release's own objects exist.
    ordinary = {(o["kind"], o["metadata"]["name"]) for o in objs if hook_of(o) is None}
    refs = [("ServiceAccount", pod.get("serviceAccountName"))]
    refs += [("ConfigMap", (v.get("configMap") or {}).get("name")) for v in pod.get("volumes") or []]
    for kind, name in refs:
        if name and (kind, name) in ordinary:
            problems.append(f"{where}: uses {kind}/{name}, which the release creates after its pre-install hooks")
    check_migrations_network(problems, job, weight, objs)


def check_migrations_network(problems, job, weight, objs):
    """With NetworkPolicies on, the Job's pod is fenced (and let through) by hooks created before it."""
    where = name_of(job)
    labels = job["spec"]["template"]["metadata"]["labels"]
    ns = job["metadata"].get("namespace")
    policies = [o for o in objs if o["kind"] == "NetworkPolicy"]
    mine = [p for p in policies if p["metadata"].get("namespace") == ns and selects(p["spec"]["podSelector"], labels)]
    if any(p["metadata"]["labels"].get("app.kubernetes.io/component") in OUR_COMPONENTS for p in policies):
        types = set()
        for p in mine:
            hook = hook_of(p)
            if hook is None or not HOOK_EVENTS <= hook[0] or hook[1] >= weight:
                problems.append(f"{where}: {name_of(p)} selects it but is not a pre-install,pre-upgrade hook "
                                f"weighted below the Job")
            types |= set(p["spec"].get("policyTypes") or [])
        if types != {"Ingress", "Egress"}:
            problems.append(f"{where}: NetworkPolicies cover {sorted(types)}, not Ingress and Egress")
        ports = {(port.get("port"), port.get("protocol", "TCP"))
                 for p in mine for rule in p["spec"].get("egress") or [] for port in rule.get("ports") or []}
        if (53, "UDP") not in ports or not any(proto == "TCP" and n != 53 for n, proto in ports):
            problems.append(f"{where}: egress allows {sorted(ports, key=str)}, not DNS and Postgres")
    # A fence around Postgres admits our serving pods; at pre-install it does not exist yet, so a hook
    # beside it must admit the Job.
    for fence in (p for p in policies if hook_of(p) is None
                  and p["metadata"]["labels"].get("app.kubernetes.io/component") == "postgres"):
        admitted = any(
            hook_of(h) is not None and hook_of(h)[1] < weight
            and h["metadata"].get("namespace") == fence["metadata"].get("namespace")
            and h["spec"]["podSelector"] == fence["spec"]["podSelector"]
            and any(selects(peer.get("podSelector"), labels) for rule in h["spec"].get("ingress") or []
                    for peer in rule.get("from") or [])
            for h in policies)
        if not admitted:
            problems.append(f"{where}: no hook NetworkPolicy beside {name_of(fence)} admits its pod")


def check_references(problems, objs):
    deployments = [o for o in objs if o["kind"] == "Deployment"]
    pod_labels = {o["metadata"]["name"]: o["spec"]["template"]["metadata"]["labels"] for o in deployments}
    services = [o for o in objs if o["kind"] == "Service"]
    seen = set()
    for o in objs:
        key = (o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"])
        if key in seen:
            problems.append(f"{name_of(o)}: rendered twice")
        seen.add(key)
    for d in deployments:
        if not selects(d["spec"]["selector"], pod_labels[d["metadata"]["name"]]):
            problems.append(f"{name_of(d)}: selector does not select its own pod template")
    job_labels = {o["metadata"]["name"]: o["spec"]["template"]["metadata"]["labels"] for o in objs if o["kind"] == "Job"}
    for s in services:
        sel = s["spec"].get("selector") or {}
        for job, labels in job_labels.items():
            if selects({"matchLabels": sel}, labels):
                problems.append(f"{name_of(s)}: selector matches the pods of Job/{job}")
        if not any(selects({"matchLabels": sel}, labels) for labels in pod_labels.values()):
            problems.append(f"{name_of(s)}: selector matches no Deployment's pods")
    for p in (o for o in objs if o["kind"] == "PodDisruptionBudget"):
        if not any(selects(p["spec"]["selector"], labels) for labels in pod_labels.values()):
            problems.append(f"{name_of(p)}: selector matches no Deployment's pods")
    for h in (o for o in objs if o["kind"] == "HorizontalPodAutoscaler"):
        target = h["spec"]["scaleTargetRef"]["name"]
        dep = next((d for d in deployments if d["metadata"]["name"] == target), None)
        if dep is None:
            problems.append(f"{name_of(h)}: scaleTargetRef {target} is not rendered")
        elif "replicas" in dep["spec"]:
            problems.append(f"{name_of(dep)}: sets replicas while {name_of(h)} scales it")
    policies = [o for o in objs if o["kind"] == "NetworkPolicy"]
    if policies:
        for d in deployments:
            labels = pod_labels[d["metadata"]["name"]]
            types = set()
            for p in policies:
                if p["metadata"].get("namespace") == d["metadata"].get("namespace") and selects(p["spec"]["podSelector"], labels):
                    types |= set(p["spec"].get("policyTypes") or [])
            if types != {"Ingress", "Egress"}:
                problems.append(f"{name_of(d)}: NetworkPolicies cover {sorted(types)}, not Ingress and Egress")
    for sm in (o for o in objs if o["kind"] == "ServiceMonitor"):
        matched = [s for s in services if selects(sm["spec"]["selector"], s["metadata"].get("labels") or {})]
        if not matched:
            problems.append(f"{name_of(sm)}: selects no rendered Service")
        for ep in sm["spec"]["endpoints"]:
            for s in matched:
                if ep.get("port") not in {p.get("name") for p in s["spec"]["ports"]}:
                    problems.append(f"{name_of(sm)}: Service {s['metadata']['name']} has no port {ep.get('port')!r}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--k8s-version", default="1.30.0")
    ap.add_argument("--node-validator", help="validate-servicemonitors.mjs, run with node")
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    failed = False
    for path in args.files:
        problems = []
        try:
            with open(path) as f:
                objs = [o for o in yaml.load_all(f, Loader=UniqueKeyLoader) if o is not None]
        except yaml.YAMLError as e:
            print(f"FAIL {path}: not well-formed YAML: {e}")
            failed = True
            continue
        crds = []
        kinds = {}
        for o in objs:
            if not isinstance(o, dict) or "kind" not in o or "apiVersion" not in o:
                problems.append(f"a document is not a Kubernetes object: {str(o)[:80]}")
                continue
            kinds[f"{o['apiVersion']} {o['kind']}"] = kinds.get(f"{o['apiVersion']} {o['kind']}", 0) + 1
            if o["kind"] == "ServiceMonitor":
                crds.append(o)
                continue
            try:
                kv.validate(o, args.k8s_version, strict=True)
            except kv.ValidationError as e:
                where = ".".join(str(p) for p in e.path)
                problems.append(f"{name_of(o)}: schema {e.version}: {where}: {e.message}")
            except (kv.SchemaNotFoundError, kv.InvalidSchemaError) as e:
                problems.append(f"{name_of(o)}: {e.message}")
        if crds:
            if not args.node_validator:
                problems.append("ServiceMonitor objects rendered but no --node-validator given")
            else:
                run = subprocess.run(["node", args.node_validator], input=json.dumps(crds), capture_output=True, text=True)
                if run.returncode != 0:
                    problems.append(f"ServiceMonitor CRD validation failed: {run.stdout.strip()} {run.stderr.strip()}")
        configmaps = {o["metadata"]["name"]: o for o in objs if o.get("kind") == "ConfigMap"}
        if not problems:
            for d in (o for o in objs if o["kind"] in ("Deployment", "Job")):
                check_pod(problems, d, configmaps)
            for j in (o for o in objs if o["kind"] == "Job"):
                check_migrations_job(problems, j, objs)
            check_references(problems, objs)
        summary = ", ".join(f"{n}×{k}" for k, n in sorted(kinds.items()))
        if problems:
            failed = True
            print(f"FAIL {path}: {len(objs)} objects ({summary})")
            for p in problems:
                print(f"  - {p}")
        else:
            print(f"ok   {path}: {len(objs)} objects valid against Kubernetes {args.k8s_version} ({summary})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
