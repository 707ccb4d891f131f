"""The worker process as an app: `/metrics` and `/healthz` on WORKER_METRICS_PORT; the worker runs behind."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from shared.metrics import metrics_handler
from shared.settings import WorkerSettings
from upstream_worker.resources import open_worker
from upstream_worker.worker import Worker

SETTINGS: web.AppKey[WorkerSettings] = web.AppKey("settings", WorkerSettings)
WORKER: web.AppKey[Worker] = web.AppKey("worker", Worker)
WORKER_TASK: web.AppKey[asyncio.Task[None]] = web.AppKey("worker_task", asyncio.Task)


def create_app(settings: WorkerSettings) -> web.Application:
    app = web.Application()
    app[SETTINGS] = settings
    app.cleanup_ctx.append(_worker_ctx)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/healthz", healthz)
    return app


async def _worker_ctx(app: web.Application) -> AsyncIterator[None]:
    async with open_worker(app[SETTINGS]) as worker:
        app[WORKER] = worker
        app[WORKER_TASK] = asyncio.create_task(worker.run())
        yield
        # Graceful drain: stop reading, finish and ack what is in flight. How the task ended (a failure is
        # the process's exit code, upstream_worker/__main__.py) is not a cleanup error.
        await worker.aclose()
        await asyncio.wait({app[WORKER_TASK]})


async def healthz(request: web.Request) -> web.Response:
    """200 while the worker loop runs, 503 once it stopped (drained or crashed)."""
    worker, task = request.app[WORKER], request.app[WORKER_TASK]
    serving = worker.serving and not task.done()
    body = {"ok": serving, "consumer": worker.queue.consumer, "in_flight": worker.in_flight}
    return web.json_response(body, status=200 if serving else 503)
