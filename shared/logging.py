"""structlog, configured once per process: JSON by default, console on a TTY, secrets redacted.

The redaction processor runs on every event, before rendering. It replaces JWTs, `Bearer …` values, cookies,
`sk-…` keys, the password of `scheme://user:password@host` URLs and the values of secret-named fields, anywhere
in the event (nested dicts and lists included). `hide_password(url)` is the same masking for console output.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

REDACTED = "[redacted]"

_SECRET_PATTERNS = (
    # A JWT: three base64url segments, the first starting with the encoded '{"'.
    re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"),
    re.compile(r"(?i)\bBearer\s+[^\s,;\"']+(?:\s*,\s*[^\s,;\"']+)*"),
    re.compile(r"(?i)\b(kimi-auth|refresh_token|access_token|session|token)=[^;\s&\"']+"),
    re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"),
    re.compile(r"\bgAAAAA[A-Za-z0-9_=-]{20,}"),  # Fernet ciphertext
)

#: `scheme://user:password@`: the password goes, the rest of the URL stays readable (where it points).
_URL_PASSWORD = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://[^\s/@:]*:)[^\s/]+@")
URL_PASSWORD_MASK = "***"

#: Every pattern above needs one of these; most log strings (event names, ids, numbers) have none, so one
#: search spares them the six substitutions.
_MAYBE_SECRET = re.compile(r"eyJ|(?i:bearer)|=|sk-|gAAAAA|@")

_SECRET_KEYS = re.compile(
    r"(?i)^(authorization|cookie|set-cookie|x-api-key|x-goog-api-key|x-admin-key|api[_-]?key|.*token|"
    r".*secret|password|cookies|key)$"
)


def hide_password(url: str) -> str:
    """`redis://:secret@host:6379/0` → `redis://:***@host:6379/0`; a URL without a password is unchanged."""
    return _URL_PASSWORD.sub(rf"\g<1>{URL_PASSWORD_MASK}@", url)


def redact_text(text: str) -> str:
    if not _MAYBE_SECRET.search(text):
        return text
    text = hide_password(text)
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(REDACTED, text)
    return text


def _redact(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: (REDACTED if _is_secret_key(k, v) else _redact(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_redact(v) for v in value)
    if isinstance(value, bytes):
        return redact_text(value.decode("utf-8", "replace"))
    if isinstance(value, BaseException):
        return redact_text(repr(value))
    return value


def _is_secret_key(key: object, value: object) -> bool:
    # Counters such as `tokens` or `prompt_tokens` are numbers, never secrets.
    return isinstance(key, str) and isinstance(value, str) and bool(_SECRET_KEYS.match(key))


def redact_processor(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: scrub every field of the event."""
    for key, value in list(event_dict.items()):
        if _is_secret_key(key, value):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _redact(value)
    return event_dict


def _format_exc_then_redact(
    logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    event_dict = structlog.processors.format_exc_info(logger, method, event_dict)
    return redact_processor(logger, method, event_dict)


def configure_logging(level: str = "INFO", fmt: str = "json", service: str | None = None) -> None:
    """Configure structlog and the stdlib root logger for this process."""
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if service:
        processors.append(_add_service(service))
    processors += [_format_exc_then_redact, renderer]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Libraries log through stdlib logging; keep them quiet and scrubbed too.
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.WARNING))


def _add_service(service: str) -> Any:
    def processor(_l: Any, _m: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        event_dict.setdefault("service", service)
        return event_dict

    return processor


class _RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact_text(record.getMessage())
        record.args = None
        return True


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)
