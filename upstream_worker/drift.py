"""Upstream drift: the event kinds and fields a decoder did not expect, noted by name, sans-IO.

Decoders read each event through msgspec Structs that forbid unknown fields at the levels they check, so an
event shaped as expected costs one decode, as before. An event that fails that decode takes the second try
here: it is decoded into plain objects, the unknown keys at the checked levels are noted in the stream's
`Drift` and removed, and the rest is converted to the same Structs, so an upstream change is seen (the driver
hands the names to `kimi_upstream_drift_total`) and never fatal.

The second try also keeps events whose JSON is not valid UTF-8: Kimi may cut a character's bytes between two
events (kimi-web-rest.md §5.1). Their bytes are decoded with `surrogateescape`, so the cut bytes of the text
fields named in the shape survive as U+DC80–U+DCFF for `upstream_worker.kimi.utf8.Utf8Joiner` to rejoin; any
other string keeps no such escape (U+FFFD instead), so nothing unencodable travels further.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec

T = TypeVar("T")

#: The name noted for a payload that is not a JSON object of the expected types.
MALFORMED = "malformed"
#: Distinct names one stream notes; a stream full of new names still costs a bounded dict.
MAX_NAMES_PER_STREAM = 64
OTHER = "other"
_ESCAPED = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class Shape:
    """A checked level of an event: its known keys, the checked levels under it, how its unknown keys are named.

    A child applies to a dict value, or to each dict of a list value (e.g. `choices`).
    """

    known: frozenset[str]
    #: Prefix of the name noted for an unknown key at this level ("event:" at a root whose keys are kinds).
    prefix: str = "field:"
    children: Mapping[str, Shape] = field(default_factory=dict)
    #: String fields whose escaped bytes must survive (text deltas, joined by the decoder).
    raw_text: frozenset[str] = frozenset()


def shape_of(
    struct: type[msgspec.Struct],
    prefix: str = "field:",
    children: Mapping[str, Shape] | None = None,
    raw_text: frozenset[str] = frozenset(),
) -> Shape:
    """The shape of a Struct that forbids unknown fields: its fields are the known keys."""
    known = frozenset(f.encode_name for f in msgspec.structs.fields(struct))
    return Shape(known, prefix, children or {}, raw_text)


class Drift:
    """What one stream did not expect, by name and count; the driver drains it into the metric."""

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def note(self, name: str) -> None:
        if name not in self.counts and len(self.counts) >= MAX_NAMES_PER_STREAM:
            name = OTHER
        self.counts[name] = self.counts.get(name, 0) + 1

    def drain(self) -> dict[str, int]:
        counts, self.counts = self.counts, {}
        return counts


def lenient_decode(payload: bytes | str, struct: type[T], shape: Shape, drift: Drift) -> T | None:
    """The second try for a payload the strict decoder refused; None (noted as malformed) if it is no event."""
    try:
        obj, escaped = _plain(payload)
    except ValueError:
        drift.note(MALFORMED)
        return None
    if not isinstance(obj, dict):
        drift.note(MALFORMED)
        return None
    _strip(obj, shape, drift, escaped)
    try:
        return msgspec.convert(obj, struct)
    except msgspec.ValidationError:
        drift.note(MALFORMED)
        return None


def _plain(payload: bytes | str) -> tuple[Any, bool]:
    """Plain objects, and whether strings may hold surrogate escapes (the JSON was not valid UTF-8)."""
    try:
        return msgspec.json.decode(payload), False
    except UnicodeEncodeError:
        pass  # a str that already holds escapes (the SSE decoder's)
    except msgspec.DecodeError:
        if isinstance(payload, str) or _is_utf8(payload):
            raise
    text = payload if isinstance(payload, str) else payload.decode("utf-8", "surrogateescape")
    return json.loads(text), True


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _strip(obj: dict[str, Any], shape: Shape, drift: Drift, escaped: bool) -> None:
    for key in list(obj):
        if key not in shape.known:
            drift.note(shape.prefix + key)
            del obj[key]
            continue
        value = obj[key]
        child = shape.children.get(key)
        if child is not None:
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, dict):
                    _strip(item, child, drift, escaped)
        elif escaped and key not in shape.raw_text:
            obj[key] = _clean(value)


def _clean(value: Any) -> Any:
    """`value` with every surrogate escape of its strings replaced by U+FFFD."""
    if isinstance(value, str):
        return _ESCAPED.sub("\ufffd", value)
    if isinstance(value, list):
        return [_clean(item) for item in value]
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    return value
