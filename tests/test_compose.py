"""docker-compose.yml is valid and refuses to start without a real API key.

No Docker engine is needed: `docker-compose config` only parses, interpolates and validates.
Without the binary the tests skip locally and fail in CI (where `.ci/run` installs it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
SERVICES = {"postgres", "redis", "migrate", "api", "worker"}


def _docker_compose() -> str:
    binary = shutil.which("docker-compose")
    if binary is None:
        message = (
            "docker-compose is not installed "
            "(apt-get install -y docker-compose); needed to validate docker-compose.yml"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return binary


def _config(
    tmp_path: Path, api_key: str | None, *, profile: str | None = None, **env_vars: str
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOVECOTE_", "COMPOSE_"))}
    if api_key is not None:
        env["DOVECOTE_API_KEY"] = api_key
    env.update(env_vars)
    # An empty env file, so that a developer's ./.env cannot supply (or hide) the key.
    env_file = tmp_path / "empty.env"
    env_file.write_text("")
    return subprocess.run(
        [
            _docker_compose(),
            "--env-file",
            str(env_file),
            "--file",
            str(COMPOSE_FILE),
            "--project-directory",
            str(ROOT),
            *(["--profile", profile] if profile else []),
            "config",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_compose_config_is_valid(tmp_path: Path) -> None:
    result = _config(tmp_path, api_key="compose-test-secret")
    assert result.returncode == 0, result.stderr

    try:
        import yaml
    except ImportError:  # text checks only
        for name in SERVICES:
            assert f"\n  {name}:\n" in result.stdout, name
        assert "service_completed_successfully" in result.stdout
        assert "compose-test-secret" in result.stdout
        return

    config = yaml.safe_load(result.stdout)
    services = config["services"]
    assert services.keys() >= SERVICES
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"
        }
        assert services[name]["depends_on"]["redis"] == {"condition": "service_healthy"}
    assert services["migrate"]["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert services["migrate"]["command"] == ["dovecote", "migrate"]
    assert services["worker"]["command"] == ["dovecote", "worker", "--queues", "train"]

    for name in ("migrate", "api", "worker"):
        env = services[name]["environment"]
        assert env["DOVECOTE_ENV"] == "production"
        assert env["DOVECOTE_API_KEY"] == "compose-test-secret"
        assert env["DOVECOTE_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["DOVECOTE_BROKER_URL"].startswith("redis://")
        assert env["DOVECOTE_DATA_DIR"] == "/data"
        assert float(env["DOVECOTE_TENANT_RATE_LIMIT"]) > 0  # on in production, off in `make serve`
        assert env["DOVECOTE_GPU_QUEUE"] == "false"  # no GPU workers unless asked for
    # api and worker share the blob volume.
    assert any(v.startswith("dovecote-data:/data") for v in services["api"]["volumes"])
    assert any(v.startswith("dovecote-data:/data") for v in services["worker"]["volumes"])

    gpu = services.get("worker-gpu")
    if gpu is not None:  # opt-in through the `gpu` profile
        assert gpu["profiles"] == ["gpu"]
        devices = gpu["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["capabilities"] == ["gpu"]


def test_gpu_profile_runs_a_worker_on_the_gpu_queue(tmp_path: Path) -> None:
    """``DOVECOTE_GPU_QUEUE=true docker compose --profile gpu up``: the API (every service)
    routes backbone training to `gpu`, which worker-gpu alone consumes, on a reserved GPU."""
    result = _config(tmp_path, "compose-test-secret", profile="gpu", DOVECOTE_GPU_QUEUE="true")
    assert result.returncode == 0, result.stderr
    yaml = pytest.importorskip("yaml")
    services = yaml.safe_load(result.stdout)["services"]
    gpu = services["worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["command"] == ["dovecote", "worker", "--queues", "gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"] and devices[0]["count"] == 1
    assert services["worker"]["command"] == ["dovecote", "worker", "--queues", "train"]
    for name in ("api", "worker", "worker-gpu"):
        assert services[name]["environment"]["DOVECOTE_GPU_QUEUE"] == "true"
    assert gpu["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert any(v.startswith("dovecote-data:/data") for v in gpu["volumes"])
    # training everything on GPUs
    everything = _config(
        tmp_path, "compose-test-secret", profile="gpu", DOVECOTE_GPU_WORKER_QUEUES="gpu,train"
    )
    assert everything.returncode == 0, everything.stderr
    gpu = yaml.safe_load(everything.stdout)["services"]["worker-gpu"]
    assert gpu["command"] == ["dovecote", "worker", "--queues", "gpu,train"]


def test_compose_refuses_to_start_without_api_key(tmp_path: Path) -> None:
    result = _config(tmp_path, api_key=None)
    assert result.returncode != 0, result.stdout
    assert "set DOVECOTE_API_KEY" in result.stderr
