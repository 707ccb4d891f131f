"""The Redis helper: uses a live Redis when one answers, otherwise starts (and always stops) its own."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import redis

from shared.redis_server import RedisHandle, answers, ensure_redis, free_port, start_redis_server


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); look at its state.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def test_starts_a_real_server_when_none_answers() -> None:
    """Nothing listens on the URL, so the helper starts a real redis-server, which answers, then stops."""
    dead_url = f"redis://127.0.0.1:{free_port()}/0"
    assert not answers(dead_url)
    handle = ensure_redis(dead_url)
    try:
        assert handle.embedded and handle.process is not None
        assert handle.url != dead_url
        client = redis.Redis.from_url(handle.url)
        assert client.ping() is True
        info = client.info("server")
        assert "redis_version" in info
        assert client.config_get("save") == {"save": ""}
        client.close()
        pid = handle.process.pid
    finally:
        handle.stop()
    assert not _alive(pid)
    assert not answers(handle.url)


def test_reuses_a_redis_that_answers(redis_server: RedisHandle) -> None:
    """A URL that answers is used as is; the helper starts nothing and stopping it kills nothing."""
    handle = ensure_redis(redis_server.url)
    assert handle.url == redis_server.url
    assert not handle.embedded
    handle.stop()
    assert answers(redis_server.url)


def test_each_test_gets_a_clean_database(redis_server: RedisHandle) -> None:
    """Two tests run in one pytest session: the second sees none of the first's keys."""
    code = textwrap.dedent(
        """
        import redis.asyncio as aioredis

        async def test_one(redis):
            await redis.set("leftover", "1")

        async def test_two(redis):
            assert await redis.get("leftover") is None
        """
    )
    result = _run_inner_session(code, {"TEST_REDIS_URL": redis_server.url})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_no_server_left_running_after_a_session(tmp_path: Path) -> None:
    """An inner pytest session starts its own redis-server; once that session ends the process is gone."""
    pid_file = tmp_path / "pid"
    code = textwrap.dedent(
        f"""
        def test_records_pid(redis_server):
            assert redis_server.embedded
            with open({str(pid_file)!r}, "w") as f:
                f.write(str(redis_server.process.pid))
        """
    )
    env = {"TEST_REDIS_URL": ""}
    result = _run_inner_session(code, env)
    assert result.returncode == 0, result.stdout + result.stderr
    pid = int(pid_file.read_text())
    assert not _alive(pid)


def test_start_redis_server_is_diskless_and_private() -> None:
    """The private server keeps nothing on disk (no AOF, no RDB save) and listens on loopback only."""
    handle: RedisHandle = start_redis_server()
    try:
        client = redis.Redis.from_url(handle.url)
        assert client.config_get("appendonly") == {"appendonly": "no"}
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("bind")["bind"].startswith("127.0.0.1")
        client.close()
    finally:
        handle.stop()


def _run_inner_session(code: str, env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    root = Path(__file__).resolve().parent.parent
    test_dir = root / "tests" / "_inner_tmp"
    test_dir.mkdir(exist_ok=True)
    test_file = test_dir / f"test_inner_{os.getpid()}_{free_port()}.py"
    test_file.write_text(code)
    try:
        env = {**os.environ, **env_extra}
        return subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", str(test_file)],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        test_file.unlink(missing_ok=True)


def test_the_embedded_server_runs_in_a_session_of_its_own() -> None:
    """A terminal's Ctrl-C (SIGINT to its process group) cannot reach the embedded Redis; its owner stops it."""
    handle = start_redis_server()
    try:
        assert handle.process is not None
        pid = handle.process.pid
        assert os.getsid(pid) == pid != os.getsid(0)
        assert os.getpgid(pid) != os.getpgid(0)
    finally:
        handle.stop()
    assert not _alive(pid)
