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
    # the engines are built on that image, on the GPU, and handed to the repository build
    engines = services["engines"]
    assert "-trtllm-python-py3" in engines["build"]["dockerfile_inline"]
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
    dockerfile = COMPOSE["services"]["repo-build"]["build"]["dockerfile_inline"]
    assert f"--no-deps {pin.group(0)}" in dockerfile


def test_images_are_built_once_and_nothing_installs_at_container_start():
    for name, service in COMPOSE["services"].items():
        command = str(service.get("command", ""))
        assert "pip install" not in command, f"{name} installs packages when it starts"
        assert "venv" not in command, name
        if service.get("image", "").startswith("june"):
            assert "build" in service, f"{name} runs {service['image']}, which nothing builds"
    dockerignore = (Path(__file__).parents[2] / ".dockerignore").read_text().split()
    assert {".venv", ".git", "build"} <= set(dockerignore)


def test_engines_build_from_listed_models_only():
    """The weights join the model store under listed names before any engine is built, so
    the gpu path honours the authorised list as `june serve` does."""
    from exporters.models import load_list

    services = COMPOSE["services"]
    command = services["engines"]["command"]
    assert "--allow-unlisted" not in command
    env = services["engines"]["environment"]
    listed = load_list()
    for variable in ("JUNE_WHISPER_NAME", "JUNE_LLM_NAME"):
        default = env[variable].split(":-", 1)[1].rstrip("}")
        assert default in listed, default
        assert f"june models fetch $${variable} --from" in command
