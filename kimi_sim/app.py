"""Builds the simulator app: REST, Connect, the official API and control routes over one `SimState`."""

from __future__ import annotations

from aiohttp import web

from . import connect_unary, control, file_service, official, rest
from .common import SIM_STATE
from .config import K1_KIMIPLUS_ID, SimConfig
from .state import SimState

__all__ = ["K1_KIMIPLUS_ID", "SIM_STATE", "SimConfig", "create_app"]


def create_app(config: SimConfig | None = None, state: SimState | None = None) -> web.Application:
    app = web.Application(
        middlewares=[control.log_requests, control.http_faults], client_max_size=200 * 2**20
    )
    app[SIM_STATE] = state or SimState(config or SimConfig())
    app.add_routes(rest.routes())
    app.add_routes(connect_unary.routes())
    app.add_routes(file_service.routes())
    app.add_routes(official.routes())
    app.add_routes(control.routes())
    return app
