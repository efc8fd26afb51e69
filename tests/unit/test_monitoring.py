"""The compose deployment's Prometheus config, alert rules and Grafana dashboard, checked
offline: promtool (Debian's prometheus package) and a JSON schema."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from orchestrator.config import REPO_ROOT

MONITORING = REPO_ROOT / "orchestrator" / "monitoring"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "june.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool missing: apt-get install prometheus (make test does)"
)

# What Grafana needs of a provisioned dashboard, and what June's panels must have.
SCHEMA = {
    "type": "object",
    "required": ["uid", "title", "schemaVersion", "panels"],
    "properties": {
        "uid": {"type": "string", "pattern": "^[a-z0-9-]{1,40}$"},
        "title": {"type": "string", "minLength": 1},
        "schemaVersion": {"type": "integer", "minimum": 30},
        "panels": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["id", "type", "title", "gridPos", "targets", "datasource"],
                "properties": {
                    "id": {"type": "integer"},
                    "type": {"enum": ["timeseries", "stat", "gauge", "table", "bargauge"]},
                    "datasource": {
                        "type": "object",
                        "properties": {
                            "type": {"const": "prometheus"},
                            "uid": {"const": "prometheus"},
                        },
                        "required": ["type", "uid"],
                    },
                    "gridPos": {
                        "type": "object",
                        "required": ["h", "w", "x", "y"],
                        "properties": {
                            "w": {"type": "integer", "minimum": 1, "maximum": 24},
                            "x": {"type": "integer", "minimum": 0, "maximum": 23},
                        },
                    },
                    "targets": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["refId", "expr"],
                            "properties": {"expr": {"type": "string", "minLength": 1}},
                        },
                    },
                },
            },
        },
    },
}


def promtool(*args: str, cwd: Path = MONITORING) -> subprocess.CompletedProcess:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p["targets"]]


@needs_promtool
def test_the_prometheus_config_and_its_rules_are_valid(tmp_path):
    # as compose mounts it: the config, its rules, and the operator's key for /metrics
    for name in ("prometheus.yml", "alerts.yml"):
        shutil.copy(MONITORING / name, tmp_path / name)
    (tmp_path / "june-metrics.key").write_text("june_example-key\n")
    proc = promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "8 rules found" in proc.stdout + proc.stderr


@needs_promtool
def test_each_alert_fires_when_it_should_and_not_before():
    proc = promtool("test", "rules", "alerts_test.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_promtool
def test_a_broken_rule_is_caught(tmp_path):
    """The check above can fail: a rule with bad PromQL is refused."""
    bad = {"groups": [{"name": "x", "rules": [{"alert": "X", "expr": "sum(rate(june_x[5m]"}]}]}
    (tmp_path / "bad.yml").write_text(yaml.safe_dump(bad))
    proc = promtool("check", "rules", "bad.yml", cwd=tmp_path)
    assert proc.returncode != 0


def test_the_dashboard_has_the_shape_grafana_provisions():
    import jsonschema

    dashboard = json.loads(DASHBOARD.read_text())
    jsonschema.validate(dashboard, SCHEMA)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    provider = yaml.safe_load((MONITORING / "grafana/provisioning/dashboards/june.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    source = yaml.safe_load(
        (MONITORING / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    assert source["datasources"][0]["uid"] == "prometheus"  # what every panel names


@needs_promtool
def test_every_dashboard_query_is_valid_promql(tmp_path):
    """promtool has no expression checker; each query becomes a recording rule it checks."""
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"june:panel_{i}", "expr": e}
                    for i, e in enumerate(dashboard_exprs())
                ],
            }
        ]
    }
    (tmp_path / "panels.yml").write_text(yaml.safe_dump(rules))
    proc = promtool("check", "rules", "panels.yml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_compose_mounts_what_is_checked_here():
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    mounts = " ".join(services["prometheus"]["volumes"] + services["grafana"]["volumes"])
    for path in ("prometheus.yml", "alerts.yml", "grafana/provisioning", "grafana/dashboards"):
        assert f"./orchestrator/monitoring/{path}" in mounts
    for name in ("prometheus", "grafana"):
        assert all(p.startswith("127.0.0.1:") for p in services[name]["ports"])
