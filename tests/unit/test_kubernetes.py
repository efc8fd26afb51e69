"""The Kubernetes manifests, validated offline: every object against the Kubernetes API
schema (kubernetes-validate, strict: unknown fields are errors), and what they ask of June
(settings, commands) checked against June itself."""

from __future__ import annotations

import pytest
import yaml

from orchestrator.config import REPO_ROOT, Settings

K8S = REPO_ROOT / "orchestrator" / "deploy" / "kubernetes"
KUBERNETES = "1.30.0"


def kustomization() -> dict:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def objects() -> list[dict]:
    docs = []
    for name in kustomization()["resources"]:
        docs += [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    return docs


def containers(obj: dict) -> list[dict]:
    spec = obj.get("spec", {})
    if obj["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    pod = spec.get("template", {}).get("spec", {})
    return pod.get("initContainers", []) + pod.get("containers", [])


def by_kind(kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects() if o["kind"] == kind}


@pytest.mark.parametrize("obj", objects(), ids=lambda o: f"{o['kind']}/{o['metadata']['name']}")
def test_each_object_is_valid_kubernetes(obj):
    import kubernetes_validate

    kubernetes_validate.validate(obj, KUBERNETES, strict=True)  # raises on any error


def test_a_wrong_field_is_caught():
    """The check above can fail: a misspelt field is refused."""
    import kubernetes_validate
    from kubernetes_validate.utils import ValidationError

    bad = by_kind("Deployment")["orchestrator"]
    bad = {**bad, "spec": {**bad["spec"], "replica": 2}}
    with pytest.raises(ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES, strict=True)


def test_every_file_is_in_the_kustomization():
    listed = set(kustomization()["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert listed == present


def test_the_shape_scale_out_needs():
    deployments = by_kind("Deployment")
    triton = deployments["triton"]["spec"]["template"]["spec"]["containers"][0]
    assert triton["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == "1"
    for bot in ("telegram-bot", "discord-bot"):  # each runs once, the old one stopped first
        assert deployments[bot]["spec"]["replicas"] == 1
        assert deployments[bot]["spec"]["strategy"]["type"] == "Recreate"
    orchestrator = deployments["orchestrator"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in orchestrator["env"]}
    assert env["JUNE_RATE_LIMIT_STORE"] == "database"  # limits hold across replicas
    hpas = by_kind("HorizontalPodAutoscaler")
    assert hpas["triton"]["spec"]["scaleTargetRef"]["name"] == "triton"
    pdbs = by_kind("PodDisruptionBudget")
    assert set(pdbs) == {"triton", "orchestrator"}
    assert "june-db-backup" in by_kind("CronJob")


def test_every_setting_and_command_they_use_exists():
    fields = set(Settings.model_fields)
    aliases = {"DATABASE_URL", "TELEGRAM_BOT_TOKEN", "DISCORD_BOT_TOKEN"}
    from typer.main import get_command

    from orchestrator.cli import app

    cli = get_command(app)
    for obj in objects():
        for container in containers(obj):
            for env in container.get("env", []):
                name = env["name"]
                assert name in aliases or (
                    name.startswith("JUNE_") and name.removeprefix("JUNE_").lower() in fields
                ), name
            command = container.get("command") or container.get("args") or []
            if command[:1] == ["june"]:
                group = cli
                for word in command[1:]:
                    if word.startswith("-") or not hasattr(group, "commands"):
                        break
                    assert word in group.commands, command
                    group = group.commands[word]
