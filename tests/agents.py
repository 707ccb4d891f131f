"""The real agent clients the end-to-end tests drive (Claude Code, Codex CLI): where their binaries are, and
how one is run.

`.ci/install-tools` installs them from npm, pinned, into `.tools/npm`; a binary on PATH works too. A missing one
skips its test with the reason, except in CI (`CI=true`), where a missing client is a failure.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NPM_BIN = ROOT / ".tools" / "npm" / "node_modules" / ".bin"


def find_agent(name: str) -> Path | None:
    """The agent's executable: `.tools/npm/node_modules/.bin/<name>`, else `<name>` on PATH, else None."""
    local = NPM_BIN / name
    if local.is_file() and os.access(local, os.X_OK):
        return local
    found = shutil.which(name)
    return Path(found) if found else None


def require_agent(name: str) -> Path:
    """The agent's executable; skips the test when it is missing, or fails it under `CI=true`."""
    path = find_agent(name)
    if path is not None:
        return path
    reason = f"`{name}` is not installed: run `bash .ci/install-tools` (it installs into {NPM_BIN})"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


async def run_agent(
    argv: list[str], *, cwd: Path, env: dict[str, str], timeout_s: float
) -> tuple[int, str, str]:
    """Run an agent client to its end with no standard input: its status, stdout and stderr; killed after
    `timeout_s` (the timeout is raised)."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()
