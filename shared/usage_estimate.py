"""An honest token estimate, since Kimi's web API reports no usage.

Kimi's tokenizer is not public. The estimate follows the usual BPE rule of thumb for its two main scripts:
one token per CJK character (Han, kana, hangul, fullwidth forms), and one token per four other characters,
rounded up, plus a small per-message overhead for role markers. Every usage number the gateway reports comes
from here and is marked as an estimate; it is never a constant.
"""

from __future__ import annotations

import re

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]")
#: Role markers and separators each message costs in chat formats.
PER_MESSAGE_OVERHEAD = 4


def estimate_tokens(text: str) -> int:
    if not text:
        return 0
    cjk = len(_CJK.findall(text))
    other = len(text) - cjk
    return cjk + (other + 3) // 4


def estimate_prompt_tokens(texts: list[str]) -> int:
    """Tokens of a prompt made of several messages."""
    return sum(estimate_tokens(t) + PER_MESSAGE_OVERHEAD for t in texts)
