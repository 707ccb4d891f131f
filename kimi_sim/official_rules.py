"""What the simulated official API refuses, and how it says so (moonshot-official-api.md §3.1, §4.2, §5, §6, §10).

Pure functions over the parsed request body; `chat_completions` turns a refusal into the platform's error answer.
"""

from __future__ import annotations

from typing import Any

from . import official_answers as oa
from .official_state import ApiKey

#: Each error type of §10.2 with its status and the platform's message; `{account}` is `org-…<ak-…>`.
ERRORS: dict[str, tuple[int, str]] = {
    "invalid_request_error": (400, "Invalid request: Your request exceeded model token limit : 8192"),
    "content_filter": (400, "The request was rejected because it was considered high risk"),
    "invalid_authentication_error": (401, "Invalid Authentication"),
    "incorrect_api_key_error": (401, "Incorrect API key provided"),
    "permission_denied_error": (403, "The API you are accessing is not open"),
    "resource_not_found_error": (404, "Not found the model {model} or Permission denied"),
    "engine_overloaded_error": (429, "The engine is currently overloaded, please try again later"),
    "exceeded_current_quota_error": (
        429,
        "Your account {account} is suspended: account balance is insufficient or the account has been disabled",
    ),
    "rate_limit_reached_error": (
        429,
        "Your account {account} request reached organization max RPM: 3, please try again after {after} seconds",
    ),
    "server_error": (500, "Failed to extract file: internal error"),
    "unexpected_output": (500, "invalid state transition"),
}
SAMPLING = ("temperature", "top_p", "presence_penalty", "frequency_penalty")
MAX_TOOLS = 128
_TOOL_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


class ApiFailure(Exception):
    def __init__(self, error_type: str, message: str | None = None, retry_after: Any = None) -> None:
        super().__init__(error_type)
        self.error_type = error_type
        self.message = message
        self.retry_after = retry_after


def error_body(
    error_type: str, message: str | None, key: ApiKey | None, model: str, after: Any = 1
) -> tuple[int, dict[str, Any]]:
    """The status and body of an error: `type` is the machine key, there is no `code` (§10.1)."""
    status, default = ERRORS.get(error_type, (500, "internal error"))
    account = key.account if key else "org-unknown<ak-unknown>"
    text = message or default.format(account=account, model=model, after=after)
    return status, {"error": {"message": text, "type": error_type}}


def validate(body: dict[str, Any], key: ApiKey) -> tuple[oa.SimModel, bool]:
    """The model and whether it thinks for this request; the platform's refusals raise (§3.1, §4.2, §5, §6)."""
    model_id = str(body.get("model") or "")
    model = oa.MODELS.get(model_id)
    if model is None or (key.models is not None and model_id not in key.models):
        raise ApiFailure("resource_not_found_error")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise oa.InvalidRequest("Invalid request: messages must be a non-empty list")
    _check_messages(messages, model)
    _check_sampling(body, model)
    _check_tools(body, model)
    thinking = _thinking(body, model)
    if thinking:
        _check_reasoning_history(messages)
    return model, thinking


def _check_messages(messages: list[dict[str, Any]], model: oa.SimModel) -> None:
    for index, message in enumerate(messages):
        role = message.get("role")
        if role not in ("system", "user", "assistant", "tool"):
            raise oa.InvalidRequest(f"Invalid request: unknown role {role!r} at index {index}")
        content = message.get("content")
        if isinstance(content, list) and not model.vision:
            raise oa.InvalidRequest(f"Invalid request: model {model.id} only accepts text content (string)")
        if isinstance(content, list):
            oa.images_of(content)  # refuses what is not a base64 data URL
        empty = not oa.text_of(content) and not oa.images_of(content)
        if empty and not (role == "assistant" and message.get("tool_calls")):
            raise oa.InvalidRequest(
                f"Invalid request: the message at position {index} with role '{role}' must not be empty"
            )


def _check_sampling(body: dict[str, Any], model: oa.SimModel) -> None:
    if not model.fixed_sampling:
        return
    for name in SAMPLING:
        if name in body:
            raise oa.InvalidRequest(f"Invalid request: {name} is fixed for model {model.id}, do not send it")
    if body.get("n", 1) != 1:
        raise oa.InvalidRequest(f"Invalid request: n must be 1 for model {model.id}")


def _check_tools(body: dict[str, Any], model: oa.SimModel) -> None:
    tools = body.get("tools") or []
    if len(tools) > MAX_TOOLS:
        raise oa.InvalidRequest(f"Invalid request: too many tools, at most {MAX_TOOLS} are allowed")
    for tool in tools:
        name = str(((tool or {}).get("function") or {}).get("name") or "")
        if not (
            3 <= len(name) <= 64 and (name[0].isalpha() or name[0] == "_") and set(name) <= _TOOL_NAME_CHARS
        ):
            raise oa.InvalidRequest(f"Invalid request: function name {name!r} is invalid")
    if body.get("tool_choice") == "required" and not model.required_ok:
        raise oa.InvalidRequest(
            f"Invalid request: tool_choice 'required' is not supported by model {model.id}"
        )


def _thinking(body: dict[str, Any], model: oa.SimModel) -> bool:
    """Whether the answer reasons; the rules of §5 for `thinking` and `reasoning_effort`."""
    thinking = body.get("thinking")
    effort = body.get("reasoning_effort")
    if effort is not None and (not model.effort or effort not in ("low", "high", "max")):
        raise oa.InvalidRequest(
            f"Invalid request: reasoning_effort {effort!r} is not supported by model {model.id}"
        )
    if thinking is None:
        return model.thinking != "none"
    if model.thinking in ("none",) or model.effort:
        raise oa.InvalidRequest(f"Invalid request: thinking is not supported by model {model.id}")
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    keep = thinking.get("keep") if isinstance(thinking, dict) else None
    if kind not in ("enabled", "disabled") or (model.thinking == "always" and kind == "disabled"):
        raise oa.InvalidRequest(
            f"Invalid request: thinking type {kind!r} is not supported by model {model.id}"
        )
    if (model.keep == "none" and keep is not None) or (model.keep == "all" and keep not in (None, "all")):
        raise oa.InvalidRequest(
            f"Invalid request: thinking keep {keep!r} is not supported by model {model.id}"
        )
    return kind == "enabled"


def _check_reasoning_history(messages: list[dict[str, Any]]) -> None:
    for index, message in enumerate(messages):
        if (
            message.get("role") == "assistant"
            and message.get("tool_calls")
            and not message.get("reasoning_content")
        ):
            raise oa.InvalidRequest(
                "thinking is enabled but reasoning_content is missing in assistant tool call message "
                f"at index {index}"
            )
