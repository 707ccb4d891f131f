"""`python -m deploy.run` as a user runs it: Ctrl-C on the terminal lets a running stream finish, then stops all."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploy.run import Stack
from shared.redis_server import find_redis_server
from tests.procs import REPO_ROOT, http_get, http_post_json

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")

READY_TIMEOUT_S = 40.0
#: Long enough that Ctrl-C surely lands while the simulator holds the stream open.
STALL_S = 1.5


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def children_of(pid: int) -> set[int]:
    """Pids whose parent is `pid` (from /proc; the children run in sessions of their own)."""
    kids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            after_name = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(after_name[1]) == pid:
            kids.add(int(stat.parent.name))
    return kids


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@dataclass
class Runner:
    process: subprocess.Popen[bytes]
    log_path: Path
    ports: dict[str, int]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def url(self, name: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}{path}"

    def wait_until(self, ready: str, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Until the gateway is ready and the runner's log holds `ready`; fails early when it exits."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"deploy.run exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            if ready in self.log() and http_get(self.url("gateway", "/readyz"), 0.5)[0] == 200:
                return
            time.sleep(0.1)
        pytest.fail(f"deploy.run not ready within {timeout_s:g} s:\n{self.log()[-3000:]}")


def start_runner(tmp_path: Path, args: list[str], redis_url: str) -> Runner:
    gateway, token, sim, worker = free_ports(4)
    env = {k: v for k, v in os.environ.items() if k not in ("ADMIN_API_KEY", "GATEWAY_API_KEYS")}
    env |= {
        "GATEWAY_PORT": str(gateway),
        "TOKEN_SERVICE_PORT": str(token),
        "SIM_PORT": str(sim),
        "WORKER_METRICS_PORT": str(worker),
        "REDIS_URL": redis_url,
        "LOG_FORMAT": "json",
        "TOKEN_KEY_FILE": str(tmp_path / "token_encryption.key"),
    }
    log_path = tmp_path / "run.log"
    with open(log_path, "wb") as log:
        # Its own session, like a terminal's foreground job: SIGINT to the group is what Ctrl-C does.
        process = subprocess.Popen(
            [sys.executable, "-m", "deploy.run", *args],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    ports = {"gateway": gateway, "token_service": token, "sim": sim, "worker": worker}
    return Runner(process, log_path, ports)


@pytest.fixture
def runners(tmp_path: Path) -> Iterator[list[Runner]]:
    """Runners started by a test; whatever still runs afterwards (runner or child) is killed by pid."""
    started: list[Runner] = []
    yield started
    for runner in started:
        kids = children_of(runner.process.pid)
        if runner.process.poll() is None:
            os.killpg(runner.process.pid, signal.SIGKILL)
            runner.process.wait()
        for pid in kids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def running_streams(runner: Runner) -> list[dict[str, object]]:
    status, body = http_get(runner.url("sim", "/__sim/state"), 1.0)
    assert status == 200
    return [s for s in json.loads(body)["streams"] if s["status"] == "running"]


def stop_with_ctrl_c(runner: Runner) -> int:
    os.killpg(runner.process.pid, signal.SIGINT)
    return runner.process.wait(timeout=40)


def test_ctrl_c_lets_a_running_stream_finish_then_stops_everything(
    tmp_path: Path, runners: list[Runner]
) -> None:
    """SIGINT to the demo's process group mid-stream: the stream ends with [DONE], the runner exits 0, no child lingers."""
    dead_port = free_ports(1)[0]  # nothing answers there, so the runner starts its embedded Redis
    runner = start_runner(tmp_path, ["--demo"], f"redis://127.0.0.1:{dead_port}/0")
    runners.append(runner)
    runner.wait_until("demo account saved")
    assert http_get(runner.url("worker", "/healthz"))[0] == 200  # worker 0 on WORKER_METRICS_PORT
    kids = children_of(runner.process.pid)
    assert len(kids) == 5  # redis, simulator, token service, worker, gateway
    http_post_json(runner.url("sim", "/__sim/faults"), {"name": "stall_mid_stream", "seconds": STALL_S})

    conn = http.client.HTTPConnection("127.0.0.1", runner.ports["gateway"], timeout=30)
    try:
        body = {"model": "kimi", "stream": True, "messages": [{"role": "user", "content": "Hello"}]}
        conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
        deadline = time.monotonic() + 10
        while not running_streams(runner):
            assert time.monotonic() < deadline, "the simulator never saw the stream"
            time.sleep(0.02)
        os.killpg(runner.process.pid, signal.SIGINT)
        response = conn.getresponse()
        text = response.read().decode()
    finally:
        conn.close()

    assert response.status == 200, text
    events = [line.removeprefix("data: ") for line in text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]", text
    chunks = [json.loads(event) for event in events[:-1]]
    assert "Hello" in "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    assert runner.process.wait(timeout=40) == 0, runner.log()[-3000:]
    assert not [pid for pid in kids if alive(pid)]


def test_children_get_sessions_of_their_own(tmp_path: Path) -> None:
    """deploy.run starts each child in a new session, so a terminal's Ctrl-C reaches only the runner."""
    stack = Stack()
    child = stack.start("sleeper", ["-c", "import time; time.sleep(30)"], dict(os.environ))
    try:
        assert os.getsid(child.process.pid) == child.process.pid != os.getsid(0)
    finally:
        stack.stop()
    assert child.process.returncode == -signal.SIGTERM


def test_the_console_shows_a_redis_url_without_its_password(tmp_path: Path, runners: list[Runner]) -> None:
    """With REDIS_URL holding a password, the runner prints it masked and no process logs the password."""
    password = "s3cret-redis-pass"
    port = free_ports(1)[0]
    options = {
        "port": str(port),
        "bind": "127.0.0.1",
        "save": "",
        "appendonly": "no",
        "requirepass": password,
    }
    redis = subprocess.Popen(
        [find_redis_server(), *(part for name, value in options.items() for part in (f"--{name}", value))],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        runner = start_runner(tmp_path, [], f"redis://:{password}@127.0.0.1:{port}/0")
        runners.append(runner)
        runner.wait_until("gateway ready at")
        assert stop_with_ctrl_c(runner) == 0
    finally:
        redis.terminate()
        redis.wait(timeout=10)
    log = runner.log()
    assert f"redis: redis://:***@127.0.0.1:{port}/0" in log
    assert password not in log
