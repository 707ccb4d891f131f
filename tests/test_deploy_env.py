""".env.example documents every environment variable with its default; docker-compose.yml passes them on."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from shared.settings import (
    CommonSettings,
    GatewaySettings,
    PoolSettings,
    TokenServiceSettings,
    WorkerSettings,
    declared_settings,
)

ROOT = Path(__file__).resolve().parent.parent
ENV_EXAMPLE = ROOT / ".env.example"
COMPOSE = ROOT / "docker-compose.yml"
#: Each worker replica must have its own consumer name, so compose leaves the default (hostname-pid).
NOT_PASSED_BY_COMPOSE = {"WORKER_NAME"}


def _settings_names() -> set[str]:
    """Every variable the settings declare (shared/settings.py `setting(...)` fields)."""
    return {declared.env for declared in declared_settings()}


def _example_lines() -> list[str]:
    return ENV_EXAMPLE.read_text().splitlines()


def _example() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in _example_lines() if line and not line.startswith("#"))
    return {name: value for name, value in pairs}


def _compose_defaults() -> dict[str, str]:
    """`${NAME:-default}` interpolations of docker-compose.yml, name to default."""
    return dict(re.findall(r"\$\{([A-Z][A-Z0-9_]*):-([^}]*)\}", COMPOSE.read_text()))


def test_every_settings_variable_is_documented() -> None:
    """Each variable read in shared/settings.py has a line in .env.example."""
    assert _settings_names() - set(_example()) == set()
    assert {
        "REDIS_URL",
        "KIMI_BASE_URL",
        "ADMIN_API_KEY",
        "GATEWAY_API_KEYS",
        "LOG_LEVEL",
    } <= _settings_names()


def test_every_documented_variable_is_used() -> None:
    """.env.example names only variables the settings read or docker-compose.yml interpolates."""
    assert set(_example()) - _settings_names() - set(_compose_defaults()) == set()


def test_every_variable_has_a_comment_in_its_block() -> None:
    """Each NAME= line has a comment line above it in its paragraph, saying what it means."""
    undocumented, commented = [], False
    for line in _example_lines():
        if not line.strip():
            commented = False
        elif line.startswith("#"):
            commented = True
        elif not commented:
            undocumented.append(line)
    assert undocumented == []


@pytest.mark.parametrize(
    "settings_class", [CommonSettings, PoolSettings, GatewaySettings, TokenServiceSettings, WorkerSettings]
)
def test_documented_values_are_the_defaults(settings_class: type) -> None:
    """Parsing .env.example gives the settings of an empty environment: its values are the defaults."""
    assert settings_class.from_env(_example()) == settings_class.from_env({})


def test_compose_defaults_match_the_example() -> None:
    """Each `${NAME:-default}` in docker-compose.yml is documented, with the same default or an empty one."""
    example = _example()
    assert set(_compose_defaults()) - set(example) == set()
    mismatched = {
        name: (default, example[name])
        for name, default in _compose_defaults().items()
        if default and default != example[name]
    }
    assert mismatched == {}


def test_compose_passes_every_setting_to_the_services() -> None:
    """Every settings variable reaches the containers, but WORKER_NAME, which each replica derives itself."""
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    passed = {name for service in services.values() for name in service.get("environment", {})}
    assert _settings_names() - passed == NOT_PASSED_BY_COMPOSE
