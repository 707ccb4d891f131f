"""`python -m gateway`: serve the gateway on GATEWAY_PORT, settings from the environment."""

from __future__ import annotations

from aiohttp import web

from gateway.app import create_app, exposure_warnings
from shared.logging import configure_logging, get_logger
from shared.runtime import install_event_loop
from shared.settings import GatewaySettings


def main() -> None:
    settings = GatewaySettings.from_env()
    configure_logging(settings.common.log_level, settings.common.log_format, service="gateway")
    for warning in exposure_warnings(settings):
        get_logger("gateway").warning("exposed", detail=warning)
    install_event_loop()
    web.run_app(create_app(settings), host=settings.host, port=settings.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
