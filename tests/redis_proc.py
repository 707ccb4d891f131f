"""A redis-server a test owns outright: SIGKILLed, restarted on the same port, with its data or without.

    @pytest.fixture
    def redis_proc(tmp_path): ...          # below: import it, with `redis_url` and `redis`, into a test module

Importing `redis_proc`, `redis_url` and `redis` into a test module points every fixture built on them
(`stack_factory`, the worker helpers) at this server instead of the session's shared one, so the test may
kill it or FLUSHALL it without touching any other test. With `persistent=True` every write is fsynced to an
append-only file before it is answered, so a `kill()` + `start()` is "Redis restarts with its data".
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from shared.redis_server import answers, find_redis_server, free_port

START_TIMEOUT_S = 10.0


@dataclass
class RedisProc:
    """One private redis-server on a fixed loopback port; `start()` again after `kill()` reuses the port."""

    workdir: Path
    persistent: bool = True
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else []
        args = [find_redis_server(), "--bind", "127.0.0.1", "--port", str(self.port), "--save", ""]
        args += [*persistence, "--dir", str(self.workdir), "--loglevel", "warning"]
        with open(self.workdir / "redis.log", "ab") as log:
            self.process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not answers(self.url, 0.2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((self.workdir / "redis.log").read_text(errors="replace")[-500:])
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: no shutdown save, every client connection is reset."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=5)
        self.process = None


@pytest.fixture
def redis_proc(tmp_path: Path) -> Iterator[RedisProc]:
    """A persistent private Redis for this test alone, stopped at teardown."""
    workdir = tmp_path / "redis"
    workdir.mkdir()
    proc = RedisProc(workdir)
    proc.start()
    yield proc
    proc.kill()


@pytest.fixture
def redis_url(redis_proc: RedisProc) -> str:
    return redis_proc.url


@pytest_asyncio.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A client that reconnects by itself after a restart (one immediate retry on a dead connection)."""
    reconnect = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
    client = aioredis.Redis.from_url(redis_url, retry=reconnect)
    yield client
    await client.aclose()
