"""The routes of the HTTP API v1, as module-level handlers.

Each handler reads the aggregator, the group committer, the metrics and the
admin token from ``request.app.state`` (set by
:func:`~edgekm.sync.cloud.http.app.create_app`) and calls the aggregator's
services; errors are raised and mapped by :mod:`.errors`, admission is the
middleware of :mod:`.admission`.
"""

import functools
import hmac
import importlib.resources
import json
import logging
import time
from numbers import Integral, Real

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from edgekm._validation import Interval, validate_params
from edgekm.exceptions import (ForbiddenError, FrameTooLargeError, UnknownModelError,
                               UnknownVersionError, UnsupportedEncodingError)
from edgekm.solve import fit_centers

from edgekm.sync.cloud.ingest import Pull, Upload
from edgekm.sync.wire import auth
from edgekm.sync.wire.frame import FrameError, check_id
from edgekm.sync.wire.telemetry import MAX_TELEMETRY_BYTES

from .errors import BadRequest, NotEnoughData, error, plain_errors, reason_of

__all__ = ["ROUTES", "LIMITED", "MAX_JSON_BYTES", "openapi_document"]

logger = logging.getLogger("edgekm.sync.cloud.http.app")

#: largest JSON request body (fit parameters), in bytes
MAX_JSON_BYTES = 64 * 1024


async def _read_body(request, limit, too_large):
    """The request body, refusing more than ``limit`` bytes before reading them, and any
    ``Content-Encoding`` but ``identity`` (bodies are never compressed)."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", ""):
        raise UnsupportedEncodingError(
            f"content-encoding {encoding!r:.40} is not supported: send the body as it is")
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise BadRequest("bad content-length header")
        if int(length) > limit:
            raise too_large(f"body of {int(length)} bytes exceeds the limit of {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def require_admin(request):
    if request.app.state.admin_token is None:
        raise ForbiddenError("the admin endpoints are disabled (no admin token configured)")
    given = request.headers.get("authorization", "")
    scheme, _, token = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), request.app.state.admin_token.encode()):
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
        body = await _read_body(request, request.app.state.aggregator.max_frame_bytes, FrameTooLargeError)
        # decoding runs here, so that the writer thread only authenticates and merges
        prepared = request.app.state.aggregator.prepare(Upload(model, "POST", signed_path(request), body,
                                             signature_headers(request)))
        result = await request.app.state.committer.submit(prepared)
    except Exception as exc:
        request.app.state.metrics.frame_rejected(reason_of(exc), time.perf_counter() - started)
        raise
    request.app.state.metrics.frame_result(model, result, time.perf_counter() - started)
    return JSONResponse(result)

async def upload_telemetry(request):
    try:
        model = model_name(request)
        body = await _read_body(request, MAX_TELEMETRY_BYTES, FrameTooLargeError)
        prepared = request.app.state.aggregator.prepare(Upload(model, "POST", signed_path(request), body,
                                             signature_headers(request)))
        result = await request.app.state.committer.submit(prepared)
    except Exception as exc:
        request.app.state.metrics.telemetry_result(None, reason_of(exc))
        raise
    latency = None
    if result["status"] == "accepted" and isinstance(prepared.decoded, tuple):
        latency = prepared.decoded[0].assign_latency_us
    request.app.state.metrics.telemetry_result(model, result["status"], latency)
    return JSONResponse({"status": result["status"], "summary_id": result["summary_id"]})

async def centroids(request):
    try:
        model = model_name(request)
        device = request.query_params.get("device")
        if request.headers.get("content-length", "0") not in ("", "0"):
            raise BadRequest("a centroids request has no body")
        prepared = request.app.state.aggregator.prepare(Pull(model, signed_path(request, with_query=True),
                                           signature_headers(request), device))
        result = await request.app.state.committer.submit(prepared)
    except Exception as exc:
        request.app.state.metrics.pulls.labels(reason_of(exc)).inc()
        raise
    flags = result["flags"]
    if result["version"] is None:
        request.app.state.metrics.pulls.labels("no_version").inc()
        return error(404, "no_version", f"no version of model {model!r} for this device")
    etag = f'"{flags["digest"]}"'
    headers = {"etag": etag, "cache-control": "no-cache",
               "x-edgekm-version": str(result["version"].version)}
    if flags["rollback"]:
        headers["x-edgekm-rollback"] = "1"
    if flags["pinned"]:
        headers["x-edgekm-pinned"] = "1"
    if _etag_matches(request.headers.get("if-none-match"), flags["digest"]):
        request.app.state.metrics.pulls.labels("304").inc()
        return Response(status_code=304, headers=headers)
    request.app.state.metrics.pulls.labels("200").inc()
    return Response(flags["body"], media_type="application/msgpack", headers=headers)

async def admin_json(request):
    require_admin(request)
    model = model_name(request)
    body = await _read_body(request, MAX_JSON_BYTES, BadRequest)
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
            v = request.app.state.aggregator.publish_centers(model, centers, actor="http",
                                           reason="centres given over HTTP")
            return [i for i in request.app.state.aggregator.versions(model) if i["version"] == v][0]
        with plain_errors(BadRequest):    # centres of another n_features than the model
            info = await run_in_threadpool(given)
        request.app.state.metrics.published.labels(model, "http").inc()
        return JSONResponse(info)
    params = _fit_params(json.dumps(body).encode())

    def work():
        v = request.app.state.aggregator.publish(model, params["n_clusters"], params["windows"],
                               n_init=params["n_init"],
                               random_state=params["random_state"], actor="http",
                               trim=params["trim"])
        return [i for i in request.app.state.aggregator.versions(model) if i["version"] == v][0]
    with plain_errors(NotEnoughData):
        info = await run_in_threadpool(work)
    request.app.state.metrics.published.labels(model, "http").inc()
    return JSONResponse(info)

async def list_versions(request):
    require_admin(request)
    model = model_name(request)

    def work():
        return {"model": model, **request.app.state.aggregator.rollout_state(model),
                "versions": request.app.state.aggregator.versions(model)}
    return JSONResponse(await run_in_threadpool(work))

async def show_version(request):
    require_admin(request)
    model = model_name(request)
    v = version_param(request)

    def work():
        cv = request.app.state.aggregator.version(model, v)
        info = [i for i in request.app.state.aggregator.versions(model) if i["version"] == v][0]
        return {**info, "centers": cv.centers.tolist(),
                "cluster_weights": cv.cluster_weights.tolist(),
                "quantiles": cv.quantiles.tolist(), "new_clusters": list(cv.new_clusters),
                "vanished_clusters": list(cv.vanished_clusters)}
    return JSONResponse(await run_in_threadpool(work))

async def canary(request):
    model, params = await admin_json(request)
    v = version_param(request)
    if "percent" not in params or not set(params) <= {"percent", "auto_abort",
                                                     "auto_promote_after"}:
        raise BadRequest("the body must be {\"percent\": P} with optional \"auto_abort\": "
                         "bool and \"auto_promote_after\": N")
    auto_abort = params.get("auto_abort", False)
    if not isinstance(auto_abort, bool):
        raise BadRequest("'auto_abort' must be true or false")
    checked = validate_params({"percent": params["percent"],
                               "auto_promote_after": params.get("auto_promote_after")},
                              error=BadRequest, json=True)
    with plain_errors(BadRequest):
        result = await run_in_threadpool(request.app.state.aggregator.canary, model, v,
                                         checked["percent"], actor="http",
                                         auto_abort=auto_abort,
                                         auto_promote_after=checked["auto_promote_after"])
    return JSONResponse(result)

async def promote(request):
    model, _ = await admin_json(request)
    v = version_param(request)
    return JSONResponse(await run_in_threadpool(request.app.state.aggregator.promote, model, v, actor="http"))

async def abort_canary(request):
    model, _ = await admin_json(request)
    return JSONResponse(await run_in_threadpool(request.app.state.aggregator.abort_canary, model,
                                                actor="http"))

async def rollback(request):
    model, _ = await admin_json(request)
    return JSONResponse(await run_in_threadpool(request.app.state.aggregator.rollback, model, actor="http"))

async def pins(request):
    model, params = await admin_json(request)
    if set(params) != {"device", "version"}:
        raise BadRequest("the body must be {\"device\": ID, \"version\": V | null}")
    device, v = params["device"], params["version"]
    if not isinstance(device, str):
        raise BadRequest("'device' must be a device id")
    validate_params({"version": v}, _BODY, error=BadRequest, json=True)
    try:
        result = await run_in_threadpool(request.app.state.aggregator.pin, model, device, v, actor="http")
    except FrameError as exc:
        raise BadRequest(str(exc)) from None
    return JSONResponse(result)

async def drift(request):
    require_admin(request)
    model = model_name(request)
    return JSONResponse(await run_in_threadpool(request.app.state.aggregator.drift, model))

async def events(request):
    require_admin(request)
    model = model_name(request)
    return JSONResponse(await run_in_threadpool(request.app.state.aggregator.version_events, model))

async def policy(request):
    if request.method == "GET":
        require_admin(request)
        model = model_name(request)
        return JSONResponse({"policy": await run_in_threadpool(request.app.state.aggregator.publish_policy,
                                                               model)})
    model, params = await admin_json(request)
    allowed = {"every_seconds", "every_weight", "drift_threshold", "n_clusters", "windows",
               "n_init", "random_state"}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise BadRequest(f"unknown fields {unknown[:5]}")
    with plain_errors(BadRequest, (ValueError, TypeError)):
        result = await run_in_threadpool(
            lambda: request.app.state.aggregator.set_publish_policy(model, actor="http",
                                                                    **params))
    return JSONResponse({"policy": result})

@functools.lru_cache(maxsize=1)
def openapi_document():
    """The bytes of ``sync/openapi.json`` (installed as ``edgekm.sync``'s data): the one
    OpenAPI description of these routes, which the tests check against :data:`ROUTES`."""
    return importlib.resources.files("edgekm.sync").joinpath("openapi.json").read_bytes()


async def openapi(request):
    return Response(openapi_document(), media_type="application/json")


async def metrics_endpoint(request):
    body, content_type = await run_in_threadpool(request.app.state.metrics.render)
    return Response(body, headers={"content-type": content_type})

async def compact(request):
    require_admin(request)
    await _read_body(request, MAX_JSON_BYTES, BadRequest)
    stats = await run_in_threadpool(request.app.state.aggregator.compact)
    request.app.state.metrics.compaction(stats)
    return JSONResponse(stats)

async def healthz(request):
    try:
        await run_in_threadpool(request.app.state.aggregator.ping)
    except Exception as exc:     # noqa: BLE001
        logger.error("health check failed: %s", exc)
        return error(503, "unavailable", "database unavailable", status="error", db="error")
    return JSONResponse({"status": "ok", "db": "ok"})

async def fit(request):
    require_admin(request)
    model = model_name(request)
    params = _fit_params(await _read_body(request, MAX_JSON_BYTES, BadRequest))

    def work():
        coreset = request.app.state.aggregator.aggregate(model, params["windows"])
        centers, weights, cost = fit_centers(
            coreset, params["n_clusters"], trim=params["trim"], n_init=params["n_init"],
            random_state=params["random_state"])
        return {"centers": centers.tolist(), "cluster_weights": weights.tolist(),
                "cost": cost, "total_weight": coreset.total_weight,
                "windows": params["windows"], "n_points": len(coreset)}
    with plain_errors(NotEnoughData):
        return JSONResponse(await run_in_threadpool(work))

async def model_info(request):
    require_admin(request)
    model = model_name(request)
    return JSONResponse(await run_in_threadpool(request.app.state.aggregator.model_info, model))


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
        raise BadRequest("the body must be a JSON object") from None
    if not isinstance(params, dict):
        raise BadRequest("the body must be a JSON object")
    return params


def _centers_param(body):
    """``{"centers": [[...], ...]}``: finite numbers, one row per cluster, equal lengths."""
    unknown = sorted(set(body) - {"centers"})
    if unknown:
        raise BadRequest(f"unknown fields {unknown[:5]} (centres are published alone)")
    rows = body["centers"]
    if not (isinstance(rows, list) and rows and all(isinstance(r, list) and r for r in rows)
            and len({len(r) for r in rows}) == 1):
        raise BadRequest("'centers' must be a non-empty list of equally long non-empty lists")
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for r in rows for x in r):
        raise BadRequest("'centers' must hold numbers only")
    centers = np.asarray(rows, dtype=np.float64)
    if not np.isfinite(centers).all():
        raise BadRequest("'centers' must be finite")
    return centers


#: the HTTP API's own caps on request-body fields (the rest are the table's)
_BODY = {
    "version": [None, Interval(Integral, None, None)],
    "n_clusters": Interval(Integral, 1, 10_000),
    "windows": [None, Interval(Integral, 1, 1_000_000)],
    "n_init": Interval(Integral, 1, 100),
    "random_state": [None, Interval(Integral, 0, 2**63 - 1)],
    "trim": [None, Interval(Real, 0, 0.5, closed="left")],
}


def _fit_params(body):
    params = _json_object(body)
    unknown = sorted(set(params) - {"n_clusters", "windows", "n_init", "random_state", "trim"})
    if unknown:
        raise BadRequest(f"unknown fields {unknown[:5]}")

    if "n_clusters" not in params:
        raise BadRequest("'n_clusters' is required")
    given = {"trim": params.get("trim"), "n_clusters": params["n_clusters"],
             "windows": params.get("windows"), "n_init": params.get("n_init", 10),
             "random_state": params.get("random_state", 0)}
    return validate_params(given, _BODY, error=BadRequest, json=True)


ROUTES = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/v1/models/{model}/frames", upload_frame, methods=["POST"]),
    Route("/v1/models/{model}/fit", fit, methods=["POST"]),
    Route("/v1/models/{model}", model_info, methods=["GET"]),
    Route("/v1/models/{model}/centroids", centroids, methods=["GET"]),
    Route("/v1/models/{model}/telemetry", upload_telemetry, methods=["POST"]),
    Route("/v1/models/{model}/versions", publish, methods=["POST"]),
    Route("/v1/models/{model}/versions", list_versions, methods=["GET"]),
    Route("/v1/models/{model}/versions/{version}", show_version, methods=["GET"]),
    Route("/v1/models/{model}/versions/{version}/canary", canary,
          methods=["POST"]),
    Route("/v1/models/{model}/versions/{version}/promote", promote,
          methods=["POST"]),
    Route("/v1/models/{model}/rollback", rollback, methods=["POST"]),
    Route("/v1/models/{model}/canary/abort", abort_canary, methods=["POST"]),
    Route("/v1/models/{model}/pins", pins, methods=["POST"]),
    Route("/v1/models/{model}/drift", drift, methods=["GET"]),
    Route("/v1/models/{model}/events", events, methods=["GET"]),
    Route("/v1/models/{model}/policy", policy, methods=["GET", "POST"]),
    Route("/v1/admin/compact", compact, methods=["POST"]),
    Route("/metrics", metrics_endpoint, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
]

#: the routes under admission control (every route but ``/metrics``)
LIMITED = [route for route in ROUTES if route.path != "/metrics"]
