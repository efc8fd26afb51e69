"""docker-compose.yml cannot run here (no Docker engine); check what can be checked offline."""

from pathlib import Path

import yaml

COMPOSE = yaml.safe_load((Path(__file__).parents[2] / "docker-compose.yml").read_text())


def test_services_and_images():
    services = COMPOSE["services"]
    assert services["postgres"]["image"].startswith("pgvector/pgvector:")
    assert "june api" in services["orchestrator"]["command"]
    assert "--profile gpu" in services["repo-build"]["command"]


def test_triton_is_the_ngc_trtllm_image_with_the_onnxruntime_backend_added():
    services = COMPOSE["services"]
    dockerfile = services["triton"]["build"]["dockerfile_inline"]
    assert "FROM nvcr.io/nvidia/tritonserver:$${RELEASE}-trtllm-python-py3" in dockerfile
    # the same release's onnxruntime backend (embedder, FastPitch/HiFi-GAN graphs)
    assert "FROM nvcr.io/nvidia/tritonserver:$${RELEASE}-py3 AS ort" in dockerfile
    assert "/opt/tritonserver/backends/onnxruntime" in dockerfile
    # the engines are built in that image, on the GPU, and handed to the repository build
    engines = services["engines"]
    assert engines["image"] == services["triton"]["image"]
    assert "--target gpu" in engines["command"]
    assert "gpu" in str(engines["deploy"])
    env = services["repo-build"]["environment"]
    assert env == {"JUNE_ASR_ENGINE_DIR": "/engines/whisper", "JUNE_LLM_ENGINE_DIR": "/engines/llm"}


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


def test_repo_build_installs_the_weight_packages_the_repository_needs():
    """The gpu repository serves ``vad`` from the silero-vad wheel, installed (without its
    torch dependencies) at the Makefile's pin."""
    import re

    makefile = (Path(__file__).parents[2] / "Makefile").read_text()
    pin = re.search(r"silero-vad==[\d.]+", makefile)
    assert pin is not None
    command = COMPOSE["services"]["repo-build"]["command"]
    assert f"--no-deps {pin.group(0)}" in command
