"""`python -m upstream_worker`: consume jobs until SIGTERM / SIGINT, then drain (finish and ack in-flight).

WORKER_METRICS_PORT=0 binds a free port (several workers on one machine); the bound port is logged. Exit code
0 after a drain; 1 when the worker itself failed (a loop died, Redis refused to create the group at start), so
that compose or systemd restarts it.
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


async def serve(settings: WorkerSettings) -> int:
    """Run the worker app until a signal or the worker's own end; the process's exit code."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(create_app(settings), handle_signals=False)
    await runner.setup()
    worker = runner.app[WORKER_TASK]
    try:
        site = web.TCPSite(runner, settings.host, settings.metrics_port)
        await site.start()
        log.info("worker_started", consumer=settings.consumer_name, metrics_port=_bound_port(runner))
        stopped = asyncio.create_task(_wait(stop))
        await asyncio.wait({stopped, worker}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not worker.done():
            log.info("worker_draining", consumer=settings.consumer_name)
    finally:
        await runner.cleanup()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    failure = worker.exception() if not worker.cancelled() else asyncio.CancelledError()
    if failure is not None:
        log.error("worker_failed", consumer=settings.consumer_name, exc_info=failure)
        return 1
    log.info("worker_stopped", consumer=settings.consumer_name)
    return 0


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
    return asyncio.run(serve(settings))


if __name__ == "__main__":
    sys.exit(main())
