"""The services' event loop: uvloop when installed, the standard loop when KIMI_EVENT_LOOP=asyncio."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = (
    "import asyncio; from shared.runtime import install_event_loop; name = install_event_loop(); "
    "loop = asyncio.new_event_loop(); print(name, type(loop).__module__); loop.close()"
)


@pytest.mark.parametrize(("setting", "expected"), [("", "uvloop uvloop"), ("asyncio", "asyncio asyncio")])
def test_install_event_loop_picks_the_loop(setting: str, expected: str) -> None:
    """A fresh process gets uvloop by default and the standard loop when asked for it."""
    env = {**os.environ, "KIMI_EVENT_LOOP": setting}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    name, module = out.stdout.split()
    assert f"{name} {module.split('.')[0]}" == expected
