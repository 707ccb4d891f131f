"""`python -m upstream_worker`: consume jobs until SIGTERM / SIGINT, then drain (finish and ack in-flight).

WORKER_METRICS_PORT=0 binds a free port (several workers on one machine); the bound port is logged.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from aiohttp import web

from shared.logging import configure_logging, get_logger
from shared.runtime import install_event_loop
from shared.settings import WorkerSettings
from upstream_worker.app import WORKER_TASK, create_app

log = get_logger("upstream_worker")


async def serve(settings: WorkerSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(create_app(settings), handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.metrics_port)
        await site.start()
        log.info("worker_started", consumer=settings.consumer_name, metrics_port=_bound_port(runner))
        stopped = asyncio.create_task(_wait(stop))
        await asyncio.wait({stopped, runner.app[WORKER_TASK]}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        log.info("worker_draining", consumer=settings.consumer_name)
    finally:
        await runner.cleanup()
    log.info("worker_stopped", consumer=settings.consumer_name)


async def _wait(event: asyncio.Event) -> None:
    await event.wait()


def _bound_port(runner: web.AppRunner) -> int | None:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return None


def main() -> int:
    settings = WorkerSettings.from_env()
    configure_logging(settings.common.log_level, settings.common.log_format, service="upstream_worker")
    install_event_loop()
    asyncio.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
