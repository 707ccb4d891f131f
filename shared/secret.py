"""A string wrapper that keeps secrets out of reprs, logs and tracebacks."""

from __future__ import annotations

import hmac


class Secret:
    """Holds a secret value; `repr` and `str` show only that it is set."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def matches(self, candidate: str) -> bool:
        """Constant-time comparison, for API keys; a header's non-UTF-8 bytes (kept as surrogates) match nothing."""
        try:
            offered = candidate.encode()
        except UnicodeEncodeError:
            return False
        return hmac.compare_digest(self._value.encode(), offered)

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


def mask(token: str, keep: int = 6) -> str:
    """A preview safe to show an operator: the first and last few characters only."""
    if len(token) <= keep * 2 + 3:
        return "*" * len(token)
    return f"{token[:keep]}…{token[-4:]}"
