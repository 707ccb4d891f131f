"""The deterministic text the simulator streams, so tests can assert exact output.

`prompt` is exactly what the upstream received: REST `messages[*].content` joined with newlines (the proxy
sends one message), Connect text-block contents joined with newlines. Every answer mixes ASCII with Chinese
so that multi-byte UTF-8 handling is always exercised.
"""

from __future__ import annotations

from typing import Any


def last_line(prompt: str) -> str:
    """The last non-blank line of the prompt, stripped."""
    lines = [line.strip() for line in prompt.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def answer_for(prompt: str) -> str:
    """The answer text: `你好！You said: {last line}. 这是模拟回答。`."""
    return f"你好！You said: {last_line(prompt)}. 这是模拟回答。"


def reasoning_for(prompt: str) -> str:
    """The reasoning text streamed for thinking / K1 requests."""
    return f"让我想想……The user wrote: {last_line(prompt)}. 先分析，再回答。"


def title_for(prompt: str) -> str:
    """The chat title (REST `rename`, Connect `chat.name`): `模拟：` + 12 chars of the last line."""
    return f"模拟：{last_line(prompt)[:12]}"


def search_keywords_for(prompt: str) -> list[str]:
    """The search keywords (Connect `block.search.keywords`)."""
    return [last_line(prompt)[:32], "模拟搜索"]


def search_results_for(prompt: str) -> list[dict[str, Any]]:
    """Two search results with `title`, `url`, `site_name`, `snippet` (REST `get_res`, Connect `webPages`)."""
    topic = last_line(prompt)[:32]
    return [
        {
            "title": f"结果一：{topic}",
            "url": "https://example.com/kimi-sim/1",
            "site_name": "示例站点",
            "snippet": f"About {topic}, part one.",
        },
        {
            "title": f"Result two: {topic}",
            "url": "https://example.org/kimi-sim/2",
            "site_name": "Example Org",
            "snippet": f"关于 {topic} 的第二条结果。",
        },
    ]


def split_chunks(text: str, n: int) -> list[str]:
    """`text` cut into `n` nearly equal pieces on character boundaries (fewer, never empty ones)."""
    n = max(1, min(n, len(text)))
    if not text:
        return []
    size, extra = divmod(len(text), n)
    chunks: list[str] = []
    start = 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        chunks.append(text[start:end])
        start = end
    return chunks


def attachments_note(files: list[tuple[str, int, str]]) -> str:
    """What an answer adds when the turn references files, one `(name, size, sha256)` each:
    ` Attachments: a.pdf (1234 bytes, sha256 0123456789ab); cat.png (…).`; "" without files."""
    if not files:
        return ""
    listed = "; ".join(f"{name} ({size} bytes, sha256 {sha256[:12]})" for name, size, sha256 in files)
    return f" Attachments: {listed}."
