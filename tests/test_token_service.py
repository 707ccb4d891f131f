"""The token service process: its background prober, and the operator CLI working on Redis directly."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient

from kimi_sim.server import SimServer
from shared.keys import ACCOUNT_INDEX
from shared.settings import CommonSettings, PoolSettings, TokenServiceSettings
from token_service.app import ACCOUNTS, create_app

ROOT = Path(__file__).resolve().parent.parent
ClientFactory = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


async def test_background_prober_returns_a_cooled_account(
    aiohttp_client: ClientFactory, redis_url: str, kimi_sim: SimServer
) -> None:
    """With the service running, a cooling account whose time is up becomes active with no request."""
    common = CommonSettings(redis_url=redis_url, kimi_base_url=kimi_sim.url)
    settings = TokenServiceSettings(common=common, pool=PoolSettings(probe_interval_s=0.05))
    client = await aiohttp_client(create_app(settings))
    pool = client.app[ACCOUNTS]
    account, _ = await pool.add(kimi_sim.state.add_account("kimi_auth").token)
    await pool.release(await pool.lease(), "overloaded", retry_after_s=0.1)
    assert (await pool.get(account.id)).state == "cooling"
    for _ in range(40):
        await asyncio.sleep(0.05)
        if (await pool.get(account.id)).state == "active":
            break
    assert (await pool.get(account.id)).state_reason == "probe_ok"


#: Everything the CLI printed in this session, checked for whole tokens.
PRINTED: list[str] = []


async def cli(redis_url: str, kimi_url: str, *args: str, stdin: bytes = b"") -> tuple[int, str, str]:
    env = {**os.environ, "REDIS_URL": redis_url, "KIMI_BASE_URL": kimi_url, "LOG_FORMAT": "json"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "token_service",
        "accounts",
        *args,
        cwd=ROOT,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), timeout=20)
    PRINTED.extend([out.decode(), err.decode()])
    return proc.returncode or 0, out.decode(), err.decode()


async def test_cli_adds_imports_lists_probes_and_removes(
    redis_url: str, redis: aioredis.Redis, kimi_sim: SimServer, tmp_path: Path
) -> None:
    """`python -m token_service accounts …` manages the pool in Redis and never prints a whole token."""
    one = kimi_sim.state.add_account("kimi_auth")
    two = kimi_sim.state.add_account("refresh_token")
    code, out, err = await cli(redis_url, kimi_sim.url, "add", f"kimi-auth={one.token}")
    assert code == 0 and out.startswith("added ") and "kimi_auth" in out
    account_id = out.split()[1]
    import_file = tmp_path / "tokens.txt"
    import_file.write_text(f"# exported\n{two.token}\ngarbage\n")
    code, out, err = await cli(redis_url, kimi_sim.url, "import", str(import_file))
    assert code == 1 and "refresh_token" in out and "line 2: not a JWT" in err
    code, out, _ = await cli(redis_url, kimi_sim.url, "list")
    assert code == 0 and len(out.splitlines()) == 2 and one.sub in out and "active" in out
    code, out, _ = await cli(redis_url, kimi_sim.url, "probe", account_id)
    assert (code, out.strip()) == (0, f"{account_id}  ok")
    code, out, _ = await cli(redis_url, kimi_sim.url, "remove", account_id)
    assert (code, out.strip()) == (0, f"removed {account_id}")
    code, _, err = await cli(redis_url, kimi_sim.url, "remove", account_id)
    assert code == 1 and f"no account '{account_id}'" in err
    assert await redis.scard(ACCOUNT_INDEX) == 1
    assert all(one.token not in text and two.token not in text for text in PRINTED)


async def test_cli_add_takes_an_accounts_own_base_url(redis_url: str, kimi_sim: SimServer) -> None:
    """`accounts add TOKEN --base-url URL` stores the account's own origin, and `list` shows where it is called."""
    token = kimi_sim.state.add_account("kimi_auth", region="global").token
    code, out, _ = await cli(redis_url, kimi_sim.url, "add", token, "--base-url", "https://proxy.example/")
    assert code == 0 and out.startswith("added ")
    code, out, _ = await cli(redis_url, kimi_sim.url, "list")
    assert code == 0 and out.rstrip().endswith("  https://proxy.example")
    code, _, err = await cli(redis_url, kimi_sim.url, "add", token, "--base-url", "proxy.example")
    assert code == 1 and "base_url must be an http(s) origin" in err


async def test_accounts_of_the_untagged_layout_move_to_the_pool_keys_at_start(
    aiohttp_client: ClientFactory, redis_url: str, redis: aioredis.Redis, kimi_sim: SimServer
) -> None:
    """Accounts an older version stored as `kimi:acct:<id>` move under `kimi:acct:{pool}:` when the service starts."""
    common = CommonSettings(redis_url=redis_url, kimi_base_url=kimi_sim.url)
    settings = TokenServiceSettings(common=common, pool=PoolSettings())
    old = await aiohttp_client(create_app(settings, background=False))
    account, _ = await old.app[ACCOUNTS].add(kimi_sim.state.add_account("kimi_auth").token)
    held = await old.app[ACCOUNTS].lease()
    await old.close()
    for key in await redis.keys("kimi:acct:{pool}:*"):  # what the untagged layout had written
        await redis.rename(key, key.decode().replace("{pool}:", ""))
    assert (
        await redis.exists(f"kimi:acct:{account.id}", "kimi:acct:index", f"kimi:acct:lease:{account.id}") == 3
    )

    pool = (await aiohttp_client(create_app(settings, background=False))).app[ACCOUNTS]
    assert [a.id for a in await pool.list()] == [account.id]
    assert await pool.in_flight(account.id) == 1  # the lease held across the upgrade still counts
    await pool.release(held, "ok")
    lease = await pool.lease()
    assert lease.account_id == account.id
    assert {k.decode() for k in await redis.keys("kimi:acct:*")} <= {
        f"kimi:acct:{{pool}}:{name}"
        for name in (account.id, f"lease:{account.id}", "index", "ready", "cooling", "leases", "layout")
    }
