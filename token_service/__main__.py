"""`python -m token_service` serves the admin API on TOKEN_SERVICE_PORT; `… accounts …` and `… keys …` are the CLI."""

from __future__ import annotations

import sys

from aiohttp import web

from shared.logging import configure_logging
from shared.runtime import install_event_loop
from shared.settings import TokenServiceSettings
from token_service.app import create_app
from token_service.cli import build_parser, run_cli


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    settings = TokenServiceSettings.from_env()
    common = settings.common
    configure_logging(common.log_level, common.log_format, service="token_service")
    if args.command in ("accounts", "keys"):
        return run_cli(args, settings)
    install_event_loop()
    web.run_app(create_app(settings), host=settings.host, port=settings.port, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
