"""Pass-through tokens end to end (real Redis, the simulator, token service, gateway and worker): Kimi refusing
the caller's only token is the caller's 401, in its own dialect."""

from __future__ import annotations

import aiohttp
import openai
import pytest

from tests.stack import StackFactory, stack_factory

__all__ = ["stack_factory"]


@pytest.mark.parametrize("kind", ["refresh_token", "kimi_auth"])
async def test_a_dead_passthrough_token_is_a_401_in_the_callers_dialect(
    stack_factory: StackFactory, kind: str
) -> None:
    """A revoked pass-through token (the only one) answers 401: OpenAI's AuthenticationError, Anthropic's
    authentication_error; never a 502/503 that blames the gateway."""
    stack = await stack_factory(request_timeout_s=20.0)
    account = stack.sim.state.add_account(kind)  # type: ignore[arg-type]
    assert stack.sim.state.revoke(account.sub)
    client = openai.AsyncOpenAI(base_url=f"{stack.url}/v1", api_key=account.token, max_retries=0, timeout=15)
    with pytest.raises(openai.AuthenticationError) as caught:
        await client.chat.completions.create(model="kimi", messages=[{"role": "user", "content": "hi"}])
    await client.close()
    assert caught.value.status_code == 401
    assert isinstance(caught.value.body, dict)
    assert str(caught.value.body["message"]).startswith("Kimi refused the pass-through token (")
    assert account.token not in str(caught.value.body)
    body = {"model": "kimi", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{stack.url}/v1/messages", json=body, headers={"x-api-key": account.token}) as resp,
    ):
        answer = await resp.json()
    assert resp.status == 401 and answer["error"]["type"] == "authentication_error"
