"""Claude Code (`@anthropic-ai/claude-code`, installed by .ci/install-tools) as a real client of the gateway: the
simulated Kimi calls Claude Code's `Read` tool, Claude Code runs it and sends the result back, and the answer
quotes the file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import pytest_asyncio

from tests.agents import require_agent, run_agent
from tests.stack import Stack, StackFactory, stack_factory

__all__ = ["stack_factory"]

#: Claude Code starts node, reads its settings and makes two model requests; a slow CI box needs the margin.
CLAUDE_TIMEOUT_S = 90.0
CONTENT = "The launch code is 7481-kiwi."


@pytest_asyncio.fixture(
    params=[("kimi_auth", "kimi-k2.5-instant"), ("refresh_token", "kimi")], ids=["connect", "rest"]
)
async def lane(request: pytest.FixtureRequest, stack_factory: StackFactory) -> tuple[Stack, str]:
    """A stack with one account of the lane's kind, and the model id that lane serves."""
    kind, model = request.param
    stack = await stack_factory()
    await stack.add(kind)
    return stack, model


async def _claude(stack: Stack, home: Path, prompt: str, model: str) -> tuple[int, str, str]:
    """`claude -p <prompt>` against the gateway, in `home` (its HOME and working directory): status, out, err.

    No permission flag: Claude Code runs Read on a file inside its working directory without asking."""
    claude = require_agent("claude")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": stack.url,
        "ANTHROPIC_API_KEY": "sk-local",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
    }
    argv = [str(claude), "-p", prompt, "--model", model]
    return await run_agent(argv, cwd=home, env=env, timeout_s=CLAUDE_TIMEOUT_S)


@pytest.mark.timeout(CLAUDE_TIMEOUT_S + 30)
async def test_claude_code_reads_a_file_through_the_gateway(lane: tuple[Stack, str], tmp_path: Path) -> None:
    """`claude -p` runs the Read call the simulated Kimi makes and prints the answer that quotes the file."""
    home = tmp_path / "home"
    home.mkdir()
    note = home / "note.txt"
    note.write_text(CONTENT + "\n")
    prompt = "Read the note.\ncall Read " + json.dumps({"file_path": str(note)})
    status, out, err = await _claude(lane[0], home, prompt, lane[1])
    assert status == 0, f"claude exited {status}\nstdout: {out}\nstderr: {err}"
    # Claude Code's Read numbers the lines (`1\t…`); the simulated Kimi quotes the result of its call whole.
    assert out.startswith("Tool results received. 工具结果如下：\nfunctions.Read:0 returned: 1\t" + CONTENT)
    assert "<|tool_call" not in out
