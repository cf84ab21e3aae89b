"""The aggregator's HTTP API v1: a thin Starlette app over :class:`Aggregator`.

Needs the ``server`` extra (starlette, uvicorn); nothing on a device imports
this module.  Routes (``sync/PROTOCOL.md`` §HTTP API):

- ``POST /v1/models/{model}/frames``: a signed msgpack frame; 200 accepted or
  duplicate, else 400/401/403/404/409/413/422/429/503 with
  ``{"error": message, "reason": code}``.
- ``GET /healthz``: ``{"status": "ok", "db": "ok"}``.
- ``POST /v1/models/{model}/fit`` and ``GET /v1/models/{model}``: admin only
  (``authorization: Bearer <token>``); 403 when no admin token is configured.
- ``GET /v1/models/{model}/centroids?device=ID`` (signed): the version this
  device should use, with ``ETag``; 304 on ``If-None-Match``.
- ``POST /v1/models/{model}/telemetry`` (signed): a telemetry summary.
- Admin: ``/v1/models/{model}/versions`` (publish, list),
  ``.../versions/{v}`` (one version), ``.../versions/{v}/canary``,
  ``.../versions/{v}/promote``, ``.../rollback``, ``.../pins``, ``.../drift``,
  ``.../policy`` and ``.../events``; ``POST /v1/admin/compact`` (run
  :meth:`Aggregator.compact` now; a timer also runs it every
  ``compact_interval`` seconds).
- ``GET /metrics``: Prometheus text format, no auth.
- ``GET /openapi.json``: ``sync/openapi.json``, the OpenAPI description of these routes.

Signed device requests (frames, telemetry, pulls) share the writer thread
and its group commits.  A timer evaluates the auto-publish policies every
``policy_interval`` seconds, in the thread pool.

The modules: :mod:`.routes` (module-level handlers), :mod:`.errors` (the one
exception -> (status, reason) mapping, as Starlette exception handlers),
:mod:`.admission` (admission control as middleware), :mod:`.committer` (the
group committer) and :mod:`.serving` (:func:`serve`, :class:`BackgroundServer`);
this module assembles them.

Frame uploads go through one writer thread that commits them in groups: all
uploads waiting when a transaction starts share it (each in its own
savepoint), and every request gets its answer only after the COMMIT that
made it durable.  Reads (fits, model info, health) run in the thread pool,
each thread on its own read connection.  No response ever carries a
traceback: unexpected errors are logged and answered 500.
"""

import asyncio
import logging
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware

from edgekm._validation import validate_params
from edgekm.sync.cloud.metrics import Metrics

from .admission import Admission
from .committer import MAX_BATCH, GroupCommitter
from .errors import EXCEPTION_HANDLERS, RETRY_AFTER_SECONDS, error_for
from .routes import LIMITED, MAX_JSON_BYTES, ROUTES

__all__ = ["create_app", "MAX_JSON_BYTES", "MAX_BATCH", "RETRY_AFTER_SECONDS",
           "ADMIN_TOKEN_ENV"]

logger = logging.getLogger("edgekm.sync.cloud.http.app")

ADMIN_TOKEN_ENV = "EDGEKM_ADMIN_TOKEN"


def create_app(aggregator, *, admin_token=None, max_concurrency=64, policy_interval=5.0,
               metrics_ttl=5.0, compact_interval=600.0, max_waiting=None, max_wait=1.0):
    """The Starlette application serving ``aggregator``.

    Parameters
    ----------
    aggregator : Aggregator
        Owned by the caller, who closes it after the app has shut down.
    admin_token : str or None, default=None
        Bearer token of the admin endpoints (fit, model info); None disables
        them (403).
    max_concurrency : int, default=64
        Requests in progress at once.  A request over the limit waits for a
        slot in a first-come, first-served queue (see ``max_waiting`` and
        ``max_wait``) and is answered 503 with Retry-After only when the queue
        is full or its wait runs out, so that a device that backed off is not
        overtaken forever by devices that send again at once.
    max_waiting : int or None, default=None
        Requests that may wait for a slot; None means ``4 * max_concurrency``.
    max_wait : float, default=1.0
        Seconds a request waits for a slot before its 503; 0 answers 503 at
        once when every slot is taken.
    policy_interval : float or None, default=5.0
        Seconds between two evaluations of the auto-publish policies; None
        never evaluates them (call :meth:`Aggregator.run_publish_policies`).
    metrics_ttl : float, default=5.0
        Seconds during which ``/metrics`` reuses its last database snapshot.
    compact_interval : float or None, default=600.0
        Seconds between two runs of :meth:`Aggregator.compact` (in the thread
        pool; it takes the writer lock for one transaction); None never runs
        it (``POST /v1/admin/compact`` still does).

    Returns
    -------
    starlette.applications.Starlette
    """

    if admin_token is not None and not admin_token:
        raise ValueError("admin_token must be a non-empty string or None.")
    committer = GroupCommitter(aggregator)
    metrics = Metrics(aggregator, state_ttl=metrics_ttl)
    if max_waiting is None:
        max_waiting = 4 * max_concurrency
    max_waiting = validate_params(
        {"max_waiting": max_waiting, "max_wait": max_wait})["max_waiting"]
    timers = [(_policy_timer, policy_interval), (_compact_timer, compact_interval)]
    app = Starlette(
        routes=ROUTES, lifespan=_lifespan(committer, timers),
        middleware=[Middleware(Admission, limited=LIMITED, max_concurrency=max_concurrency,
                               max_waiting=max_waiting, max_wait=max_wait,
                               stopping=lambda: committer.stopping)],
        exception_handlers={**EXCEPTION_HANDLERS, Exception: _internal})
    app.state.aggregator = aggregator
    app.state.committer = committer
    app.state.metrics = metrics
    app.state.admin_token = admin_token
    return app


async def _internal(request, exc):
    return error_for(exc)


def _lifespan(committer, timers):
    @asynccontextmanager
    async def lifespan(app):
        committer.start()
        tasks = [asyncio.create_task(timer(app.state, every)) for timer, every in timers
                 if every]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
            await run_in_threadpool(committer.stop)
    return lifespan


async def _compact_timer(state, every):
    while True:
        await asyncio.sleep(every)
        if state.committer.stopping:
            return
        try:
            state.metrics.compaction(await run_in_threadpool(state.aggregator.compact))
        except Exception as exc:       # noqa: BLE001 - the timer must survive
            logger.error("compaction failed: %s", exc)


async def _policy_timer(state, every):
    while True:
        await asyncio.sleep(every)
        if state.committer.stopping:
            return
        try:
            for model, _, _ in await run_in_threadpool(state.aggregator.run_publish_policies):
                state.metrics.published.labels(model, "policy").inc()
        except Exception as exc:       # noqa: BLE001 - the timer must survive
            logger.error("auto-publish failed: %s", exc)
