"""Hostile requests against the real HTTP app: each row gets its documented status and
``reason`` (``sync/PROTOCOL.md`` §6), and after each one nothing was merged and nothing
lost (the model's weight, frame count, buckets and earlier frames are unchanged)."""

import warnings
import zlib

import msgpack
import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")

with warnings.catch_warnings():
    # Starlette >= 1.x prefers the httpx2 fork for its TestClient and warns when it
    # falls back to httpx; the test extra installs httpx, which works unchanged.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient  # noqa: E402

from edgekm.sync.wire import auth  # noqa: E402
from edgekm.sync.cloud.aggregator import Aggregator  # noqa: E402
from edgekm.sync.cloud.http.app import create_app  # noqa: E402
from helpers.fakes import FakeClock  # noqa: E402
from helpers.postgres import connect  # noqa: E402

NOW = 1_700_000_000.0          # the aggregator's (frozen) clock
CAP = 1e6                      # max_device_weight, policy "reject"
LIMIT = 64 * 1024              # max_frame_bytes
PATH = "/v1/models/m/frames"


def fields(seq, n=4, d=3, device="dev-a", model="m", weights=None, points=None, **override):
    """The 16 keys of a frame, consistent (checksum, total) unless overridden."""
    rng = np.random.default_rng(abs(seq))
    p = rng.normal(size=(n, d)).astype("<f4") if points is None else np.asarray(points)
    w = np.ones(len(p)) if weights is None else np.asarray(weights, dtype="<f8")
    pb, wb = p.tobytes(), w.astype("<f8").tobytes()
    with np.errstate(all="ignore"):
        total = float(np.sum(w))
    body = {"v": 1, "kind": "coreset", "model": model, "device": device, "boot": 1,
            "seq": seq, "span": [0, len(p) - 1], "n": len(p), "d": p.shape[1],
            "dtype": p.dtype.str, "points": pb, "weights": wb, "total": total, "level": 0,
            "created": NOW, "crc32": zlib.crc32(wb, zlib.crc32(pb))}
    body.update(override)
    return body


def pack(body):
    return msgpack.packb(body, use_bin_type=True)


def frame(seq, **kw):
    return pack(fields(seq, **kw))


def signed(key, body, device="dev-a", path=PATH, now=NOW, method="POST"):
    headers = auth.signed_headers(key, method, path, body, device, now=now)
    headers["content-type"] = "application/msgpack"
    return headers


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def env(tmp_path_factory, request):
    if request.param == "postgres":
        db = request.getfixturevalue("postgres_server").new_database("bad")
    else:
        db = str(tmp_path_factory.mktemp("bad") / "bad.db")
    agg = Aggregator(db, clock=FakeClock(NOW), random_state=0, auto_create_models=False,
                     max_frame_bytes=LIMIT, max_device_weight=CAP, weight_cap_policy="reject",
                     coreset_size=20)
    agg.add_model("m", 3)
    keys = {d: agg.add_device(d) for d in ("dev-a", "dev-b", "dev-c")}
    agg.revoke_device("dev-b")
    app = create_app(agg, admin_token="tok", policy_interval=None, compact_interval=None)
    with TestClient(app) as client:
        valid = {}
        for seq in (0, 1):
            body = frame(seq, weights=[1.0, 2.0, 3.0, 4.0])
            headers = signed(keys["dev-a"], body)
            r = client.post(PATH, content=body, headers=headers)
            assert r.status_code == 200 and r.json()["status"] == "accepted", r.text
            valid[seq] = (body, headers, r.json()["weight"])
        # dev-c is 10 short of its cap in this window
        body = frame(0, device="dev-c", weights=[CAP - 10.0, 1.0, 2.0, 3.0])
        assert client.post(PATH, content=body, headers=signed(keys["dev-c"], body,
                                                              "dev-c")).status_code == 200
        yield {"agg": agg, "db": db, "client": client, "keys": keys, "valid": valid}
    agg.close()


def state(env):
    """Everything a rejected request must leave as it was."""
    agg = env["agg"]
    conn = connect(env["db"])
    try:
        tables = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                  for t in ("frames", "buckets", "windows", "device_windows", "models",
                            "seq_ranges")}
        frames = conn.execute("SELECT model_id, device_id, boot, seq, digest, weight FROM frames "
                              "ORDER BY 1, 2, 3, 4").fetchall()
        buckets = conn.execute("SELECT coalesce(sum(total_weight), 0) "
                               "FROM buckets").fetchone()[0]
        dw = conn.execute("SELECT device_id, window, weight FROM device_windows "
                          "ORDER BY 1, 2").fetchall()
    finally:
        conn.close()
    return {"total": agg.total_weight("m"), "frames": agg.frame_count("m"),
            "tables": tables, "rows": frames, "bucket_weight": buckets, "device_windows": dw,
            "aggregate": agg.aggregate("m").total_weight}


# ------------------------------------------------------------------ the rows
# Each row: (id, request(env) -> (method, path, body, headers), status, reason).

def post(body, device="dev-a", key=None, path=PATH, now=NOW, sign_path=None, sign_body=None):
    def build(env):
        k = env["keys"].get(device, auth.new_key()) if key is None else key(env)
        headers = signed(k, body if sign_body is None else sign_body, device,
                         path if sign_path is None else sign_path, now)
        return "POST", path, body, headers
    return build


def flip(data, offset_from_end):
    b = bytearray(data)
    b[len(b) - offset_from_end] ^= 0x10
    return bytes(b)


def nested(depth):
    return b"\x91" * depth + b"\x01"        # fixarray of 1, depth times


NAN_POINTS = np.array([[0.0, np.nan, 1.0], [1.0, 2.0, 3.0]], dtype="<f4")
INF_POINTS = np.array([[0.0, 1.0, 1.0], [1.0, np.inf, 3.0]], dtype="<f4")
VALID_BODY = frame(10)
SIGNED_ELSEWHERE = frame(11)

ROWS = [
    # values
    ("nan_point", post(frame(100, points=NAN_POINTS)), 400, "bad_frame"),
    ("inf_point", post(frame(101, points=INF_POINTS)), 400, "bad_frame"),
    ("nan_weight", post(frame(102, weights=[1.0, np.nan, 1.0, 1.0])), 400, "bad_frame"),
    ("inf_weight", post(frame(103, weights=[1.0, np.inf, 1.0, 1.0])), 400, "bad_frame"),
    ("zero_weight", post(frame(104, weights=[1.0, 0.0, 1.0, 1.0])), 400, "bad_frame"),
    ("negative_weight", post(frame(105, weights=[1.0, -2.0, 1.0, 1.0])), 400, "bad_frame"),
    ("total_over_2_53", post(frame(106, weights=[2.0 ** 53, 2.0 ** 53])), 400, "bad_frame"),
    ("huge_weight_1e300", post(frame(107, weights=[1e300, 1.0, 1.0, 1.0])), 400, "bad_frame"),
    ("total_mismatch", post(pack(fields(108, total=5.0))), 400, "bad_frame"),
    ("total_negative", post(pack(fields(109, total=-4.0))), 400, "bad_frame"),
    ("frame_over_cap", post(frame(110, weights=[CAP, 1.0, 1.0, 1.0])), 422, "frame_over_cap"),
    ("device_over_cap", post(frame(1, device="dev-c", weights=[5.0, 5.0, 1.0, 1.0]),
                             device="dev-c"), 429, "device_weight_cap"),
    ("wrong_dimension", post(frame(111, d=5)), 422, "wrong_dimension"),
    ("n_larger_than_points", post(pack({**fields(112), "n": 5})), 400, "bad_frame"),
    # framing
    ("empty_body", post(b""), 400, "bad_frame"),
    ("truncated", post(VALID_BODY[:-7]), 400, "bad_frame"),
    ("trailing_bytes", post(VALID_BODY + b"\x00"), 400, "bad_frame"),
    ("bit_flip_signed", post(flip(frame(113), 60)), 400, "bad_frame"),
    ("bit_flip_in_transit", post(flip(frame(114), 60), sign_body=frame(114)), 401,
     "unauthorized"),
    ("not_msgpack_json", post(b'{"v": 1}'), 400, "bad_frame"),
    ("top_level_array", post(pack([1, 2, 3])), 400, "bad_frame"),
    ("deeply_nested", post(nested(20_000)), 400, "bad_frame"),
    ("nested_in_field", post(pack(fields(115, span=[[[[0]]], 1]))), 400, "bad_frame"),
    ("int_map_keys", post(pack({1: 2, 3: 4})), 400, "bad_frame"),
    ("bin_map_key", post(pack({**fields(116), b"v": 1})), 400, "bad_frame"),
    ("ext_type", post(pack(fields(117, created=msgpack.ExtType(1, b"x")))), 400, "bad_frame"),
    ("unknown_key", post(pack({**fields(118), "extra": 1})), 400, "bad_frame"),
    ("missing_key", post(pack({k: v for k, v in fields(119).items() if k != "crc32"})), 400,
     "bad_frame"),
    ("bool_for_int", post(pack(fields(120, level=True))), 400, "bad_frame"),
    ("negative_seq", post(pack(fields(-1))), 400, "bad_frame"),
    ("span_reversed", post(pack(fields(121, span=[5, 1]))), 400, "bad_frame"),
    ("unknown_dtype", post(pack(fields(122, dtype=">f4"))), 400, "bad_frame"),
    ("unknown_kind", post(pack(fields(123, kind="telemetry"))), 400, "bad_frame"),
    ("unknown_schema_version", post(pack(fields(124, v=2))), 400, "bad_frame"),
    ("oversized_body", post(b"\x00" * (LIMIT + 1)), 413, "too_large"),
    # ids and routing
    ("unknown_model", post(frame(125, model="nope"), path="/v1/models/nope/frames"), 404,
     "unknown_model"),
    ("model_differs_from_url", post(frame(126, model="other")), 403, "forbidden"),
    ("traversal_model_url", post(frame(127), path="/v1/models/..%2Fm/frames"), 404,
     "not_found"),
    ("dot_model_url", post(frame(127, model=".m"), path="/v1/models/.m/frames"), 404,
     "unknown_model"),
    ("traversal_model_in_frame", post(pack(fields(128, model="../m"))), 400, "bad_frame"),
    ("traversal_device_in_frame", post(pack(fields(129, device="../dev-a"))), 400, "bad_frame"),
    ("traversal_device_header", post(frame(130, device="../dev-a"), device="../dev-a"), 401,
     "unauthorized"),
    ("frame_of_other_device", post(frame(131, device="dev-c")), 403, "forbidden"),
    # authentication
    ("unknown_device", post(frame(132, device="ghost"), device="ghost"), 401, "unauthorized"),
    ("revoked_device", post(frame(133, device="dev-b"), device="dev-b"), 403, "forbidden"),
    ("wrong_hmac_key", post(frame(134), key=lambda env: auth.new_key()), 401, "unauthorized"),
    ("signed_other_path", post(frame(135), sign_path="/v1/models/x/frames"), 401,
     "unauthorized"),
    ("signed_other_body", post(frame(136), sign_body=SIGNED_ELSEWHERE), 401, "unauthorized"),
    ("stale_timestamp", post(frame(137), now=NOW - 301), 401, "unauthorized"),
    ("future_timestamp", post(frame(138), now=NOW + 301), 401, "unauthorized"),
]


def _reused_nonce(env):
    body, headers, _ = env["valid"][1]
    return "POST", PATH, body, headers


def _replayed_seq(env):
    body = frame(0, weights=[4.0, 3.0, 2.0, 1.0])         # seq 0, another body
    return "POST", PATH, body, signed(env["keys"]["dev-a"], body)


def _no_signature(env):
    return "POST", PATH, frame(139), {"content-type": "application/msgpack"}


def _bad_signature_hex(env):
    body = frame(140)
    headers = signed(env["keys"]["dev-a"], body)
    headers[auth.H_SIGNATURE] = headers[auth.H_SIGNATURE].upper()
    return "POST", PATH, body, headers


def _bad_nonce(env):
    body = frame(141)
    headers = signed(env["keys"]["dev-a"], body)
    headers[auth.H_NONCE] = "../../etc"
    return "POST", PATH, body, headers


def _chunked_oversized(env):
    body = b"\x00" * (LIMIT + 1)

    def chunks():
        for i in range(0, len(body), 4096):
            yield body[i:i + 4096]
    return "POST", PATH, chunks(), signed(env["keys"]["dev-a"], body)


def _wrong_method(env):
    return "GET", PATH, None, {}


def _gzip_encoded(env):
    body = frame(142)
    headers = signed(env["keys"]["dev-a"], body)
    headers["content-encoding"] = "gzip"
    return "POST", PATH, body, headers


def _leading_zero_timestamp(env):
    body = frame(143)
    headers = signed(env["keys"]["dev-a"], body)
    headers[auth.H_TIMESTAMP] = "0" + headers[auth.H_TIMESTAMP]
    return "POST", PATH, body, headers


def v2_fields(seq, **override):
    """The 17 keys of a consistent v2 frame (spread 0)."""
    body = fields(seq)
    spread = np.zeros(body["n"]).tobytes()
    crc = zlib.crc32(spread, zlib.crc32(body["weights"], zlib.crc32(body["points"])))
    return {**body, "v": 2, "spread": spread, "crc32": crc, **override}


ROWS += [
    ("reused_nonce", _reused_nonce, 401, "unauthorized"),
    ("replayed_seq_other_body", _replayed_seq, 409, "conflict"),
    ("missing_signature_headers", _no_signature, 401, "unauthorized"),
    ("uppercase_signature", _bad_signature_hex, 401, "unauthorized"),
    ("malformed_nonce", _bad_nonce, 401, "unauthorized"),
    ("oversized_chunked_no_length", _chunked_oversized, 413, "too_large"),
    ("wrong_method", _wrong_method, 405, "method_not_allowed"),
    # issue 15: the points the spec did not state
    ("gzip_content_encoding", _gzip_encoded, 415, "unsupported_encoding"),
    ("leading_zero_timestamp", _leading_zero_timestamp, 401, "unauthorized"),
    ("v2_with_an_extra_key", post(pack({**v2_fields(144), "extra": 1})), 400, "bad_frame"),
    ("v3_with_18_keys", post(pack({**v2_fields(145, v=3), "extra": 1})), 400, "bad_frame"),
]


def test_at_least_25_rows():
    assert len(ROWS) >= 25 and len({r[0] for r in ROWS}) == len(ROWS)


@pytest.mark.parametrize("build,status,reason", [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_hostile_request(env, build, status, reason):
    client = env["client"]
    before = state(env)
    method, path, body, headers = build(env)
    r = client.request(method, path, content=body, headers=headers)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    answer = r.json()
    assert answer["reason"] == reason and isinstance(answer["error"], str) and answer["error"]
    assert "Traceback" not in r.text and len(r.text) < 2000
    if status == 429:
        assert 1 <= int(r.headers["retry-after"]) <= 3600
    # nothing merged, nothing lost
    assert state(env) == before
    for seq, (valid, _, weight) in env["valid"].items():
        again = client.post(PATH, content=valid, headers=signed(env["keys"]["dev-a"], valid))
        assert again.status_code == 200
        assert again.json()["status"] == "duplicate" and again.json()["weight"] == weight
    assert state(env) == before


def test_rejections_are_counted_by_reason(env):
    text = env["client"].get("/metrics").text
    assert 'edgekm_frames_rejected_total{reason="bad_frame"}' in text
    assert 'edgekm_frames_rejected_total{reason="frame_over_cap"}' in text


def test_concurrency_limit_answers_503(tmp_path):
    """With max_concurrency=1, a request arriving while another is in flight gets 503
    with Retry-After; the first one still completes and nothing is merged twice."""
    import asyncio

    import httpx

    agg = Aggregator(tmp_path / "c.db", clock=FakeClock(NOW), random_state=0)
    key = agg.add_device("dev-a")
    app = create_app(agg, max_concurrency=1, policy_interval=None, compact_interval=None)
    body = frame(0)

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            agg._lock.acquire()             # the writer cannot commit: the upload waits
            try:
                first = asyncio.ensure_future(client.post(PATH, content=body,
                                                          headers=signed(key, body)))
                while app.state.committer._thread is None:     # started by its submit
                    await asyncio.sleep(0.01)
                second = await client.post(PATH, content=body, headers=signed(key, body))
            finally:
                agg._lock.release()
            return await first, second
    try:
        first, second = asyncio.run(scenario())
        assert second.status_code == 503 and second.json()["reason"] == "unavailable"
        assert second.headers["retry-after"] == "1"
        assert first.status_code == 200 and first.json()["status"] == "accepted"
        assert agg.frame_count("m") == 1
    finally:
        app.state.committer.stop()
        agg.close()


def test_waiting_requests_get_the_slots_in_arrival_order(tmp_path):
    """Over max_concurrency a request waits (up to max_wait) instead of a 503 at once, and
    the slots go to the waiting requests in the order they came: first come, first served."""
    import asyncio

    import httpx

    agg = Aggregator(tmp_path / "q.db", clock=FakeClock(NOW), random_state=0)
    key = agg.add_device("dev-a")
    app = create_app(agg, max_concurrency=1, max_waiting=2, max_wait=30.0,
                     policy_interval=None, compact_interval=None)
    bodies = [frame(seq) for seq in range(4)]
    order = []

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            async def post(i):
                r = await client.post(PATH, content=bodies[i], headers=signed(key, bodies[i]))
                order.append(i)
                return r

            agg._lock.acquire()             # the writer cannot commit: the first upload waits
            try:
                first = asyncio.ensure_future(post(0))
                while app.state.committer._thread is None:
                    await asyncio.sleep(0.01)
                waiting = []
                for i in (1, 2):            # queue up behind it, in this order
                    waiting.append(asyncio.ensure_future(post(i)))
                    await asyncio.sleep(0.05)
                third = await post(3)       # the queue (2 places) is full: 503 at once
            finally:
                agg._lock.release()
            return [await first, *[await w for w in waiting]], third
    try:
        answers, full = asyncio.run(scenario())
        assert full.status_code == 503 and full.json()["reason"] == "unavailable"
        assert [r.status_code for r in answers] == [200, 200, 200]
        assert order == [3, 0, 1, 2]
        assert agg.frame_count("m") == 3
    finally:
        app.state.committer.stop()
        agg.close()


@pytest.mark.parametrize("body, message", [
    (pack({**v2_fields(146), "extra": 1}), "unknown keys ['extra']"),
    (pack({**v2_fields(147, v=3), "extra": 1}), "unknown schema version 3"),
    (pack({**v2_fields(148, v=3), **{f"x{i}": 0 for i in range(15)}}),
     "unknown schema version 3"),      # 32 entries: the map limit
])
def test_a_later_version_is_refused_for_its_v_and_an_extra_key_by_name(env, body, message):
    r = env["client"].post(PATH, content=body, headers=signed(env["keys"]["dev-a"], body))
    assert r.status_code == 400 and message in r.json()["error"], r.text


def test_a_rejected_frame_consumes_its_nonce_for_its_device_only(env):
    """PROTOCOL.md §5.4 step 7: the nonce of a correctly signed request stays used even
    when the frame is refused; nonces are kept per device."""
    client, keys = env["client"], env["keys"]
    nonce = "ab" * 16

    def headers(key, body, device):
        h = {auth.H_DEVICE: device, auth.H_TIMESTAMP: str(int(NOW)), auth.H_NONCE: nonce,
             auth.H_SIGNATURE: auth.sign(key, "POST", PATH, body, device, int(NOW), nonce)}
        return {**h, "content-type": "application/msgpack"}
    bad = frame(149, d=5)                         # 422 wrong_dimension, after the signature
    r = client.post(PATH, content=bad, headers=headers(keys["dev-a"], bad, "dev-a"))
    assert r.status_code == 422
    good = frame(150)
    r = client.post(PATH, content=good, headers=headers(keys["dev-a"], good, "dev-a"))
    assert r.status_code == 401 and "nonce already used" in r.json()["error"]
    before = env["agg"].total_weight("m")
    good_c = frame(150, device="dev-c", weights=[0.5, 0.5, 0.5, 0.5])
    r = client.post(PATH, content=good_c, headers=headers(keys["dev-c"], good_c, "dev-c"))
    assert r.status_code == 200, r.text   # another device may use the same nonce
    assert env["agg"].total_weight("m") == before + 2.0


@pytest.mark.parametrize("content_type", [None, "application/octet-stream", "text/plain"])
def test_content_type_is_not_checked(env, content_type):
    """PROTOCOL.md §1: the body is decoded by its route whatever Content-Type says."""
    body = frame(151, device="dev-c", weights=[0.25] * 4)
    headers = signed(env["keys"]["dev-c"], body, "dev-c")
    del headers["content-type"]
    if content_type is not None:
        headers["content-type"] = content_type
    r = env["client"].post(PATH, content=body, headers=headers)
    assert r.status_code == 200 and r.json()["status"] in ("accepted", "duplicate"), r.text
