"""Services as real processes, the way a user runs them: `python -m <service>`, each stderr in its own file.

    with Procs(tmp_path) as procs:
        gateway = procs.start("gateway", ["-m", "gateway"], env)
        procs.wait_http("http://127.0.0.1:8000/readyz")
        ...
        procs.stop_all()          # SIGTERM in reverse start order, SIGKILL after a grace period
    gateway.log_lines()           # every line the process wrote to stderr

Leaving the `with` block stops whatever still runs, so a failing test leaves no process behind.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
STOP_GRACE_S = 10.0
POLL_S = 0.05


@dataclass
class Proc:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_lines(self) -> list[str]:
        return [line for line in self.log_path.read_text(errors="replace").splitlines() if line.strip()]

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_lines()[-lines:])


@dataclass
class Procs:
    log_dir: Path
    procs: list[Proc] = field(default_factory=list)

    def start(self, name: str, args: list[str], env: Mapping[str, str]) -> Proc:
        """Start `python <args>` from the repository root; stdout is discarded, stderr goes to `<name>.log`."""
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [sys.executable, *args],
                cwd=REPO_ROOT,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        proc = Proc(name, process, log_path)
        self.procs.append(proc)
        return proc

    def wait_http(self, url: str, timeout_s: float = 20.0) -> None:
        """Poll `url` until it answers 200; fail early, with the log's tail, when a process died."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            if http_get(url, timeout_s=0.5)[0] == 200:
                return
            time.sleep(POLL_S)
        raise RuntimeError(f"{url} did not answer 200 within {timeout_s:g} s")

    def check_alive(self) -> None:
        for proc in self.procs:
            if proc.process.poll() is not None:
                raise RuntimeError(
                    f"{proc.name} exited with code {proc.process.returncode}:\n{proc.log_tail()}"
                )

    def stop_all(self) -> None:
        """SIGTERM each process, newest first, and wait for it; SIGKILL what outlives the grace period."""
        for proc in reversed(self.procs):
            if proc.process.poll() is None:
                proc.process.send_signal(signal.SIGTERM)
            try:
                proc.process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.process.kill()
                proc.process.wait()

    def __enter__(self) -> Procs:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop_all()


def http_get(url: str, timeout_s: float = 2.0, headers: Mapping[str, str] | None = None) -> tuple[int, bytes]:
    """(status, body); status 0 when nothing answers."""
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return int(exc.code), exc.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def http_post_json(
    url: str, payload: Mapping[str, Any], headers: Mapping[str, str] | None = None, timeout_s: float = 5.0
) -> dict[str, Any]:
    """POST JSON and return the JSON answer; raises on a non-2xx status."""
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer
