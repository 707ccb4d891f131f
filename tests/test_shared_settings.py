"""Settings: parsed once from the environment, frozen, with secrets hidden from repr."""

from __future__ import annotations

import dataclasses

import pytest

from shared.secret import Secret, mask
from shared.settings import (
    CommonSettings,
    GatewaySettings,
    PoolSettings,
    TokenServiceSettings,
    WorkerSettings,
)


def test_contract_names_and_defaults() -> None:
    """The DESIGN.md §2 variables are read under their exact names, with the documented defaults."""
    empty = GatewaySettings.from_env({})
    assert empty.common.redis_url == "redis://127.0.0.1:6379/0"
    assert empty.common.kimi_base_url == "https://www.kimi.com"
    assert empty.port == 8000 and empty.api_keys == () and empty.common.admin_api_key is None
    assert TokenServiceSettings.from_env({}).port == 8001
    assert WorkerSettings.from_env({}).metrics_port == 8002
    env = {
        "REDIS_URL": "redis://r:1/2",
        "KIMI_BASE_URL": "http://127.0.0.1:9000/",
        "ADMIN_API_KEY": "admin-secret",
        "GATEWAY_API_KEYS": "k1, k2,,",
        "LOG_LEVEL": "debug",
        "LOG_FORMAT": "console",
        "GATEWAY_PORT": "18000",
    }
    s = GatewaySettings.from_env(env)
    assert s.common.redis_url == "redis://r:1/2"
    assert s.common.kimi_base_url == "http://127.0.0.1:9000"
    assert s.common.admin_api_key == Secret("admin-secret")
    assert [k.reveal() for k in s.api_keys] == ["k1", "k2"]
    assert (s.common.log_level, s.common.log_format, s.port) == ("DEBUG", "console", 18000)


def test_secrets_never_show_in_repr() -> None:
    """repr() of any settings object shows that a secret is set, never its value."""
    env = {
        "ADMIN_API_KEY": "admin-secret",
        "GATEWAY_API_KEYS": "client-key",
        "TOKEN_ENCRYPTION_KEY": "fernet-k",
    }
    for settings in (
        GatewaySettings.from_env(env),
        TokenServiceSettings.from_env(env),
        WorkerSettings.from_env(env),
    ):
        text = repr(settings)
        for value in env.values():
            assert value not in text
    assert Secret("x").matches("x") and not Secret("x").matches("y")


def test_settings_are_frozen() -> None:
    """A Settings object cannot be changed after parsing."""
    s = CommonSettings.from_env({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.redis_url = "redis://elsewhere"  # type: ignore[misc]


def test_bad_values_name_the_variable() -> None:
    """A malformed number or boolean fails at start with the variable's name in the message."""
    with pytest.raises(ValueError, match="GATEWAY_PORT"):
        GatewaySettings.from_env({"GATEWAY_PORT": "eighty"})
    with pytest.raises(ValueError, match="ALLOW_PASSTHROUGH_TOKENS"):
        GatewaySettings.from_env({"ALLOW_PASSTHROUGH_TOKENS": "maybe"})
    assert PoolSettings.from_env({"ACCOUNT_MAX_CONCURRENCY": "3"}).max_concurrency_per_account == 3


def test_mask_keeps_only_a_preview() -> None:
    """mask() shows a few characters at each end and never the middle of a token."""
    token = "eyJhbGciOiJIUzUxMiJ9.payload-part-of-the-token.signature"
    masked = mask(token)
    assert masked.startswith("eyJhbG") and masked.endswith("ture")
    assert "payload" not in masked
    assert mask("short") == "*****"
