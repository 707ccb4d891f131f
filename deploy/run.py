"""`make run` and `make demo`: the whole system on one machine, logs on the console, Ctrl-C stops it all.

    python -m deploy.run            Redis (embedded when REDIS_URL does not answer), token service, worker(s), gateway
    python -m deploy.run --demo     the same, plus the bundled Kimi simulator and a demo account

Children are started in dependency order and stopped in reverse: the gateway first (no new requests, in-flight
streams finish), then the workers (SIGTERM drains their in-flight jobs), the token service, the simulator, and last
the embedded Redis. Each child runs in its own session, so the Ctrl-C a terminal sends to its whole process group
reaches only this runner, which then stops the children in that order.

Ports: GATEWAY_PORT, TOKEN_SERVICE_PORT, SIM_PORT (--demo), and WORKER_METRICS_PORT for the first worker (the
others bind a free port).

Tokens at rest: when TOKEN_ENCRYPTION_KEY is not set, the runner reads it from TOKEN_KEY_FILE (default
`.kimi-gateway/token_encryption.key`), creating a Fernet key there (mode 0600) on first start, so accounts saved
through `make run` are encrypted and stay readable on every later start. Keep the file: it is the only key.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.fernet import Fernet

from shared.logging import hide_password, redact_text
from shared.redis_server import RedisHandle, ensure_redis

READY_TIMEOUT_S = 60.0
#: Where `make run` keeps the token encryption key it made, relative to the directory it runs in.
DEFAULT_KEY_FILE = ".kimi-gateway/token_encryption.key"
STOP_TIMEOUT_S = 15.0


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]


@dataclass
class Stack:
    children: list[Child] = field(default_factory=list)
    redis: RedisHandle | None = None

    def start(self, name: str, args: list[str], env: Mapping[str, str]) -> Child:
        # A session of its own: a terminal's Ctrl-C must not stop it before the runner's ordered shutdown.
        process = subprocess.Popen([sys.executable, *args], env=dict(env), start_new_session=True)
        child = Child(name, process)
        self.children.append(child)
        return child

    def dead_child(self) -> Child | None:
        return next((c for c in self.children if c.process.poll() is not None), None)

    def stop(self) -> None:
        for child in reversed(self.children):
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
                try:
                    child.process.wait(timeout=STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    child.process.kill()
                    child.process.wait()
        self.children.clear()
        if self.redis is not None:
            self.redis.stop()
            self.redis = None


def ensure_token_key(env: MutableMapping[str, str]) -> tuple[Path, bool] | None:
    """Put a TOKEN_ENCRYPTION_KEY into `env` from its key file, creating the file (0600) when it is missing;
    the file and whether it was made now, or None when the environment sets a key itself."""
    if env.get("TOKEN_ENCRYPTION_KEY", "").strip():
        return None
    path = Path(env.get("TOKEN_KEY_FILE") or DEFAULT_KEY_FILE)
    created = not path.exists()
    if created:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as out:
            out.write(Fernet.generate_key() + b"\n")
    elif path.stat().st_mode & 0o077:
        path.chmod(0o600)  # a key others may read is no key: tighten it
    env["TOKEN_ENCRYPTION_KEY"] = path.read_text().strip()
    return path, created


def _get(url: str, timeout_s: float = 1.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def _post_json(url: str, payload: dict[str, object], timeout_s: float = 5.0) -> dict[str, object]:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        result: dict[str, object] = json.loads(response.read())
        return result


def _wait_ready(stack: Stack, url: str, what: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        dead = stack.dead_child()
        if dead is not None:
            raise RuntimeError(f"{dead.name} exited with code {dead.process.returncode} while starting")
        status, _ = _get(url)
        if status == 200:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not become ready at {url} within {READY_TIMEOUT_S:.0f} s")


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _demo_instructions(gateway_url: str) -> str:
    return f"""
================================================================================
 Kimi gateway demo is up: {gateway_url}  (Kimi simulator behind it, demo account saved)

 In a browser:  {gateway_url}/  (API docs, try it)   {gateway_url}/playground  (chat)
                {gateway_url}/admin  (operator console)

 curl:
   curl -N {gateway_url}/v1/chat/completions \\
     -H 'Content-Type: application/json' \\
     -d '{{"model": "kimi", "stream": true, "messages": [{{"role": "user", "content": "Hello"}}]}}'

 Python (pip install openai):
   from openai import OpenAI
   client = OpenAI(base_url="{gateway_url}/v1", api_key="demo")
   reply = client.chat.completions.create(
       model="kimi-k2.5-thinking", messages=[{{"role": "user", "content": "Hello"}}])
   print(reply.choices[0].message.content)

 Ctrl-C stops everything.
================================================================================
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--demo", action="store_true", help="also run the Kimi simulator with a demo account")
    parser.add_argument("--workers", type=int, default=int(os.environ.get("WORKERS", "1")))
    parser.add_argument("--sim-port", type=int, default=int(os.environ.get("SIM_PORT", "9000")))
    args = parser.parse_args(argv)

    env = dict(os.environ)
    env.setdefault("LOG_FORMAT", "console")
    env.setdefault("PYTHONUNBUFFERED", "1")
    gateway_port = int(env.get("GATEWAY_PORT", "8000"))
    token_port = int(env.get("TOKEN_SERVICE_PORT", "8001"))
    worker_port = env.get("WORKER_METRICS_PORT", "8002")
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    # The gateway forwards the admin routes to the token service this runner starts, wherever it listens.
    env["TOKEN_SERVICE_URL"] = f"http://127.0.0.1:{token_port}"

    stack = Stack()
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        kept = ensure_token_key(env)
        if kept is not None:
            path, created = kept
            _say(f"tokens encrypted at rest with the key in {path} ({'created now' if created else 'kept'})")
        stack.redis = ensure_redis(env.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
        env["REDIS_URL"] = stack.redis.url
        _say(f"redis: {'embedded at ' if stack.redis.embedded else ''}{hide_password(stack.redis.url)}")
        if args.demo:
            sim_url = f"http://127.0.0.1:{args.sim_port}"
            env["KIMI_BASE_URL"] = sim_url
            stack.start("simulator", ["-m", "kimi_sim", "--port", str(args.sim_port)], env)
            _wait_ready(stack, f"{sim_url}/__sim/state", "the Kimi simulator")
        stack.start("token_service", ["-m", "token_service"], env)
        for index in range(max(1, args.workers)):
            worker_env = {**env, "WORKER_METRICS_PORT": worker_port if index == 0 else "0"}
            stack.start(f"worker-{index}", ["-m", "upstream_worker"], worker_env)
        stack.start("gateway", ["-m", "gateway"], env)
        _wait_ready(stack, f"http://127.0.0.1:{token_port}/healthz", "the token service")
        _wait_ready(stack, f"{gateway_url}/readyz", "the gateway")
        if args.demo:
            minted = _post_json(f"{sim_url}/__sim/accounts", {"kind": "refresh_token"})
            saved = _post_json(f"http://127.0.0.1:{token_port}/auth/save", {"token": minted["token"]})
            _say(f"demo account saved: {saved.get('account_id')}")
            _say(_demo_instructions(gateway_url))
        else:
            _say(
                f"gateway ready at {gateway_url} — add a Kimi account in the console ({gateway_url}/admin) or with"
                f" POST {gateway_url}/auth/save; API docs at {gateway_url}/, a chat at {gateway_url}/playground"
            )
        while not stopping:
            dead = stack.dead_child()
            if dead is not None:
                _say(f"{dead.name} exited with code {dead.process.returncode}; stopping everything")
                return 1
            time.sleep(0.25)
        return 0
    except (RuntimeError, OSError, urllib.error.URLError) as exc:
        _say(f"could not start: {redact_text(str(exc))}")
        return 1
    finally:
        _say("stopping…")
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
