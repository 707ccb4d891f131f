"""The redaction processor: no token, cookie or key survives into a rendered log line."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog

from kimi_sim.tokens import mint_jwt
from shared.logging import REDACTED, configure_logging, hide_password, redact_processor, redact_text


@pytest.fixture(autouse=True)
def _restore_logging() -> object:
    """configure_logging changes process-wide state; put it back after each test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


JWT = mint_jwt({"typ": "access", "app_id": "kimi", "sub": "d4t8j3es1rh1oljov7g0", "exp": 4_000_000_000})
REFRESH = mint_jwt({"typ": "refresh", "sub": "cnndivilnl96vah411dg", "exp": 4_000_000_000})


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (f"token {JWT} expired", JWT),
        (f"Authorization: Bearer {REFRESH},{JWT}", REFRESH),
        (f"Cookie: kimi-auth={JWT}; other=1", JWT),
        ("x-api-key sk-kimi-0123456789abcdefABCDEF", "sk-kimi-0123456789abcdefABCDEF"),
        ("Bearer plain-opaque-key-123", "plain-opaque-key-123"),
        ("refresh_token=abc123def456&x=1", "abc123def456"),
    ],
)
def test_redact_text_removes_each_kind_of_secret(text: str, secret: str) -> None:
    """JWTs, bearer values, cookies and sk- keys are replaced wherever they appear in a string."""
    out = redact_text(text)
    assert secret not in out
    assert REDACTED in out


def test_processor_scrubs_nested_fields_and_secret_named_keys() -> None:
    """Secret-named keys are blanked; strings inside nested dicts and lists are scrubbed; counters stay."""
    event = {
        "event": "refresh failed",
        "token": "whatever-it-is",
        "headers": {"Authorization": f"Bearer {JWT}", "Accept": "*/*"},
        "attempts": [f"used {REFRESH}", "ok"],
        "prompt_tokens": 12,
        "account": "a1b2c3",
    }
    out = redact_processor(None, "info", dict(event))
    assert out["token"] == REDACTED
    assert out["headers"]["Authorization"] == REDACTED
    assert out["headers"]["Accept"] == "*/*"
    assert out["attempts"] == [f"used {REDACTED}", "ok"]
    assert out["prompt_tokens"] == 12
    assert out["account"] == "a1b2c3"


def test_rendered_json_line_contains_no_secret(capsys: pytest.CaptureFixture[str]) -> None:
    """A real structlog JSON line, exception included, carries no secret."""
    configure_logging("INFO", "json", service="test")
    log = structlog.get_logger("t")
    try:
        raise ValueError(f"upstream refused {JWT}")
    except ValueError:
        log.exception("boom", cookie=f"kimi-auth={JWT}", detail=f"Bearer {REFRESH}")
    err = capsys.readouterr().err.strip().splitlines()[-1]
    line = json.loads(err)
    assert line["event"] == "boom" and line["service"] == "test"
    assert JWT not in err and REFRESH not in err
    assert "ValueError" in line["exception"]
    structlog.reset_defaults()


def test_stdlib_log_records_are_scrubbed_too() -> None:
    """Library logs through the stdlib logging module pass the same redaction."""
    configure_logging("INFO", "json")
    stream = io.StringIO()
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    logging.getLogger("aiohttp.client").warning("request with Bearer %s failed", JWT)
    assert JWT not in stream.getvalue()
    assert REDACTED in stream.getvalue()
    structlog.reset_defaults()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:hunter2@redis.internal:6379/0", "redis://:***@redis.internal:6379/0"),
        ("rediss://default:s3cr%40t@10.0.0.7:6380/1", "rediss://default:***@10.0.0.7:6380/1"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://only-a-user@host/0", "redis://only-a-user@host/0"),
        ("http://host:8080/path:x@y", "http://host:8080/path:x@y"),
    ],
)
def test_hide_password_masks_only_the_password_of_a_url(url: str, shown: str) -> None:
    """`scheme://user:password@host` keeps its scheme, user and host; only the password becomes `***`."""
    assert hide_password(url) == shown


def test_url_passwords_never_reach_a_log_line() -> None:
    """A Redis URL with a password, in a message or any field, is logged with the password masked."""
    event = {
        "event": "connecting to redis://:hunter2@redis:6379/0",
        "redis_url": "redis://app:hunter2@redis:6379/0",
        "error": ConnectionError("cannot reach redis://:hunter2@redis:6379/0"),
    }
    out = redact_processor(None, "info", dict(event))
    assert out["event"] == "connecting to redis://:***@redis:6379/0"
    assert out["redis_url"] == "redis://app:***@redis:6379/0"
    assert "hunter2" not in repr(out) and "redis://:***@redis:6379/0" in out["error"]
