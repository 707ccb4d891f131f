"""Operator CLI on Redis directly: `python -m token_service accounts list|add|import|remove|probe`.

accounts list                 one line per account: id, kind, state, user, expiry, hours left
accounts add TOKEN [--base-url URL]   a credential of any kind (a kimi-auth JWT, a refresh_token, a pasted
                                     cookie, an API key sk-…[@base]); --base-url: its own Kimi origin instead of its region's
accounts import FILE          one token per line (`-` reads stdin); blank lines and `#` comments skipped
accounts remove ID
accounts probe [ID]           one account, or every account that is not disabled

keys create NAME [--models M1,M2] [--rpm N] [--tpm N] [--tpd N] [--concurrency N] [--expires-days D]
                              a managed client key (shared/client_keys.py); prints its secret, once
keys list                     one line per key: id, name, state, models, limits
keys revoke ID | keys rotate ID (prints the new secret, once) | keys delete ID
keys usage ID [--days N]      usage per day and model, as JSON
keys requests [--key NAME] [--status N] [--model M] [--limit N]   the request log, newest first, as JSON
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import msgspec

from shared.client_keys import ClientKey, ClientKeys, key_usage, read_requests
from shared.errors import GatewayError
from shared.redis_client import make_redis
from shared.settings import TokenServiceSettings
from token_service import prober
from token_service.accounts import Accounts
from token_service.admin import KeyCreateBody
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
    _key_parser(commands)
    return parser


def _key_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = commands.add_parser("keys", help="manage the managed client keys in Redis")
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create")
    create.add_argument("name")
    create.add_argument("--models", help="comma-separated model ids the key may use (default: all)")
    create.add_argument("--rpm", type=int, dest="requests_per_minute")
    create.add_argument("--tpm", type=int, dest="tokens_per_minute", help="estimated tokens per minute")
    create.add_argument("--tpd", type=int, dest="tokens_per_day", help="estimated tokens per day")
    create.add_argument("--concurrency", type=int, dest="concurrent_requests")
    create.add_argument("--expires-days", type=float)
    actions.add_parser("list")
    for name in ("revoke", "rotate", "delete"):
        actions.add_parser(name).add_argument("key_id")
    usage = actions.add_parser("usage")
    usage.add_argument("key_id")
    usage.add_argument("--days", type=int, default=7)
    requests = actions.add_parser("requests")
    requests.add_argument("--key")
    requests.add_argument("--status", type=int)
    requests.add_argument("--model")
    requests.add_argument("--limit", type=int, default=20)


def run_cli(args: argparse.Namespace, settings: TokenServiceSettings) -> int:
    if args.action == "import":
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
        args.lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    return asyncio.run(_run(args, settings))


async def _run(args: argparse.Namespace, settings: TokenServiceSettings) -> int:
    redis = make_redis(settings.common, max_connections=4)
    try:
        if args.command == "keys":
            return await _keys(ClientKeys(redis), args)
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


async def _keys(store: ClientKeys, args: argparse.Namespace) -> int:
    """The `keys` commands; the same validation as POST /admin/keys."""
    match args.action:
        case "create":
            fields = {
                "name": args.name,
                "models": args.models.split(",") if args.models else None,
                "requests_per_minute": args.requests_per_minute,
                "tokens_per_minute": args.tokens_per_minute,
                "tokens_per_day": args.tokens_per_day,
                "concurrent_requests": args.concurrent_requests,
                "expires_s": time.time() + args.expires_days * 86400 if args.expires_days else None,
            }
            try:
                body = msgspec.convert(fields, KeyCreateBody)
            except msgspec.ValidationError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            template = ClientKey(id="", name=body.name, secret_hash="", created_s=time.time())
            key, secret = await store.create(msgspec.structs.replace(template, **_key_fields(body)))
            print(f"created {key.id}  {key.name}")
            print(f"secret (shown once): {secret}")
        case "list":
            keys = await store.list()
            if not keys:
                print("no keys (create one: python -m token_service keys create NAME)")
            for k in keys:
                state = "revoked" if k.revoked else "enabled" if k.enabled else "disabled"
                limits = " ".join(
                    f"{n}={getattr(k, f)}"
                    for n, f in (
                        ("rpm", "requests_per_minute"),
                        ("tpm", "tokens_per_minute"),
                        ("tpd", "tokens_per_day"),
                        ("concurrency", "concurrent_requests"),
                    )
                    if getattr(k, f) is not None
                )
                print(f"{k.id}  {k.name:<20}  {state:<8}  {','.join(k.models or ['*'])}  {limits or '-'}")
        case "revoke" | "rotate" | "delete" | "usage":
            found = await store.get(args.key_id)
            if found is None:
                print(f"error: no client key {args.key_id!r}", file=sys.stderr)
                return 1
            return await _key_action(store, found, args)
        case "requests":
            lines, _ = await read_requests(
                store.redis, limit=args.limit, before=None, key=args.key, status=args.status, model=args.model
            )
            print(json.dumps(lines, indent=2))
    return 0


async def _key_action(store: ClientKeys, key: ClientKey, args: argparse.Namespace) -> int:
    match args.action:
        case "revoke":
            await store.save(msgspec.structs.replace(key, revoked=True, enabled=False))
            print(f"revoked {key.id}")
        case "rotate":
            _, secret = await store.rotate(key)
            print(f"rotated {key.id}")
            print(f"secret (shown once): {secret}")
        case "delete":
            await store.delete(key)
            print(f"deleted {key.id}")
        case "usage":
            usage = await key_usage(store.redis, key.id, args.days, time.time())
            print(json.dumps({"key": key.public(), "days": usage}, indent=2))
    return 0


def _key_fields(body: KeyCreateBody) -> dict[str, object]:
    names = ("models", "requests_per_minute", "tokens_per_minute", "tokens_per_day", "concurrent_requests")
    return {name: getattr(body, name) for name in (*names, "expires_s", "enabled", "window_s")}
