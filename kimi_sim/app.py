"""Builds the simulator app: REST, Connect, the official API and control routes over one `SimState`."""

from __future__ import annotations

from aiohttp import web

from . import connect_unary, control, file_service, official, rest
from .common import SIM_STATE
from .config import K1_KIMIPLUS_ID, SimConfig
from .state import REGION_PREFIXES, SimState

__all__ = ["K1_KIMIPLUS_ID", "SIM_STATE", "SimConfig", "create_app"]


def create_app(config: SimConfig | None = None, state: SimState | None = None) -> web.Application:
    """The root is www.kimi.com (China region); the same web surface under `/kimi-ai` is www.kimi.ai
    (international). Both share one state; each refuses the other region's tokens."""
    app = web.Application(
        middlewares=[control.log_requests, control.http_faults], client_max_size=200 * 2**20
    )
    app[SIM_STATE] = state or SimState(config or SimConfig())
    _add_web_routes(app)
    app.add_routes(official.routes())
    app.add_routes(control.routes())
    international = web.Application(client_max_size=200 * 2**20)
    international[SIM_STATE] = app[SIM_STATE]
    _add_web_routes(international)
    app.add_subapp(REGION_PREFIXES["global"], international)
    return app


def _add_web_routes(app: web.Application) -> None:
    app.add_routes(rest.routes())
    app.add_routes(connect_unary.routes())
    app.add_routes(file_service.routes())
