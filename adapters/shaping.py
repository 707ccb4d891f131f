"""Answer shaping that every dialect applies the same way: citations as text, stop sequences, a token budget.

A search citation becomes one line of answer text (kimi-free-api's format, `citation_text`, the only place that
spells it), and the text after a run of citations starts on a new line; citation lines count as answer text.

Kimi's web chat takes neither stop sequences nor a maximum length, so the gateway enforces both on the answer
it relays. It cuts at the first stop sequence, holding back any tail that could still grow into one, and stops
once the answer would exceed `max_tokens` as counted by `shared.usage_estimate.estimate_tokens` (the same estimator
that reports usage, so a cut answer reports exactly `max_tokens` or fewer). Only answer text counts: reasoning
is relayed whole, because a budget spent on thinking would leave a thinking model with no answer at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from shared.schema import Citation
from shared.usage_estimate import estimate_tokens

StopCause = Literal["stop_sequence", "max_tokens"]


def citation_text(citation: Citation) -> str:
    """A search citation as answer text, in kimi-free-api's format."""
    return f"【检索 {citation.index}】 [{citation.title}]({citation.url})\n"


class OutputLimiter:
    """Feeds answer text through; returns what may be sent now and remembers why it stopped, if it did."""

    def __init__(self, stop_sequences: Sequence[str] = (), max_tokens: int | None = None) -> None:
        self._stops = tuple(s for s in stop_sequences if s)
        self._max_tokens = max_tokens
        self._held = ""
        self._sent = ""
        #: Sum of per-chunk estimates (never below the whole's): exact counts run only near the limit.
        self._upper_bound = 0
        self.cause: StopCause | None = None
        self.stop_sequence: str | None = None
        self._after_citation = False

    @property
    def stopped(self) -> bool:
        return self.cause is not None

    @property
    def sent_text(self) -> str:
        return self._sent

    def feed_citation(self, citation: Citation) -> str:
        """`feed` of the citation's line; the next answer text starts on a new line."""
        self._after_citation = False
        out = self.feed(citation_text(citation))
        self._after_citation = True
        return out

    def feed(self, text: str) -> str:
        """The part of `text` (plus any held-back tail) that may be sent now."""
        if self.stopped:
            return ""
        if self._after_citation:
            text, self._after_citation = "\n" + text, False
        pending = self._held + text
        cut = self._first_stop(pending)
        if cut is not None:
            index, sequence = cut
            self._held = ""
            out = self._budget(pending[:index])
            if not self.stopped:
                self.cause, self.stop_sequence = "stop_sequence", sequence
            return out
        keep = self._partial_tail(pending)
        self._held = pending[len(pending) - keep :]
        return self._budget(pending[: len(pending) - keep])

    def flush(self) -> str:
        """The held-back tail, once the answer has ended without completing a stop sequence."""
        held, self._held = self._held, ""
        return self._budget(held) if not self.stopped else ""

    def _first_stop(self, text: str) -> tuple[int, str] | None:
        found = [(i, s) for s in self._stops if (i := text.find(s)) >= 0]
        return min(found, key=lambda hit: hit[0]) if found else None

    def _partial_tail(self, text: str) -> int:
        """Length of the longest suffix of `text` that is a proper prefix of some stop sequence."""
        best = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:size]):
                    best = size
                    break
        return best

    def _budget(self, text: str) -> str:
        """`text`, or its longest prefix that keeps the whole answer within `max_tokens`."""
        if not text:
            return ""
        if self._max_tokens is not None:
            self._upper_bound += estimate_tokens(text)
            if self._upper_bound > self._max_tokens:
                text = self._trim(text, self._max_tokens)
                self._upper_bound = estimate_tokens(self._sent + text)
        self._sent += text
        return text

    def _trim(self, text: str, limit: int) -> str:
        if estimate_tokens(self._sent + text) <= limit:
            return text
        low, high = 0, len(text)  # the answer: largest prefix length within the limit, in [low, high)
        while low < high - 1:
            mid = (low + high) // 2
            if estimate_tokens(self._sent + text[:mid]) <= limit:
                low = mid
            else:
                high = mid
        self.cause = "max_tokens"
        return text[:low]
