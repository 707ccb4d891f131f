"""docker-compose.yml, validated by Debian's docker-compose (needs no engine) and read for its promises."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from pytest_aiohttp import AiohttpServer

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
APP_SERVICES = ("gateway", "token_service", "upstream_worker")
#: The port each service listens on inside its container, by the variable that sets it.
PORT_VARIABLES = {
    "gateway": "GATEWAY_PORT",
    "token_service": "TOKEN_SERVICE_PORT",
    "upstream_worker": "WORKER_METRICS_PORT",
}


def docker_compose(*args: str, env_file: Path) -> subprocess.CompletedProcess[str]:
    """Run docker-compose on the repository's file; a missing tool fails (.ci/install-tools installs it)."""
    if shutil.which("docker-compose") is None:
        pytest.fail("docker-compose not found: run `bash .ci/install-tools` (apt-get install docker-compose)")
    command = ["docker-compose", "--env-file", str(env_file), "-f", str(COMPOSE), *args]
    # Only the env file feeds the interpolation, never the caller's own environment.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False, cwd=ROOT, env=env)


def _services() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())["services"]
    return services


@pytest.mark.parametrize("use_example", [True, False], ids=["env-example", "empty-env"])
def test_docker_compose_accepts_the_file(use_example: bool, tmp_path: Path) -> None:
    """`docker-compose config -q` validates the file, with .env.example's values and with an empty .env."""
    empty = tmp_path / ".env"
    empty.write_text("")
    result = docker_compose("config", "-q", env_file=ENV_EXAMPLE if use_example else empty)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


@pytest.mark.parametrize("use_example", [True, False], ids=["env-example", "empty-env"])
def test_resolved_config_publishes_only_gateway_prometheus_and_grafana_on_loopback(
    use_example: bool, tmp_path: Path
) -> None:
    """After interpolation the host sees 8000 (gateway), 9090 and 3000 on 127.0.0.1 only; nothing else."""
    empty = tmp_path / ".env"
    empty.write_text("")
    result = docker_compose("config", env_file=ENV_EXAMPLE if use_example else empty)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    published = {name: [_host_port(p) for p in s.get("ports", [])] for name, s in services.items()}
    assert published == {
        "redis": [],
        "token_service": [],
        "gateway": [("127.0.0.1", 8000)],
        "upstream_worker": [],
        "prometheus": [("127.0.0.1", 9090)],
        "grafana_password": [],
        "grafana": [("127.0.0.1", 3000)],
    }


def test_grafana_has_no_default_password(tmp_path: Path) -> None:
    """With GRAFANA_ADMIN_PASSWORD unset Grafana reads a generated password file, never `admin`."""
    empty = tmp_path / ".env"
    empty.write_text("")
    result = docker_compose("config", env_file=empty)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    grafana = services["grafana"]["environment"]
    assert "GF_SECURITY_ADMIN_PASSWORD" not in grafana
    assert grafana["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/secrets/grafana_admin_password"
    assert services["grafana"]["depends_on"]["grafana_password"] == {
        "condition": "service_completed_successfully"
    }
    assert "head -c 24 /dev/urandom" in services["grafana_password"]["command"][0]


def _host_port(port: str | dict[str, Any]) -> tuple[str | None, int]:
    """(host address, host port) of a resolved port: `127.0.0.1:8000:8000/tcp` (compose v1) or the long form."""
    if isinstance(port, dict):
        return port.get("host_ip"), int(port["published"])
    host, published, _ = port.rsplit(":", 2) if port.count(":") >= 2 else (None, *port.split(":"))
    return host, int(published)


def test_every_service_command_is_a_project_entry_point() -> None:
    """Each built service runs `python -m <package>`, and that package has a __main__ with a main()."""
    services = _services()
    for name in APP_SERVICES:
        command = services[name]["command"]
        assert command[:2] == ["python", "-m"], name
        _assert_entry_point(command[2])
    assert [services[name]["command"][2] for name in APP_SERVICES] == list(APP_SERVICES)


def _assert_entry_point(module: str) -> None:
    spec = importlib.util.find_spec(f"{module}.__main__")
    assert spec is not None and spec.origin is not None, module
    origin = Path(spec.origin)
    assert origin == ROOT / module / "__main__.py"
    assert re.search(r"^def main\(", origin.read_text(), re.MULTILINE), f"{origin} has no main()"


def test_app_services_are_built_from_the_one_dockerfile() -> None:
    """gateway, token_service and upstream_worker build deploy/Dockerfile with the repository as context."""
    services = _services()
    builds = [services[name]["build"] for name in APP_SERVICES]
    assert builds == [{"context": ".", "dockerfile": "deploy/Dockerfile"}] * 3
    assert (ROOT / "deploy" / "Dockerfile").is_file()


def test_redis_7_is_append_only_on_a_volume() -> None:
    """Redis 7 writes an append-only file to a named volume, so accounts survive a restart."""
    redis = _services()["redis"]
    assert re.fullmatch(r"redis:7\.\d+(-alpine)?", redis["image"])
    assert redis["command"][:3] == ["redis-server", "--appendonly", "yes"]
    assert redis["volumes"] == ["redis-data:/data"]
    assert "redis-data" in yaml.safe_load(COMPOSE.read_text())["volumes"]


def test_services_talk_to_the_compose_redis_and_configurable_kimi() -> None:
    """Every app service uses redis://redis:6379/0 and takes KIMI_BASE_URL from the environment."""
    for name in APP_SERVICES:
        environment = _services()[name]["environment"]
        assert environment["REDIS_URL"] == "redis://redis:6379/0"
        assert environment["KIMI_BASE_URL"] == "${KIMI_BASE_URL:-https://www.kimi.com}"


def test_workers_can_be_scaled() -> None:
    """upstream_worker has no host port and no fixed container name, so `--scale upstream_worker=N` works."""
    worker = _services()["upstream_worker"]
    assert "ports" not in worker
    assert "container_name" not in worker
    assert "WORKER_NAME" not in worker["environment"]


def test_healthchecks_hit_each_service_port() -> None:
    """Each app service's health check reads /healthz on the port its own settings variable sets."""
    for name in APP_SERVICES:
        service = _services()[name]
        port = service["environment"][PORT_VARIABLES[name]]
        assert service["environment"]["HEALTHCHECK_URL"] == f"http://127.0.0.1:{port}/healthz"
        assert service["healthcheck"]["test"][:2] == ["CMD", "python"]


def test_every_service_has_a_healthcheck_and_waits_for_healthy_dependencies() -> None:
    """All long-running services have a health check; app services start once Redis and the token service are
    healthy."""
    services = _services()
    assert all("healthcheck" in service for service in services.values() if service.get("restart") != "no")
    conditions = {
        name: services[name]["depends_on"] for name in ("token_service", "gateway", "upstream_worker")
    }
    assert conditions == {
        "token_service": {"redis": {"condition": "service_healthy"}},
        "gateway": {
            "redis": {"condition": "service_healthy"},
            "token_service": {"condition": "service_healthy"},
        },
        "upstream_worker": {
            "redis": {"condition": "service_healthy"},
            "token_service": {"condition": "service_healthy"},
        },
    }
    assert services["grafana"]["depends_on"] == {
        "prometheus": {"condition": "service_healthy"},
        "grafana_password": {"condition": "service_completed_successfully"},
    }


def test_monitoring_images_are_pinned_and_mount_existing_files() -> None:
    """Prometheus and Grafana run pinned versions, and every file they mount exists in the repository."""
    services = _services()
    assert re.fullmatch(r"prom/prometheus:v\d+\.\d+\.\d+", services["prometheus"]["image"])
    assert re.fullmatch(r"grafana/grafana:\d+\.\d+\.\d+", services["grafana"]["image"])
    mounts = [v.split(":")[0] for name in ("prometheus", "grafana") for v in services[name]["volumes"]]
    bind_sources = [m for m in mounts if m.startswith("./")]
    assert len(bind_sources) == 4
    assert [m for m in bind_sources if not (ROOT / m).exists()] == []


async def _healthcheck(url: str) -> int:
    """Run the compose health-check command against `url`, as Docker would; its exit code."""
    test = yaml.safe_load(COMPOSE.read_text())["x-healthcheck"]["test"]
    assert test[:2] == ["CMD", "python"]
    env = {**os.environ, "HEALTHCHECK_URL": url}
    process = await asyncio.create_subprocess_exec(
        sys.executable, *test[2:], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return await asyncio.wait_for(process.wait(), timeout=20)


async def _ok(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def _draining(request: web.Request) -> web.Response:
    return web.json_response({"ok": False}, status=503)


async def test_healthcheck_command_passes_on_200_and_fails_on_503(aiohttp_server: AiohttpServer) -> None:
    """The health-check command exits 0 when /healthz answers 200 and non-zero when it answers 503."""
    app = web.Application()
    app.router.add_get("/healthz", _ok)
    app.router.add_get("/draining", _draining)
    server = await aiohttp_server(app)
    assert await _healthcheck(str(server.make_url("/healthz"))) == 0
    assert await _healthcheck(str(server.make_url("/draining"))) != 0
