"""The operator's console (`GET /admin`) in a real headless Chromium against the full stack (token service,
gateway, worker, Kimi simulator): the admin key typed in the page, an account pasted, disabled and enabled, the
system panel, a client key created (its secret shown once), its request in the log."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from kimi_sim.server import SimServer
from shared.client_keys import RequestRecord, record_request
from shared.secret import Secret
from shared.settings import CommonSettings
from tests.browser import Browser, Page
from tests.stack import Stack, StackFactory, stack_factory

__all__ = ["stack_factory"]  # the fixture, imported for pytest

KEY = "console-admin-key"
#: 30 days less half an hour: the countdown reads "29 d 23 h" for the next 30 minutes.
EXP_IN_S = 30 * 86400 - 1800
MODEL = "kimi-k2.5-instant"
ROW = '#accounts-table tr[data-key="{}"]'


def countdown(seconds_left: int) -> str:
    """The console's expiry format (console.js `countdown`), for the assertions."""
    days, rest = divmod(seconds_left, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} m"
    return f"{minutes} m {seconds} s"


async def api(stack: Stack, method: str, path: str, **kw: Any) -> Any:
    """The gateway's admin API with the admin key, as a script would call it."""
    headers = {"Authorization": f"Bearer {KEY}"}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, stack.url + path, headers=headers, **kw) as resp,
    ):
        assert resp.status < 300, await resp.text()
        return await resp.json()


async def cell(page: Page, selector: str) -> str:
    return str(await page.text(selector))


async def test_console_manages_accounts_keys_and_shows_the_system(
    browser: Browser, stack_factory: StackFactory, redis_url: str, kimi_sim: SimServer
) -> None:
    """With ADMIN_API_KEY set the page first shows the API's own 401; with the key typed in it adds a pasted
    kimi-auth JWT (kind, state, an expiry countdown from the token's exp), disables and enables it as the API
    then reports, shows a live worker, creates a client key whose secret is shown once and works, lists that
    key's request in the log and its usage, revokes the key (its secret stops), probes and removes the account."""
    common = CommonSettings(redis_url=redis_url, kimi_base_url=kimi_sim.url, admin_api_key=Secret(KEY))
    stack = await stack_factory(common=common, worker_overrides={"consumer_name": "console-worker"})
    page = await browser.page()
    await page.goto(f"{stack.url}/admin")
    await page.wait_text(
        "#error",
        "HTTP 401: admin key missing or wrong (Authorization: Bearer <key> or X-Admin-Key)"
        " — enter the admin key above.",
    )

    await page.fill("#admin-key", KEY)
    await page.click("#key-save")
    await page.wait_js("return document.getElementById('error').hidden")
    await page.wait_js("return !document.getElementById('accounts-empty').hidden")
    assert await page.js("return sessionStorage.getItem('kimi-gateway.admin-key')") == KEY

    sim_account = kimi_sim.state.add_account("kimi_auth", exp_in_s=EXP_IN_S, region="global")
    await page.fill("#add-text", sim_account.token)
    await page.click("#add-submit")
    (account,) = await _accounts_when(stack, 1)
    row = ROW.format(account["id"])
    await page.wait_text(f"{row} .c-state", "active")
    assert await page.text("#add-result") == f"Added 1: kimi_auth {account['id']}"
    assert await page.js("return document.getElementById('add-text').value") == ""
    assert await cell(page, f"{row} .c-kind") == "kimi_auth"
    assert await cell(page, f"{row} .c-region") == account["region"] == "global"
    assert account["exp"] == sim_account.exp
    assert (
        await cell(page, f"{row} .c-expiry") == countdown(sim_account.exp - int(time.time())) == "29 d 23 h"
    )
    assert await page.js(f"return document.querySelector('{row} .c-expiry').title") == account["expires_at"]
    assert await cell(page, f"{row} .c-error") == "—"
    assert await cell(page, f"{row} .c-used") == "never"
    assert sim_account.token not in await page.js("return document.documentElement.outerHTML")

    await page.click(f"{row} button[data-action=disable]")
    await page.wait_text(f"{row} .c-state", "disabled")
    assert [a["state"] for a in await _accounts_when(stack, 1)] == ["disabled"]
    assert await cell(page, f"{row} button[data-action=enable]") == "Enable"
    await page.screenshot("console")
    await page.click(f"{row} button[data-action=enable]")
    await page.wait_text(f"{row} .c-state", "active")
    assert [a["state"] for a in await _accounts_when(stack, 1)] == ["active"]

    await page.click("#tab-system")
    await page.wait_text('#workers-table tr[data-key="console-worker"]', "yes")
    assert int(await cell(page, "#sys-alive")) >= 1
    assert await cell(page, "#sys-stream") == "0"
    assert await page.js(
        "return Array.from(document.querySelectorAll('#states-table tbody tr'), r => r.textContent)"
    ) == ["active1", "cooling0", "invalid0", "expired0", "disabled0"]
    await page.screenshot("console-system")

    await page.click("#tab-keys")
    await page.fill("#key-name", "ci-bot")
    await page.fill("#key-rpm", "60")
    await page.fill("#key-models", f"{MODEL}, kimi")
    await page.click("#key-submit")
    secret = await page.wait_js(
        "const s = document.getElementById('new-secret');"
        "return s.hidden ? null : document.getElementById('new-secret-value').textContent;"
    )
    assert secret.startswith("kgw-")
    assert await cell(page, "#new-secret-name") == "ci-bot"
    (key,) = (await api(stack, "GET", "/admin/keys"))["keys"]
    assert (key["name"], key["requests_per_minute"], key["models"]) == ("ci-bot", 60, [MODEL, "kimi"])
    key_row = f'#keys-table tr[data-key="{key["id"]}"]'
    await page.wait_text(f"{key_row} .c-status", "enabled")
    assert await cell(page, f"{key_row} .c-rpm") == "60"
    assert await cell(page, f"{key_row} .c-models") == f"{MODEL}, kimi"
    assert await cell(page, f"{key_row} .c-expires") == "never"
    await page.screenshot("console-keys")
    await page.click("#new-secret-hide")
    assert await page.js("return document.getElementById('new-secret').hidden") is True
    assert secret not in await page.js("return document.documentElement.outerHTML")

    await _chat(stack, secret)
    await page.click("#tab-requests")
    await page.wait_js("return document.querySelectorAll('#requests-table tbody tr').length === 1")
    texts = await page.js(
        "return Array.from(document.querySelector('#requests-table tbody tr').cells, c => c.textContent)"
    )
    assert texts[1:5] == ["ci-bot", "openai", MODEL, "200"]
    assert texts[8] == account["id"]
    await page.screenshot("console-requests")
    await page.fill("#log-status", "500")
    await page.click("#log-filter button[type=submit]")
    await page.wait_js("return !document.getElementById('requests-empty').hidden")
    assert await page.js("return document.querySelectorAll('#requests-table tbody tr').length") == 0
    await page.click("#tab-keys")
    await page.click(f"{key_row} button[data-action=usage]")
    await page.wait_js("return document.querySelectorAll('#usage-table tbody tr').length === 1")
    usage = await page.js(
        "return Array.from(document.querySelector('#usage-table tbody tr').cells, c => c.textContent)"
    )
    assert usage[1:4] == [MODEL, "1", "0"]

    await page.click(f"{key_row} button[data-action=disable]")
    await page.wait_text(f"{key_row} .c-status", "disabled")
    assert (await api(stack, "GET", f"/admin/keys/{key['id']}"))["key"]["enabled"] is False
    await page.click(f"{key_row} button[data-action=enable]")
    await page.wait_text(f"{key_row} .c-status", "enabled")
    await page.js("window.confirm = () => true")  # the confirmations, answered yes
    await page.click(f"{key_row} button[data-action=revoke]")
    await page.wait_text(f"{key_row} .c-status", "revoked")
    assert (await api(stack, "GET", f"/admin/keys/{key['id']}"))["key"]["revoked"] is True
    await _chat(stack, secret, status=401)
    await page.click("#tab-accounts")
    await page.wait_js(f"return /^\\d+ s ago$/.test(document.querySelector('{row} .c-used').textContent)")
    await page.click(f"{row} button[data-action=probe]")
    await page.wait_text("#probe-result", f"{account['id']}: ok")
    await page.click("#probe-all")
    await page.wait_text("#probe-result", "Probed 1: ok 1")
    await page.click(f"{row} button[data-action=remove]")
    await page.wait_js("return !document.getElementById('accounts-empty').hidden")
    assert await _accounts_when(stack, 0) == []
    assert [m for m in await page.console() if "SEVERE" in m and "401" not in m] == []


async def test_without_an_admin_key_the_local_console_works(
    browser: Browser, stack_factory: StackFactory
) -> None:
    """With no ADMIN_API_KEY, the page at http://127.0.0.1:PORT is a local caller: it lists and adds accounts
    (its POSTs carry its own Origin) with no key typed in; the Kimi site picked in the form is saved as the
    account's own origin (here the simulator's, added to the list: the real sites are not reachable)."""
    stack = await stack_factory()
    page = await browser.page()
    await page.goto(f"{stack.url}/admin#accounts")
    await page.wait_js("return !document.getElementById('accounts-empty').hidden")
    assert await page.js("return [...document.getElementById('add-origin').options].map(o => o.value)") == [
        "",
        "https://www.kimi.com",
        "https://www.kimi.ai",
    ]
    await page.js(
        "const s = document.getElementById('add-origin'); s.add(new Option('sim', arguments[0])); s.value = arguments[0];",
        stack.sim.url,
    )
    await page.fill("#add-text", stack.sim.state.add_account("refresh_token").token)
    await page.click("#add-submit")
    (account,) = await _accounts_when(stack, 1)
    assert account["base_url"] == stack.sim.url
    await page.wait_text(f"{ROW.format(account['id'])} .c-kind", "refresh_token")
    assert await page.js("return document.getElementById('error').hidden") is True


async def test_the_request_log_pages_through_next_and_filters(
    browser: Browser, stack_factory: StackFactory, redis: aioredis.Redis
) -> None:
    """60 logged requests: the newest 50 first, "Older" follows the API's `next` to the last 10, "Newest" comes
    back; a status filter shows only its 30 on one page."""
    stack = await stack_factory()
    now = time.time()
    for n in range(60):
        record = RequestRecord(
            t=now - 60 + n,
            request_id=f"req-{n}",
            key="pager",
            key_id="",
            dialect="openai",
            model=MODEL,
            status=200 if n % 2 else 429,
            error="" if n % 2 else "rate_limited",
            account="",
            duration_ms=5.0,
            ttft_ms=None,
            prompt_tokens=1,
            completion_tokens=0,
            estimated=True,
        )
        await record_request(redis, record)
    page = await browser.page()
    await page.goto(f"{stack.url}/admin#requests")
    rows = "Array.from(document.querySelectorAll('#requests-table tbody tr'), r => r.title)"
    titles = f"return {rows}"
    await page.wait_js(f"return {rows}.length === 50")
    assert await page.js(titles) == [f"req-{n}" for n in range(59, 9, -1)]
    await page.click("#log-next")
    await page.wait_js(f"return {rows}.length === 10")
    assert await page.js(titles) == [f"req-{n}" for n in range(9, -1, -1)]
    assert await page.js("return document.getElementById('log-next').disabled") is True
    await page.click("#log-first")
    await page.wait_js(f"return {rows}[0] === 'req-59'")
    await page.fill("#log-status", "429")
    await page.click("#log-filter button[type=submit]")
    await page.wait_js(f"return {rows}[0] === 'req-58'")
    assert await page.js(titles) == [f"req-{n}" for n in range(58, -1, -2)]
    assert await page.js("return document.getElementById('log-next').disabled") is True


async def _accounts_when(stack: Stack, count: int) -> list[dict[str, Any]]:
    """The API's account list once it holds `count` accounts (the page's POST may still be on its way)."""
    deadline = time.monotonic() + 10
    while True:
        accounts: list[dict[str, Any]] = (await api(stack, "GET", "/admin/accounts"))["accounts"]
        if len(accounts) == count or time.monotonic() > deadline:
            assert len(accounts) == count, json.dumps(accounts)
            return accounts
        await asyncio.sleep(0.05)


async def _chat(stack: Stack, secret: str, status: int = 200) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{stack.url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {secret}"}
        ) as resp,
    ):
        assert resp.status == status, await resp.text()
