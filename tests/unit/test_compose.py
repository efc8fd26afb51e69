"""docker-compose.yml cannot run here (no Docker engine); check what can be checked offline."""

from pathlib import Path

import yaml

COMPOSE = yaml.safe_load((Path(__file__).parents[2] / "docker-compose.yml").read_text())


def test_services_and_images():
    services = COMPOSE["services"]
    assert services["triton"]["image"].startswith("nvcr.io/nvidia/tritonserver:")
    assert services["postgres"]["image"].startswith("pgvector/pgvector:")
    assert "june api" in services["orchestrator"]["command"]
    assert "--profile gpu" in services["repo-build"]["command"]


def test_every_published_port_is_loopback():
    for name, service in COMPOSE["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} publicly"


def test_long_running_services_have_healthchecks_and_wait_for_them():
    services = COMPOSE["services"]
    for name in ("postgres", "triton", "orchestrator"):
        assert "healthcheck" in services[name], name
    depends = services["orchestrator"]["depends_on"]
    assert {k: v["condition"] for k, v in depends.items()} == {
        "postgres": "service_healthy",
        "triton": "service_healthy",
    }


def test_secrets_have_no_defaults():
    pg = COMPOSE["services"]["postgres"]["environment"]
    assert pg["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
