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

Signed device requests (frames, telemetry, pulls) share the writer thread
and its group commits.  A timer evaluates the auto-publish policies every
``policy_interval`` seconds, in the thread pool.

Frame uploads go through one writer thread that commits them in groups: all
uploads waiting when a transaction starts share it (each in its own
savepoint), and every request gets its answer only after the COMMIT that
made it durable.  Reads (fits, model info, health) run in the thread pool,
each thread on its own read connection.  No response ever carries a
traceback: unexpected errors are logged and answered 500.
"""

import asyncio
import collections
import hmac
import json
import logging
import os
import queue
import signal
import sqlite3
import socket
import threading
import time
from contextlib import asynccontextmanager

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from edgekm.exceptions import EdgekmError, NotFittedError

from edgekm.sync.wire import auth
from edgekm.sync.cloud.aggregator import (Aggregator, ConflictError, DeviceWeightCapError, DimensionError,
                         ForbiddenError, FrameOverCapError, FrameTooLargeError, Pull,
                         UnavailableError, UnknownDeviceError, UnknownModelError, Upload)
from edgekm.sync.wire.frame import FrameError, check_id
from edgekm.sync.cloud.metrics import Metrics
from edgekm.sync.wire.telemetry import MAX_TELEMETRY_BYTES, TelemetryError
from edgekm.solve import fit_centers
from edgekm.sync.cloud.versions import RolloutError, UnknownVersionError

__all__ = ["BackgroundServer", "create_app", "serve"]

logger = logging.getLogger("edgekm.sync.cloud.http.app")

#: largest JSON request body (fit parameters), in bytes
MAX_JSON_BYTES = 64 * 1024
#: most uploads committed in one transaction
MAX_BATCH = 256
RETRY_AFTER_SECONDS = 1
ADMIN_TOKEN_ENV = "EDGEKM_ADMIN_TOKEN"

_STATUS = [   # most specific first
    (FrameTooLargeError, 413, "too_large"),
    (FrameError, 400, "bad_frame"),
    (TelemetryError, 400, "bad_telemetry"),
    (auth.AuthError, 401, "unauthorized"),
    (ForbiddenError, 403, "forbidden"),
    (UnknownModelError, 404, "unknown_model"),
    (UnknownVersionError, 404, "unknown_version"),
    (UnknownDeviceError, 404, "unknown_device"),
    (RolloutError, 409, "rollout_conflict"),
    (ConflictError, 409, "conflict"),
    (DimensionError, 422, "wrong_dimension"),
    (FrameOverCapError, 422, "frame_over_cap"),
    (DeviceWeightCapError, 429, "device_weight_cap"),
    (UnavailableError, 503, "unavailable"),
    (sqlite3.Error, 503, "unavailable"),
]


class _BadRequest(ValueError):
    pass


def _error(status_code, reason, message, retry_after=None, **extra):
    if status_code == 503 and retry_after is None:
        retry_after = RETRY_AFTER_SECONDS
    headers = {"retry-after": str(retry_after)} if retry_after is not None else None
    return JSONResponse({"error": message, "reason": reason, **extra}, status_code=status_code,
                        headers=headers)


def _reason_of(exc):
    """The ``reason`` code an exception is answered with (for the metrics)."""
    if isinstance(exc, _BadRequest):
        return "bad_request"
    for cls, _, reason in _STATUS:
        if isinstance(exc, cls):
            return reason
    return "internal"


def _error_for(exc):
    for cls, status, reason in _STATUS:
        if isinstance(exc, cls):
            message = str(exc) if isinstance(exc, EdgekmError) else "database unavailable"
            if isinstance(exc, sqlite3.Error):
                logger.error("database error: %s", exc)
            extra = {"server_time": int(time.time())} if status == 401 else {}
            retry_after = getattr(exc, "retry_after", None) if status == 429 else None
            return _error(status, reason, message, retry_after=retry_after, **extra)
    logger.error("internal error", exc_info=exc)
    return _error(500, "internal", "internal error")


class _GroupCommitter:
    """One writer thread; the uploads queued while it commits form its next batch."""

    _STOP = object()

    def __init__(self, aggregator, max_batch=MAX_BATCH):
        self.aggregator = aggregator
        self.max_batch = max_batch
        self._queue = queue.SimpleQueue()
        self._thread = None
        self._lock = threading.Lock()
        self.stopping = False

    def start(self):
        with self._lock:
            if self._thread is None and not self.stopping:
                self._thread = threading.Thread(target=self._run, name="edgekm-writer",
                                                daemon=True)
                self._thread.start()

    def stop(self, timeout=60.0):
        with self._lock:
            self.stopping = True
            thread = self._thread
            if thread is not None:
                self._queue.put(self._STOP)
        if thread is not None:
            thread.join(timeout)

    def submit(self, upload):
        """Queue an upload; returns an asyncio future of its result or exception."""
        if self._thread is None:
            self.start()
        if self.stopping:
            raise UnavailableError("the aggregator is shutting down")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put((upload, future, loop))
        return future

    def _run(self):
        stop = False
        while not stop:
            item = self._queue.get()
            if item is self._STOP:
                break
            batch = [item]
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is self._STOP:
                    stop = True
                    break
                batch.append(item)
            try:
                results = self.aggregator.accept_signed([b[0] for b in batch])
            except BaseException as exc:       # noqa: BLE001 - every request gets an answer
                results = [exc] * len(batch)
            # one wake-up of each event loop per batch, not one per request
            by_loop = {}
            for (_, future, loop), result in zip(batch, results):
                by_loop.setdefault(loop, []).append((future, result))
            for loop, answers in by_loop.items():
                try:
                    loop.call_soon_threadsafe(_resolve, answers)
                except RuntimeError:           # the loop is closed: nobody is waiting
                    pass


def _resolve(answers):
    for future, result in answers:
        if future.done():       # the request was cancelled (client went away)
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)


async def _read_body(request, limit, too_large):
    """The request body, refusing more than ``limit`` bytes before reading them."""
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise _BadRequest("bad content-length header")
        if int(length) > limit:
            raise too_large(f"body of {int(length)} bytes exceeds the limit of {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


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
    committer = _GroupCommitter(aggregator)
    metrics = Metrics(aggregator, state_ttl=metrics_ttl)
    if max_waiting is None:
        max_waiting = 4 * max_concurrency
    if isinstance(max_waiting, bool) or not isinstance(max_waiting, int) or max_waiting < 0:
        raise ValueError(f"max_waiting must be None or an int >= 0; got {max_waiting!r}.")
    if not (isinstance(max_wait, (int, float)) and 0 <= max_wait < float("inf")):
        raise ValueError(f"max_wait must be a finite number >= 0; got {max_wait!r}.")
    state = {"in_flight": 0}
    waiting = collections.deque()       # futures of the requests waiting for a slot, in order

    async def admit():
        """Take a slot, waiting in FIFO order; False when none comes in time."""
        if state["in_flight"] < max_concurrency and not waiting:
            state["in_flight"] += 1
            return True
        if len(waiting) >= max_waiting or max_wait == 0:
            return False
        slot = asyncio.get_running_loop().create_future()
        waiting.append(slot)
        try:
            await asyncio.wait_for(asyncio.shield(slot), max_wait)
        except asyncio.TimeoutError:
            pass
        except BaseException:            # cancelled (the client went away)
            if slot.done():
                release()                # it was handed a slot: pass it on
            else:
                waiting.remove(slot)
            raise
        if slot.done():                  # release() handed its slot over (in_flight kept)
            return True
        waiting.remove(slot)
        return False

    def release():
        while waiting:
            slot = waiting.popleft()
            if not slot.done():
                slot.set_result(True)
                return
        state["in_flight"] -= 1

    def limited(endpoint):
        async def wrapper(request):
            if committer.stopping:
                return _error(503, "unavailable", "the aggregator is shutting down")
            if not await admit():
                return _error(503, "unavailable", "too many requests in progress")
            try:
                return await endpoint(request)
            except _BadRequest as exc:
                return _error(400, "bad_request", str(exc))
            except ClientDisconnect:
                return _error(400, "bad_request", "the client disconnected")
            except Exception as exc:     # noqa: BLE001 - mapped to a JSON error, never a traceback
                return _error_for(exc)
            finally:
                release()
        return wrapper

    def require_admin(request):
        if admin_token is None:
            raise ForbiddenError("the admin endpoints are disabled (no admin token configured)")
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
                token.strip().encode(), admin_token.encode()):
            raise auth.AuthError("missing or wrong admin token")

    def model_name(request):
        model = request.path_params["model"]
        try:
            return check_id(model, "model")
        except FrameError:
            raise UnknownModelError(f"no model {model!r:.80}") from None

    def signed_path(request, with_query=False):
        raw_path = request.scope.get("raw_path")
        path = raw_path.decode("latin-1") if raw_path else request.url.path
        query = request.scope.get("query_string") or b""
        return path + "?" + query.decode("latin-1") if with_query and query else path

    def signature_headers(request):
        return {name: request.headers[name] for name in
                (auth.H_DEVICE, auth.H_TIMESTAMP, auth.H_NONCE, auth.H_SIGNATURE)
                if name in request.headers}

    async def upload_frame(request):
        started = time.perf_counter()
        model = None
        try:
            model = model_name(request)
            body = await _read_body(request, aggregator.max_frame_bytes, FrameTooLargeError)
            # decoding runs here, so that the writer thread only authenticates and merges
            prepared = aggregator.prepare(Upload(model, "POST", signed_path(request), body,
                                                 signature_headers(request)))
            result = await committer.submit(prepared)
        except Exception as exc:
            metrics.frame_rejected(_reason_of(exc), time.perf_counter() - started)
            raise
        metrics.frame_result(model, result, time.perf_counter() - started)
        return JSONResponse(result)

    async def upload_telemetry(request):
        try:
            model = model_name(request)
            body = await _read_body(request, MAX_TELEMETRY_BYTES, FrameTooLargeError)
            prepared = aggregator.prepare(Upload(model, "POST", signed_path(request), body,
                                                 signature_headers(request)))
            result = await committer.submit(prepared)
        except Exception as exc:
            metrics.telemetry_result(None, _reason_of(exc))
            raise
        latency = None
        if result["status"] == "accepted" and isinstance(prepared.decoded, tuple):
            latency = prepared.decoded[0].assign_latency_us
        metrics.telemetry_result(model, result["status"], latency)
        return JSONResponse({"status": result["status"], "summary_id": result["summary_id"]})

    async def centroids(request):
        try:
            model = model_name(request)
            device = request.query_params.get("device")
            if request.headers.get("content-length", "0") not in ("", "0"):
                raise _BadRequest("a centroids request has no body")
            prepared = aggregator.prepare(Pull(model, signed_path(request, with_query=True),
                                               signature_headers(request), device))
            result = await committer.submit(prepared)
        except Exception as exc:
            metrics.pulls.labels(_reason_of(exc)).inc()
            raise
        flags = result["flags"]
        if result["version"] is None:
            metrics.pulls.labels("no_version").inc()
            return _error(404, "no_version", f"no version of model {model!r} for this device")
        etag = f'"{flags["digest"]}"'
        headers = {"etag": etag, "cache-control": "no-cache",
                   "x-edgekm-version": str(result["version"].version)}
        if flags["rollback"]:
            headers["x-edgekm-rollback"] = "1"
        if flags["pinned"]:
            headers["x-edgekm-pinned"] = "1"
        if _etag_matches(request.headers.get("if-none-match"), flags["digest"]):
            metrics.pulls.labels("304").inc()
            return Response(status_code=304, headers=headers)
        metrics.pulls.labels("200").inc()
        return Response(flags["body"], media_type="application/msgpack", headers=headers)

    async def admin_json(request):
        require_admin(request)
        model = model_name(request)
        body = await _read_body(request, MAX_JSON_BYTES, _BadRequest)
        return model, _json_object(body)

    def version_param(request):
        text = request.path_params["version"]
        if not (text.isdigit() and len(text) <= 18):
            raise UnknownVersionError(f"no version {text!r:.40}")
        return int(text)

    async def publish(request):
        model, body = await admin_json(request)
        if isinstance(body, dict) and "centers" in body:
            centers = _centers_param(body)

            def given():
                v = aggregator.publish_centers(model, centers, actor="http",
                                               reason="centres given over HTTP")
                return [i for i in aggregator.versions(model) if i["version"] == v][0]
            try:
                info = await run_in_threadpool(given)
            except NotFittedError as exc:
                return _error(422, "not_enough_data", str(exc))
            except ValueError as exc:         # centres of another n_features than the model
                if isinstance(exc, EdgekmError):
                    raise
                return _error(400, "bad_request", str(exc))
            metrics.published.labels(model, "http").inc()
            return JSONResponse(info)
        params = _fit_params(json.dumps(body).encode())

        def work():
            v = aggregator.publish(model, params["n_clusters"], params["windows"],
                                   n_init=params["n_init"],
                                   random_state=params["random_state"], actor="http",
                                   trim=params["trim"])
            return [i for i in aggregator.versions(model) if i["version"] == v][0]
        try:
            info = await run_in_threadpool(work)
        except (NotFittedError, ValueError) as exc:
            if isinstance(exc, EdgekmError) and not isinstance(exc, NotFittedError):
                raise
            return _error(422, "not_enough_data", str(exc))
        metrics.published.labels(model, "http").inc()
        return JSONResponse(info)

    async def list_versions(request):
        require_admin(request)
        model = model_name(request)

        def work():
            return {"model": model, **aggregator.rollout_state(model),
                    "versions": aggregator.versions(model)}
        return JSONResponse(await run_in_threadpool(work))

    async def show_version(request):
        require_admin(request)
        model = model_name(request)
        v = version_param(request)

        def work():
            cv = aggregator.version(model, v)
            info = [i for i in aggregator.versions(model) if i["version"] == v][0]
            return {**info, "centers": cv.centers.tolist(),
                    "cluster_weights": cv.cluster_weights.tolist(),
                    "quantiles": cv.quantiles.tolist(), "new_clusters": list(cv.new_clusters),
                    "vanished_clusters": list(cv.vanished_clusters)}
        return JSONResponse(await run_in_threadpool(work))

    async def canary(request):
        model, params = await admin_json(request)
        v = version_param(request)
        if set(params) != {"percent"}:
            raise _BadRequest("the body must be {\"percent\": P}")
        percent = params["percent"]
        if isinstance(percent, bool) or not isinstance(percent, (int, float)):
            raise _BadRequest("'percent' must be a number in (0, 100]")
        try:
            result = await run_in_threadpool(aggregator.canary, model, v, percent, actor="http")
        except ValueError as exc:
            if isinstance(exc, EdgekmError):
                raise
            raise _BadRequest(str(exc)) from None
        return JSONResponse(result)

    async def promote(request):
        model, _ = await admin_json(request)
        v = version_param(request)
        return JSONResponse(await run_in_threadpool(aggregator.promote, model, v, actor="http"))

    async def abort_canary(request):
        model, _ = await admin_json(request)
        return JSONResponse(await run_in_threadpool(aggregator.abort_canary, model,
                                                    actor="http"))

    async def rollback(request):
        model, _ = await admin_json(request)
        return JSONResponse(await run_in_threadpool(aggregator.rollback, model, actor="http"))

    async def pins(request):
        model, params = await admin_json(request)
        if set(params) != {"device", "version"}:
            raise _BadRequest("the body must be {\"device\": ID, \"version\": V | null}")
        device, v = params["device"], params["version"]
        if not isinstance(device, str):
            raise _BadRequest("'device' must be a device id")
        if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
            raise _BadRequest("'version' must be an int or null")
        try:
            result = await run_in_threadpool(aggregator.pin, model, device, v, actor="http")
        except FrameError as exc:
            raise _BadRequest(str(exc)) from None
        return JSONResponse(result)

    async def drift(request):
        require_admin(request)
        model = model_name(request)
        return JSONResponse(await run_in_threadpool(aggregator.drift, model))

    async def events(request):
        require_admin(request)
        model = model_name(request)
        return JSONResponse(await run_in_threadpool(aggregator.version_events, model))

    async def policy(request):
        if request.method == "GET":
            require_admin(request)
            model = model_name(request)
            return JSONResponse({"policy": await run_in_threadpool(aggregator.publish_policy,
                                                                   model)})
        model, params = await admin_json(request)
        allowed = {"every_seconds", "every_weight", "drift_threshold", "n_clusters", "windows",
                   "n_init", "random_state"}
        unknown = sorted(set(params) - allowed)
        if unknown:
            raise _BadRequest(f"unknown fields {unknown[:5]}")
        try:
            result = await run_in_threadpool(
                lambda: aggregator.set_publish_policy(model, actor="http", **params))
        except (ValueError, TypeError) as exc:
            if isinstance(exc, EdgekmError):
                raise
            raise _BadRequest(str(exc)) from None
        return JSONResponse({"policy": result})

    async def metrics_endpoint(request):
        body, content_type = await run_in_threadpool(metrics.render)
        return Response(body, headers={"content-type": content_type})

    async def compact(request):
        require_admin(request)
        await _read_body(request, MAX_JSON_BYTES, _BadRequest)
        stats = await run_in_threadpool(aggregator.compact)
        metrics.compaction(stats)
        return JSONResponse(stats)

    async def compact_timer():
        while True:
            await asyncio.sleep(compact_interval)
            if committer.stopping:
                return
            try:
                metrics.compaction(await run_in_threadpool(aggregator.compact))
            except Exception as exc:       # noqa: BLE001 - the timer must survive
                logger.error("compaction failed: %s", exc)

    async def policy_timer():
        while True:
            await asyncio.sleep(policy_interval)
            if committer.stopping:
                return
            try:
                for model, _, _ in await run_in_threadpool(aggregator.run_publish_policies):
                    metrics.published.labels(model, "policy").inc()
            except Exception as exc:       # noqa: BLE001 - the timer must survive
                logger.error("auto-publish failed: %s", exc)

    async def healthz(request):
        try:
            await run_in_threadpool(aggregator.ping)
        except Exception as exc:     # noqa: BLE001
            logger.error("health check failed: %s", exc)
            return _error(503, "unavailable", "database unavailable", status="error", db="error")
        return JSONResponse({"status": "ok", "db": "ok"})

    async def fit(request):
        require_admin(request)
        model = model_name(request)
        params = _fit_params(await _read_body(request, MAX_JSON_BYTES, _BadRequest))

        def work():
            coreset = aggregator.aggregate(model, params["windows"])
            centers, weights, cost = fit_centers(
                coreset, params["n_clusters"], trim=params["trim"], n_init=params["n_init"],
                random_state=params["random_state"])
            return {"centers": centers.tolist(), "cluster_weights": weights.tolist(),
                    "cost": cost, "total_weight": coreset.total_weight,
                    "windows": params["windows"], "n_points": len(coreset)}
        try:
            return JSONResponse(await run_in_threadpool(work))
        except (NotFittedError, ValueError) as exc:
            if isinstance(exc, EdgekmError) and not isinstance(exc, NotFittedError):
                raise
            return _error(422, "not_enough_data", str(exc))

    async def model_info(request):
        require_admin(request)
        model = model_name(request)
        return JSONResponse(await run_in_threadpool(aggregator.model_info, model))

    async def not_found(request, exc):
        reason = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "error")
        return _error(exc.status_code, reason, str(exc.detail))

    async def internal(request, exc):
        return _error_for(exc)

    @asynccontextmanager
    async def lifespan(app):
        committer.start()
        timers = [asyncio.create_task(t()) for t, every in
                  ((policy_timer, policy_interval), (compact_timer, compact_interval)) if every]
        try:
            yield
        finally:
            for timer in timers:
                timer.cancel()
                try:
                    await timer
                except asyncio.CancelledError:
                    pass
            await run_in_threadpool(committer.stop)

    routes = [
        Route("/healthz", limited(healthz), methods=["GET"]),
        Route("/v1/models/{model}/frames", limited(upload_frame), methods=["POST"]),
        Route("/v1/models/{model}/fit", limited(fit), methods=["POST"]),
        Route("/v1/models/{model}", limited(model_info), methods=["GET"]),
        Route("/v1/models/{model}/centroids", limited(centroids), methods=["GET"]),
        Route("/v1/models/{model}/telemetry", limited(upload_telemetry), methods=["POST"]),
        Route("/v1/models/{model}/versions", limited(publish), methods=["POST"]),
        Route("/v1/models/{model}/versions", limited(list_versions), methods=["GET"]),
        Route("/v1/models/{model}/versions/{version}", limited(show_version), methods=["GET"]),
        Route("/v1/models/{model}/versions/{version}/canary", limited(canary),
              methods=["POST"]),
        Route("/v1/models/{model}/versions/{version}/promote", limited(promote),
              methods=["POST"]),
        Route("/v1/models/{model}/rollback", limited(rollback), methods=["POST"]),
        Route("/v1/models/{model}/canary/abort", limited(abort_canary), methods=["POST"]),
        Route("/v1/models/{model}/pins", limited(pins), methods=["POST"]),
        Route("/v1/models/{model}/drift", limited(drift), methods=["GET"]),
        Route("/v1/models/{model}/events", limited(events), methods=["GET"]),
        Route("/v1/models/{model}/policy", limited(policy), methods=["GET", "POST"]),
        Route("/v1/admin/compact", limited(compact), methods=["POST"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={HTTPException: not_found, Exception: internal})
    app.state.aggregator = aggregator
    app.state.committer = committer
    app.state.metrics = metrics
    return app


def _etag_matches(header, digest):
    """True when an If-None-Match header names ``digest`` (quoted or not, weak or not, or *)."""
    if not header:
        return False
    for tag in header.split(","):
        tag = tag.strip()
        if tag == "*":
            return True
        if tag.startswith("W/"):
            tag = tag[2:]
        if tag.strip('"') == digest:
            return True
    return False


def _json_object(body):
    """The request body as a JSON object (an empty body is {})."""
    try:
        params = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise _BadRequest("the body must be a JSON object") from None
    if not isinstance(params, dict):
        raise _BadRequest("the body must be a JSON object")
    return params


def _centers_param(body):
    """``{"centers": [[...], ...]}``: finite numbers, one row per cluster, equal lengths."""
    unknown = sorted(set(body) - {"centers"})
    if unknown:
        raise _BadRequest(f"unknown fields {unknown[:5]} (centres are published alone)")
    rows = body["centers"]
    if not (isinstance(rows, list) and rows and all(isinstance(r, list) and r for r in rows)
            and len({len(r) for r in rows}) == 1):
        raise _BadRequest("'centers' must be a non-empty list of equally long non-empty lists")
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for r in rows for x in r):
        raise _BadRequest("'centers' must hold numbers only")
    centers = np.asarray(rows, dtype=np.float64)
    if not np.isfinite(centers).all():
        raise _BadRequest("'centers' must be finite")
    return centers


def _fit_params(body):
    params = _json_object(body)
    unknown = sorted(set(params) - {"n_clusters", "windows", "n_init", "random_state", "trim"})
    if unknown:
        raise _BadRequest(f"unknown fields {unknown[:5]}")

    def integer(name, default, lo, hi, allow_none=False):
        value = params.get(name, default)
        if value is None and allow_none:
            return None
        if not (isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi):
            raise _BadRequest(f"'{name}' must be an int in [{lo}, {hi}]"
                              + (" or null" if allow_none else ""))
        return value
    if "n_clusters" not in params:
        raise _BadRequest("'n_clusters' is required")
    trim = params.get("trim")
    if trim is not None and (isinstance(trim, bool) or not isinstance(trim, (int, float))
                             or not 0 <= trim < 0.5):
        raise _BadRequest("'trim' must be a number in [0, 0.5) or null")
    return {"n_clusters": integer("n_clusters", None, 1, 10_000),
            "windows": integer("windows", None, 1, 1_000_000, allow_none=True),
            "n_init": integer("n_init", 10, 1, 100),
            "random_state": integer("random_state", 0, 0, 2**63 - 1, allow_none=True),
            "trim": trim}


def serve(db_path, host="127.0.0.1", port=8750, admin_token=None, *, log_level="info",
          access_log=False, max_concurrency=64, graceful_timeout=30.0, compact_interval=600.0,
          **aggregator_options):
    """Serve an aggregator with uvicorn until SIGTERM or SIGINT, then shut down gracefully.

    On a signal the server stops accepting connections, finishes the requests
    in flight (at most ``graceful_timeout`` seconds), stops the writer thread
    and closes the database; then this returns 0.

    ``admin_token`` defaults to the environment variable ``EDGEKM_ADMIN_TOKEN``;
    ``compact_interval`` goes to :func:`create_app`; other keyword arguments go to
    :class:`Aggregator`.
    """
    import uvicorn

    if admin_token is None:
        admin_token = os.environ.get(ADMIN_TOKEN_ENV) or None
    aggregator = Aggregator(db_path, **aggregator_options)
    try:
        app = create_app(aggregator, admin_token=admin_token, max_concurrency=max_concurrency,
                         compact_interval=compact_interval)
        config = uvicorn.Config(app, host=host, port=port, log_level=log_level,
                                access_log=access_log, lifespan="on",
                                timeout_graceful_shutdown=graceful_timeout)
        server = uvicorn.Server(config)
        # uvicorn re-raises the signal that stopped it once it has shut down; a
        # recording handler makes that harmless, so a graceful stop exits 0.
        caught = []
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, lambda signum, frame: caught.append(signum))
        try:
            server.run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    finally:
        aggregator.close()
    if caught:
        logger.info("stopped by signal %s", ", ".join(signal.Signals(s).name for s in caught))
    return 0


class BackgroundServer:
    """Serve an ASGI app with uvicorn in a daemon thread on a free loopback port.

    For demos, examples and tests that need a real HTTP aggregator inside one
    process; production runs :func:`serve`.  The socket is bound before the
    thread starts (port 0: the system picks a free port), so :attr:`url` is
    known at once; :meth:`start` returns when uvicorn accepts connections.

    Parameters
    ----------
    app : ASGI application
        Usually ``create_app(aggregator, ...)``; the caller closes the aggregator
        after :meth:`stop`.
    host : str, default="127.0.0.1"
    log_level : str, default="warning"
    name : str, default="edgekm-aggregator"
        The thread's name.

    Examples
    --------
    >>> import os, tempfile, urllib.request, json
    >>> from edgekm.sync import Aggregator
    >>> from edgekm.sync.cloud.http.app import BackgroundServer, create_app
    >>> agg = Aggregator(os.path.join(tempfile.mkdtemp(), "a.db"))
    >>> with BackgroundServer(create_app(agg, policy_interval=None)) as server:
    ...     with urllib.request.urlopen(server.url + "/healthz") as r:
    ...         json.loads(r.read())["status"]
    'ok'
    >>> agg.close()
    """

    def __init__(self, app, *, host="127.0.0.1", log_level="warning",
                 name="edgekm-aggregator"):
        import uvicorn

        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._sock.bind((host, 0))
            self.port = self._sock.getsockname()[1]
            # log_config=None leaves the caller's logging configuration alone
            config = uvicorn.Config(app, log_level=log_level, log_config=None,
                                    access_log=False, lifespan="on",
                                    timeout_graceful_shutdown=10)
            self._server = uvicorn.Server(config)
            self._thread = threading.Thread(target=self._server.run,
                                            kwargs={"sockets": [self._sock]},
                                            name=name, daemon=True)
        except BaseException:
            self._sock.close()
            raise
        shown = f"[{host}]" if family == socket.AF_INET6 else host
        self.url = f"http://{shown}:{self.port}"

    def start(self, timeout=30.0):
        """Start the thread and wait until uvicorn serves; RuntimeError if it does not."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the HTTP server on {self.url} did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout=30.0):
        """Stop serving and join the thread; True when the thread has ended."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=timeout)
        self._sock.close()
        return not self._thread.is_alive()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
