"""Operator CLI on Redis directly: `python -m token_service accounts list|add|import|remove|probe`.

accounts list                 one line per account: id, kind, state, user, expiry, hours left
accounts add TOKEN [--base-url URL]   a credential of any kind (a kimi-auth JWT, a refresh_token, a pasted
                                     cookie, an API key sk-…[@base]); --base-url: its own Kimi origin instead of its region's
accounts import FILE          one token per line (`-` reads stdin); blank lines and `#` comments skipped
accounts remove ID
accounts probe [ID]           one account, or every account that is not disabled
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

import aiohttp

from shared.errors import GatewayError
from shared.redis_client import make_redis
from shared.settings import TokenServiceSettings
from token_service import prober
from token_service.accounts import Accounts
from token_service.store import Account


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m token_service", description="Kimi token service")
    commands = parser.add_subparsers(dest="command")
    accounts = commands.add_parser("accounts", help="manage the Kimi account pool in Redis")
    actions = accounts.add_subparsers(dest="action", required=True)
    actions.add_parser("list")
    add = actions.add_parser("add")
    add.add_argument("token")
    add.add_argument("--base-url", help="the account's own Kimi origin (default: its token's region's)")
    actions.add_parser("import").add_argument("file")
    actions.add_parser("remove").add_argument("account_id")
    actions.add_parser("probe").add_argument("account_id", nargs="?")
    return parser


def run_cli(args: argparse.Namespace, settings: TokenServiceSettings) -> int:
    if args.action == "import":
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
        args.lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    return asyncio.run(_run(args, settings))


async def _run(args: argparse.Namespace, settings: TokenServiceSettings) -> int:
    redis = make_redis(settings.common, max_connections=4)
    try:
        async with aiohttp.ClientSession() as session:
            accounts = Accounts(redis, settings.pool, session, settings.common.kimi_base_url)
            return await _dispatch(accounts, args)
    except GatewayError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    finally:
        await redis.aclose()


async def _dispatch(accounts: Accounts, args: argparse.Namespace) -> int:
    match args.action:
        case "list":
            _print_accounts(await accounts.list())
        case "add":
            return await _add(accounts, [args.token], args.base_url)
        case "import":
            return await _add(accounts, args.lines)
        case "remove":
            await accounts.remove(args.account_id)
            print(f"removed {args.account_id}")
        case "probe":
            ids = (
                [args.account_id]
                if args.account_id
                else [a.id for a in await accounts.list() if a.state != "disabled"]
            )
            for account_id in ids:
                print(f"{account_id}  {await prober.probe(accounts, account_id)}")
    return 0


async def _add(accounts: Accounts, lines: Sequence[str], base_url: str | None = None) -> int:
    failed = 0
    for number, line in enumerate(lines, start=1):
        try:
            account, created = await accounts.add(line, base_url)
        except GatewayError as exc:
            failed += 1
            print(f"line {number}: {exc.message}", file=sys.stderr)
            continue
        print(
            f"{'added' if created else 'updated'} {account.id}  {account.kind}  expires {account.expires_at}"
        )
    return 1 if failed else 0


_EMPTY_POOL_HINT = "no accounts (add one: python -m token_service accounts add <JWT>)"


def _print_accounts(accounts: Sequence[Account]) -> None:
    if not accounts:
        print(_EMPTY_POOL_HINT)
    for a in accounts:
        hours = f"{a.hours_left:.1f}h" if a.hours_left is not None else "-"
        user = a.user_id or "-"
        print(
            f"{a.id}  {a.kind:<13}  {a.state:<8}  {user:<20}  {a.expires_at or '-'}  {hours}  {a.preview}"
            f"  {a.origin or '-'}"
        )
