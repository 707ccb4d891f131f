"""`python -m kimi_sim --port 9000 [--host H] [--chunks N] [--chunk-delay-ms MS] [--demo-account]`.

With `--demo-account` it mints one refresh_token account and one kimi-auth account first and prints each as a
JSON line (`{"kind","token","sub","exp"}`) on stdout, so a runner script can save them.
"""

from __future__ import annotations

import argparse
import sys

import msgspec
from aiohttp import web

from .app import SIM_STATE, create_app
from .config import SimConfig


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m kimi_sim", description="Kimi web API simulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--chunks", type=int, default=SimConfig.chunk_count)
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0)
    parser.add_argument("--access-ttl-s", type=int, default=SimConfig.access_ttl_s)
    parser.add_argument("--max-streams-per-user", type=int, default=SimConfig.max_streams_per_user)
    parser.add_argument("--demo-account", action="store_true", help="mint and print two demo accounts")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    config = SimConfig(
        chunk_count=args.chunks,
        chunk_delay_s=args.chunk_delay_ms / 1000,
        access_ttl_s=args.access_ttl_s,
        max_streams_per_user=args.max_streams_per_user,
    )
    app = create_app(config)
    if args.demo_account:
        for kind in ("refresh_token", "kimi_auth"):
            account = app[SIM_STATE].add_account(kind)
            line = {"kind": account.kind, "token": account.token, "sub": account.sub, "exp": account.exp}
            sys.stdout.write(msgspec.json.encode(line).decode() + "\n")
        sys.stdout.flush()
    print(f"kimi simulator on http://{args.host}:{args.port}", file=sys.stderr, flush=True)
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None, shutdown_timeout=1.0)


if __name__ == "__main__":
    main()
