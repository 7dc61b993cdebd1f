#!/usr/bin/env python3
"""Checks that the dashboard and the rules only name metrics that exist.

promtool tests the rules against the series its tests invent, so a misspelt metric passes there; this
check compares every name with the ones the Rust sources register (literal "caracal_..." names, the
gateway's prefixed counter/gauge/histogram helpers, its per-denial counters and the STS consumers'
per-kind families) and the recording rules. It also checks the dashboard's shape: schemaVersion >= 36,
the DS_PROMETHEUS input on every panel and target, unique panel ids.

With a fourth argument it also writes every dashboard query, Grafana variables replaced, as a
recording rule to that file, so that promtool can check its PromQL.

usage: check_names.py REPO_ROOT RULES_FILE DASHBOARD_JSON [DASHBOARD_QUERIES_AS_RULES]
"""

import json
import pathlib
import re
import sys

import yaml  # python3-yaml (Debian) / PyYAML

BUILTIN = {"up", "ALERTS", "ALERTS_FOR_STATE"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def source_names(repo: pathlib.Path) -> set[str]:
    names: set[str] = set()
    crates = ["gateway/src", "control-plane/src", "audit/src", "sts/src", "shared/src"]
    for crate in crates:
        for f in (repo / crate).rglob("*.rs"):
            names.update(re.findall(r'"(caracal_[a-z0-9_]+)"', f.read_text()))
    # gateway/src/metrics.rs: counter("x") / gauge("x") / histogram("x") register caracal_gateway_x.
    gw = (repo / "gateway/src/metrics.rs").read_text()
    names.update("caracal_gateway_" + n for n in re.findall(r'\b(?:counter|gauge|histogram)\(\s*"([a-z0-9_]+)"', gw))
    # ... and one caracal_gateway_denials_<label>_total per Denial::METRIC_LABELS entry.
    deny = (repo / "gateway/src/deny.rs").read_text()
    labels = re.search(r"METRIC_LABELS: &'static \[&'static str\] = &\[(.*?)\];", deny, re.S)
    if not labels:
        sys.exit("check_names: Denial::METRIC_LABELS not found in gateway/src/deny.rs")
    names.update(f"caracal_gateway_denials_{l}_total" for l in re.findall(r'"([a-z0-9_]+)"', labels.group(1)))
    # control-plane/src/consumers.rs: caracal_sts_<kind>_<name> for every consumer kind.
    cons = (repo / "control-plane/src/consumers.rs").read_text()
    kinds = re.findall(r'metrics\(registry, "([a-z_]+)"\)', cons)
    parts = re.findall(r'\bcounter\("([a-z_]+)"', cons) + re.findall(r'"caracal_sts_\{kind\}_([a-z_]+)"', cons)
    if not kinds or not parts:
        sys.exit("check_names: STS consumer metric families not found in control-plane/src/consumers.rs")
    names.update(f"caracal_sts_{k}_{p}" for k in kinds for p in parts)
    return names


def referenced(expr: str) -> set[str]:
    """Metric names in a PromQL expression: label matchers, strings and Grafana variables removed."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\$\{?\w+\}?", "", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    tokens = re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", expr)
    return {t for t in tokens if t.startswith("caracal") or ":" in t or t in BUILTIN}


def known(name: str, names: set[str]) -> bool:
    if name in names:
        return True
    return any(name.endswith(s) and name[: -len(s)] in names for s in HISTOGRAM_SUFFIXES)


def main() -> int:
    repo, rules_path, dash_path = map(pathlib.Path, sys.argv[1:4])
    names = source_names(repo) | BUILTIN
    rules = yaml.safe_load(rules_path.read_text())
    records = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    problems: list[str] = []

    for g in rules["groups"]:
        for r in g["rules"]:
            for n in sorted(referenced(r["expr"]) - records):
                if not known(n, names):
                    problems.append(f"rule {r.get('alert') or r.get('record')}: unknown metric {n}")

    dash = json.loads(dash_path.read_text())
    if dash.get("schemaVersion", 0) < 36:
        problems.append(f"dashboard schemaVersion {dash.get('schemaVersion')} < 36")
    if not any(i.get("name") == "DS_PROMETHEUS" and i.get("type") == "datasource" for i in dash.get("__inputs", [])):
        problems.append("dashboard: no DS_PROMETHEUS datasource input")
    ids, exprs, as_rules = set(), 0, []
    for p in dash["panels"]:
        if p["id"] in ids:
            problems.append(f"panel id {p['id']} used twice")
        ids.add(p["id"])
        if p["type"] == "row":
            continue
        if p.get("datasource", {}).get("uid") != "${DS_PROMETHEUS}":
            problems.append(f"panel {p['title']!r}: datasource is not ${{DS_PROMETHEUS}}")
        if not p.get("targets"):
            problems.append(f"panel {p['title']!r}: no query")
        for t in p.get("targets", []):
            exprs += 1
            if t.get("datasource", {}).get("uid") != "${DS_PROMETHEUS}":
                problems.append(f"panel {p['title']!r} {t['refId']}: datasource is not ${{DS_PROMETHEUS}}")
            grafana_vars = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
            concrete = re.sub(r"\$\w+", lambda m: grafana_vars.get(m.group(0), ".*"), t["expr"])
            as_rules.append({"record": f"dashboard:panel{p['id']}:{t['refId']}", "expr": concrete})
            used = referenced(t["expr"])
            if not used:
                problems.append(f"panel {p['title']!r} {t['refId']}: names no metric")
            for n in sorted(used):
                if not known(n, names | records):
                    problems.append(f"panel {p['title']!r} {t['refId']}: unknown metric {n}")

    if len(sys.argv) > 4:
        pathlib.Path(sys.argv[4]).write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": as_rules}]}))
    for problem in problems:
        print("FAIL:", problem, file=sys.stderr)
    if problems:
        return 1
    print(f"ok   {len(names)} metric names from the sources, {len(records)} recording rules; "
          f"{exprs} dashboard queries in {len(ids)} panels all name known metrics")
    return 0


if __name__ == "__main__":
    sys.exit(main())
