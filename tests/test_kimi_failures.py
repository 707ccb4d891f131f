"""Table tests of Kimi's failure signals → `shared.errors` classes: a quota is a type, never a word."""

from __future__ import annotations

import pytest

from shared.errors import (
    GatewayError,
    NotFound,
    UpstreamOverloaded,
    UpstreamPlanRequired,
    UpstreamQuotaExhausted,
    UpstreamRateLimited,
    UpstreamStreamBusy,
)
from shared.models import ModelSpec, resolve_model
from upstream_worker.kimi.failures import (
    OVERLOAD_REASON,
    ConnectErrorBody,
    connect_error,
    http_error,
    plan_gated,
    plan_required,
    rest_error,
)
from upstream_worker.kimi.files import FileForgotten


@pytest.mark.parametrize(
    ("reason", "message", "exc"),
    [
        ("REASON_LONG_TEXT_QUOTA_EXCEEDED", "Long-text quota exhausted", UpstreamQuotaExhausted),
        ("REASON_LONG_TEXT_QUOTA_EXCEEDED", "长文本次数已达上限", UpstreamQuotaExhausted),
        ("REASON_SERVER_OVERLOADED_FOR_FREE_USER", "quota", UpstreamOverloaded),
        ("REASON_USER_STREAM_PUSHING", "quota", UpstreamStreamBusy),
        ("", "your quota is used up", UpstreamRateLimited),
    ],
)
def test_connect_resource_exhausted_by_reason(reason: str, message: str, exc: type[GatewayError]) -> None:
    """A Connect `resource_exhausted` is classified by its reason code; its message text never decides."""
    err = connect_error(ConnectErrorBody("resource_exhausted", message, [], reason))
    assert type(err) is exc


@pytest.mark.parametrize(
    ("error_type", "message", "exc"),
    [
        ("chat.long_text_quota", "次数已达上限", UpstreamQuotaExhausted),
        ("chat.completion.rate_limit", "quota used up", UpstreamRateLimited),
        ("chat.user_stream_pushing", "quota", UpstreamStreamBusy),
    ],
)
def test_rest_error_type_decides(error_type: str, message: str, exc: type[GatewayError]) -> None:
    """A REST error is classified by its `error_type`: a quota type is a quota whatever the message says."""
    err = rest_error(error_type, message)
    assert type(err) is exc


@pytest.mark.parametrize(
    ("status", "body", "exc", "retry_after_s"),
    [
        (
            400,
            b'{"code":"resource_exhausted",'
            b'"details":[{"debug":{"reason":"REASON_LONG_TEXT_QUOTA_EXCEEDED"}}]}',
            UpstreamQuotaExhausted,
            60.0,
        ),
        (429, b'{"error_type":"chat.long_text_quota","message":"x"}', UpstreamQuotaExhausted, 60.0),
        (429, b'{"error_type":"chat.completion.rate_limit","message":"quota"}', UpstreamRateLimited, 60.0),
    ],
)
def test_http_error_quota(status: int, body: bytes, exc: type[GatewayError], retry_after_s: float) -> None:
    """A quota in an HTTP error body (Connect reason or REST type) keeps the answer's Retry-After."""
    err = http_error(status, body, "60")
    assert type(err) is exc
    assert err.retry_after_s == retry_after_s


@pytest.mark.parametrize(
    ("model", "gated"),
    [
        ("kimi-k3", True),
        ("kimi-k3-swarm-max", True),
        ("kimi-k2.8-low", True),
        ("kimi-k2.6-instant", False),
        ("kimi-k2.5-agent", False),
        ("kimi", False),
    ],
)
def test_plan_gated_lanes(model: str, gated: bool) -> None:
    """Only the 2026 catalogue's agent lanes (K2.8, K3, K3 Swarm) are gated by plan; Instant and K2.5 are not."""
    assert plan_gated(_spec(model)) is gated


def test_free_user_refusal_on_a_gated_lane_is_the_plan() -> None:
    """The free-user refusal on K3 becomes a 403 `permission` naming the model and Kimi's own text."""
    refusal = connect_error(ConnectErrorBody("resource_exhausted", "Too many people", [], OVERLOAD_REASON))
    err = plan_required(_spec("kimi-k3"), refusal)
    assert type(err) is UpstreamPlanRequired
    assert (err.status, err.kind, err.retryable) == (403, "permission", False)
    assert err.message == (
        "kimi-k3 needs a paid Kimi plan; this account's plan was refused it (Kimi: Too many people)"
    )


def test_paywall_detail_is_the_plan() -> None:
    """A `paywall` detail is a plan refusal whatever the code and reason."""
    err = http_error(200, b'{"code":"resource_exhausted","details":[{"debug":{"paywall":{"a":1}}}]}', None)
    assert type(err) is UpstreamPlanRequired


def _spec(model: str) -> ModelSpec:
    spec = resolve_model(model)
    assert spec is not None
    return spec


def test_an_unknown_file_id_is_a_stale_upload_an_unknown_chat_is_not() -> None:
    """REST `file.not_found` and Connect `not_found` / REASON_FILE_NOT_FOUND are FileForgotten; a chat's stays NotFound."""
    assert type(rest_error("file.not_found", "找不到指定的文件")) is FileForgotten
    assert (
        type(connect_error(ConnectErrorBody("not_found", "file", [], "REASON_FILE_NOT_FOUND")))
        is FileForgotten
    )
    assert type(connect_error(ConnectErrorBody("not_found", "chat", [], "REASON_CHAT_NOT_FOUND"))) is NotFound
    assert type(http_error(400, b'{"error_type":"file.not_found","message":"x"}', None)) is FileForgotten
