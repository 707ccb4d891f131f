"""The simulator as a real HTTP server on a loopback port, for `python -m kimi_sim`, `make demo` and the tests."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from .app import SIM_STATE, create_app
from .config import SimConfig
from .state import REGION_PREFIXES, SimState

#: Seconds a stopping simulator waits for open streams before cancelling them.
SHUTDOWN_TIMEOUT_S = 0.5


@dataclass
class SimServer:
    url: str
    state: SimState
    runner: web.AppRunner

    @property
    def config(self) -> SimConfig:
        return self.state.config

    @property
    def global_url(self) -> str:
        """The international region's origin (www.kimi.ai); `url` itself is the China region (www.kimi.com)."""
        return self.url + REGION_PREFIXES["global"]

    async def aclose(self) -> None:
        await self.runner.cleanup()


async def start_sim(config: SimConfig | None = None, host: str = "127.0.0.1", port: int = 0) -> SimServer:
    """A started simulator; `aclose()` it when done."""
    app = create_app(config)
    runner = web.AppRunner(app, shutdown_timeout=SHUTDOWN_TIMEOUT_S, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_host, bound_port = runner.addresses[0][:2]
    return SimServer(f"http://{bound_host}:{bound_port}", app[SIM_STATE], runner)
