"""tests/agents.py: where the agent clients are found, and what a missing one does to its test."""

from __future__ import annotations

import re

import pytest

from tests.agents import NPM_BIN, find_agent, require_agent

MISSING = "no-such-agent-cli"


def test_a_missing_agent_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the binary and without CI=true, require_agent skips the test and says how to install it."""
    monkeypatch.delenv("CI", raising=False)
    assert find_agent(MISSING) is None
    with pytest.raises(pytest.skip.Exception, match=re.escape("bash .ci/install-tools")):
        require_agent(MISSING)


def test_a_missing_agent_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under CI=true a missing agent fails the test instead of skipping it."""
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=MISSING):
        require_agent(MISSING)


def test_the_npm_install_is_found_before_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """A binary in .tools/npm wins over one on PATH (when .ci/install-tools has run)."""
    if not (NPM_BIN / "claude").is_file():
        pytest.skip("run `bash .ci/install-tools` to install Claude Code into .tools/npm")
    monkeypatch.setenv("PATH", "")
    assert find_agent("claude") == NPM_BIN / "claude"
