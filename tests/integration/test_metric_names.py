"""Every metric the alert rules and the dashboard query is one that June or Triton
actually exports (a renamed metric would leave a silent panel and an alert that never
fires)."""

from __future__ import annotations

import json
import re

import httpx
import yaml

from orchestrator.config import REPO_ROOT

MONITORING = REPO_ROOT / "orchestrator" / "monitoring"
NAME = re.compile(r"\b((?:june|nv)_[a-z_]+)\b")


def referenced() -> set[str]:
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    panels = json.loads((MONITORING / "grafana/dashboards/june.json").read_text())["panels"]
    exprs += [t["expr"] for p in panels for t in p["targets"]]
    return {m for e in exprs for m in NAME.findall(e)}


def exported(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
            if kind == "counter":
                names.add(f"{name}_total" if not name.endswith("_total") else name)
        elif line and not line.startswith("#"):
            names.add(line.split("{")[0].split()[0])
    return names


def test_every_metric_queried_is_exported(client, triton):
    assert client.get("/health").status_code == 200
    june = exported(client.get("/metrics").text)
    served = exported(httpx.get(f"http://{triton.host}:{triton.metrics_port}/metrics").text)
    wanted = referenced()
    assert {"june_stage_seconds_bucket", "nv_inference_request_success"} <= wanted  # it parses
    missing = sorted(wanted - june - served)
    assert not missing, missing
