"""Codex CLI (`@openai/codex`, installed by .ci/install-tools) as a real client of the Responses API: the
simulated Kimi calls Codex's `exec_command` tool to read a file, Codex runs it in its read-only sandbox and sends
the output back, and the answer quotes the file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import pytest_asyncio

from tests.agents import require_agent, run_agent
from tests.stack import Stack, StackFactory, stack_factory

__all__ = ["stack_factory"]

#: Codex starts node, reads its config and makes two model requests; a slow CI box needs the margin.
CODEX_TIMEOUT_S = 90.0
CONTENT = "The launch code is 7481-kiwi."
#: The model provider the README shows, pointed at the test's gateway.
CONFIG = """model = "{model}"
model_provider = "kimi"

[model_providers.kimi]
name = "Kimi gateway"
base_url = "{url}/v1"
wire_api = "responses"
env_key = "KIMI_GATEWAY_KEY"
"""


@pytest_asyncio.fixture(
    params=[("kimi_auth", "kimi-k2.5-instant"), ("refresh_token", "kimi")], ids=["connect", "rest"]
)
async def lane(request: pytest.FixtureRequest, stack_factory: StackFactory) -> tuple[Stack, str]:
    """A stack with one account of the lane's kind, and the model id that lane serves."""
    kind, model = request.param
    stack = await stack_factory()
    await stack.add(kind)
    return stack, model


async def _codex(stack: Stack, home: Path, work: Path, prompt: str, model: str) -> tuple[int, str, str]:
    """`codex exec` against the gateway with `home` as CODEX_HOME and `work` as its directory: status, out, err."""
    codex = require_agent("codex")
    (home / "config.toml").write_text(CONFIG.format(model=model, url=stack.url))
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "CODEX_HOME": str(home),
        "KIMI_GATEWAY_KEY": "sk-local",
    }
    argv = [str(codex), "exec", "--skip-git-repo-check", "--sandbox", "read-only", prompt]
    return await run_agent(argv, cwd=work, env=env, timeout_s=CODEX_TIMEOUT_S)


@pytest.mark.timeout(CODEX_TIMEOUT_S + 30)
async def test_codex_reads_a_file_through_the_gateway(lane: tuple[Stack, str], tmp_path: Path) -> None:
    """`codex exec` runs the `exec_command` call the simulated Kimi makes and prints the answer quoting the file."""
    home, work = tmp_path / "codex-home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    (work / "note.txt").write_text(CONTENT + "\n")
    prompt = "Read the note.\ncall exec_command " + json.dumps({"cmd": "cat note.txt", "workdir": str(work)})
    status, out, err = await _codex(lane[0], home, work, prompt, lane[1])
    assert status == 0, f"codex exited {status}\nstdout: {out}\nstderr: {err}"
    # Codex wraps a command's output (`Chunk ID: <random>`, wall time, exit code); the simulated Kimi quotes
    # the result of its call whole, so the answer ends with what `cat` printed.
    assert "functions.exec_command:0 returned: Chunk ID: " in out
    assert out.rstrip().endswith("Process exited with code 0\nOriginal token count: 8\nOutput:\n" + CONTENT)
