"""The aggregator core: accept, deduplicate, merge under Observation 1, windows, auth; on
SQLite and on PostgreSQL (the ``db`` fixture)."""

import math
import sqlite3
import time

import numpy as np
import pytest

from edgekm import Coreset, EdgekmError, NotFittedError, StreamingKMeans
from edgekm.sync import encode_frame
from edgekm.sync.wire import auth
from edgekm.sync.cloud.aggregator import (Aggregator, ConflictError, DeviceExistsError, DimensionError,
                                    ForbiddenError, FrameTooLargeError, UnavailableError,
                                    UnknownDeviceError, UnknownModelError, Upload)
from edgekm.sync.wire.frame import FrameError
from edgekm.sync.cloud.database import SCHEMA_VERSION, SchemaError
from helpers.fakes import FakeClock, make_frame
from helpers.postgres import connect

PATH = "/v1/models/{}/frames"


def signed(agg, key, body, device="dev-a", model="m", now=None, path=None):
    path = PATH.format(model) if path is None else path
    now = agg.clock() if now is None else now
    return Upload(model, "POST", path, body,
                  auth.signed_headers(key, "POST", path, body, device, now=now))


def weight_of(body):
    from edgekm.sync.wire.frame import decode_frame
    return decode_frame(body).total_weight


def snapshot(agg, db):
    """Everything a rejection must leave unchanged."""
    conn = connect(db)
    try:
        counts = tuple(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                       for t in ("frames", "buckets", "windows", "models"))
        bucket_weight = conn.execute("SELECT coalesce(sum(total_weight), 0) "
                                     "FROM buckets").fetchone()[0]
        model_weight = conn.execute("SELECT coalesce(sum(total_weight), 0) "
                                    "FROM models").fetchone()[0]
    finally:
        conn.close()
    return counts, bucket_weight, model_weight


@pytest.fixture
def db(new_db):
    """A fresh store on each backend (a SQLite path, a PostgreSQL URL)."""
    return new_db()


@pytest.fixture
def agg(db, clock):
    a = Aggregator(db, clock=clock, random_state=0, coreset_size=20)
    yield a
    a.close()


@pytest.fixture
def key(agg):
    return agg.add_device("dev-a")


# ---------------------------------------------------------------- accept / duplicate / conflict


def test_accept_then_duplicate_then_conflict(agg, key):
    body = make_frame(seq=7)
    w = weight_of(body)
    first = agg.accept("m", "dev-a", body)
    assert first == {"status": "accepted", "frame_id": ["m", "dev-a", 1, 7], "weight": w,
                     "total_weight": w}
    again = agg.accept("m", "dev-a", body)
    assert again == {"status": "duplicate", "frame_id": ["m", "dev-a", 1, 7], "weight": w,
                     "total_weight": w}
    assert agg.total_weight("m") == w
    assert agg.frame_count("m") == 1
    other = make_frame(seq=7, seed=99)          # same id, different body
    with pytest.raises(ConflictError, match="different body"):
        agg.accept("m", "dev-a", other)
    assert isinstance(ConflictError("x"), ValueError) and isinstance(ConflictError("x"), EdgekmError)
    assert agg.total_weight("m") == w


def test_frame_ids_are_per_device_boot_and_model(agg, key):
    agg.add_device("dev-b")
    bodies = [make_frame(seq=0), make_frame(seq=0, boot=2), make_frame(seq=0, device="dev-b"),
              make_frame(seq=0, model="other")]
    devices = ["dev-a", "dev-a", "dev-b", "dev-a"]
    models = ["m", "m", "m", "other"]
    for body, device, model in zip(bodies, devices, models):
        assert agg.accept(model, device, body)["status"] == "accepted"
    assert agg.frame_count() == 4


def test_boot_ids_use_all_64_bits(agg, key):
    body = make_frame(boot=2**64 - 1)
    assert agg.accept("m", "dev-a", body)["frame_id"][2] == 2**64 - 1
    assert agg.accept("m", "dev-a", body)["status"] == "duplicate"
    assert agg.accept("m", "dev-a", make_frame(boot=2**63 - 1))["status"] == "accepted"


def test_large_frames_are_reduced_to_coreset_size(agg, key):
    body = make_frame(n=500, weights=np.full(500, 3.0))
    agg.accept("m", "dev-a", body)
    coreset = agg.aggregate("m")
    assert len(coreset) == 20
    assert coreset.total_weight == 1500.0
    assert coreset.level == 1


def test_float64_frames_are_stored_in_the_model_dtype(agg, key):
    agg.accept("m", "dev-a", make_frame(seq=0, dtype=np.float32))
    agg.accept("m", "dev-a", make_frame(seq=1, dtype=np.float64))
    coreset = agg.aggregate("m")
    assert coreset.dtype == np.float32
    assert agg.model_info("m")["dtype"] == "float32"


# ---------------------------------------------------------------- weight conservation


def test_weight_is_conserved_exactly(db, clock):
    """total_weight == sum of accepted frame weights == the aggregate's weight, to the unit,
    over hundreds of frames from several devices, with duplicates, across windows."""
    agg = Aggregator(db, clock=clock, random_state=1, coreset_size=16, window_seconds=60)
    devices = [f"dev-{i}" for i in range(5)]
    keys = {d: agg.add_device(d) for d in devices}
    rng = np.random.default_rng(0)
    expected, accepted, duplicates = 0.0, 0, 0
    sent = []
    for step in range(120):
        batch = []
        for device in devices[: 1 + step % 5]:
            seq = step
            body = make_frame(device=device, seq=seq, n=int(rng.integers(1, 40)),
                              seed=hash((device, seq)) % 2**32)
            batch.append(signed(agg, keys[device], body, device=device))
            sent.append((device, body))
        earlier = sent[:-len(batch)]
        if step % 3 == 0 and earlier:         # a retry of an earlier frame: a duplicate
            device, body = earlier[int(rng.integers(len(earlier)))]
            batch.append(signed(agg, keys[device], body, device=device))
        results = agg.accept_signed(batch)
        for result in results:
            assert isinstance(result, dict), result
            if result["status"] == "accepted":
                expected += result["weight"]
                accepted += 1
            else:
                duplicates += 1
        clock.now += 11.0
    assert duplicates > 10 and accepted > 300
    assert agg.frame_count("m") == accepted
    assert agg.total_weight("m") == expected
    assert agg.aggregate("m").total_weight == expected
    info = agg.model_info("m")
    assert sum(w["total_weight"] for w in info["windows"]) == expected
    assert len(info["windows"]) > 20
    # the whole weight is also in every union of all the windows
    assert agg.aggregate("m", windows=len(info["windows"]) + 5).total_weight == expected
    agg.close()


def test_aggregate_weight_matches_stored_buckets(agg, key, db):
    for seq in range(50):
        agg.accept("m", "dev-a", make_frame(seq=seq))
    conn = connect(db)
    stored = conn.execute("SELECT coalesce(sum(total_weight), 0) FROM buckets WHERE window = -1 OR "
                          "window > coalesce((SELECT folded_through FROM models), -1)").fetchone()[0]
    conn.close()
    assert stored == agg.total_weight("m") == agg.aggregate("m").total_weight


# ---------------------------------------------------------------- bounded aggregate


@pytest.mark.parametrize("r", [2, 3])
def test_aggregate_stays_bounded(tmp_path, r):
    clock = FakeClock()
    agg = Aggregator(tmp_path / "b.db", clock=clock, coreset_size=8, merge_degree=r,
                     durability="normal", random_state=0)
    agg.add_device("dev-a")
    counts = {}
    for seq in range(1, 401):
        agg.accept("m", "dev-a", make_frame(seq=seq, n=8, d=2))
        if seq in (10, 50, 100, 400):
            counts[seq] = agg.bucket_count("m")
            bound = (r - 1) * (math.floor(math.log(seq, r)) + 1)
            assert counts[seq] <= bound, (seq, counts[seq], bound)
            assert len(agg.aggregate("m")) <= 8 * bound
    # one window and one tree: the number of buckets is the digit sum of seq in base r
    digits = 0
    n = 400
    while n:
        digits += n % r
        n //= r
    assert counts[400] == digits
    agg.close()


def test_windows_are_folded_into_the_all_time_tree(agg, key, clock):
    """The all-time tree receives whole windows; its size stays logarithmic."""
    for seq in range(300):
        agg.accept("m", "dev-a", make_frame(seq=seq, n=4))
        clock.now += 600.0                       # 6 frames per hourly window
    all_time = agg.bucket_count("m", window=-1)
    assert 0 < all_time <= math.floor(math.log2(300)) + 1
    current = agg.current_window("m")
    assert agg.bucket_count("m", window=current) <= 3
    assert agg.aggregate("m").total_weight == agg.total_weight("m")


def test_retain_windows_drops_old_window_trees_only(db, clock):
    agg = Aggregator(db, clock=clock, coreset_size=8, retain_windows=3, random_state=0)
    agg.add_device("dev-a")
    for seq in range(40):
        agg.accept("m", "dev-a", make_frame(seq=seq, n=4))
        clock.now += 1800.0
    conn = connect(db)
    windows = {w for (w,) in conn.execute("SELECT DISTINCT window FROM buckets")}
    conn.close()
    current = agg.current_window("m")
    assert windows - {-1} <= set(range(current - 2, current + 1))
    assert agg.aggregate("m").total_weight == agg.total_weight("m")
    assert agg.frame_count("m") == 40          # frame records are kept for deduplication
    agg.close()


# ---------------------------------------------------------------- windows


def test_per_window_aggregates(agg, key, clock):
    clock.now = 3600.0 * 1000                 # the start of window 1000
    per_window = {}
    seq = 0
    for window in range(5):
        for _ in range(window + 2):
            body = make_frame(seq=seq)
            per_window[1000 + window] = per_window.get(1000 + window, 0.0) + weight_of(body)
            agg.accept("m", "dev-a", body)
            seq += 1
            clock.now += 60.0
        clock.now = 3600.0 * (1001 + window)
    clock.now -= 1.0                          # still inside window 1004
    assert agg.current_window("m") == 1004
    assert agg.aggregate("m", windows=1).total_weight == per_window[1004]
    assert agg.aggregate("m", windows=3).total_weight == sum(per_window[w] for w in (1002, 1003,
                                                                                    1004))
    assert agg.aggregate("m").total_weight == sum(per_window.values())
    info = agg.model_info("m")
    assert [(w["window"], w["total_weight"], w["frames"]) for w in info["windows"]] == [
        (w, per_window[w], w - 998) for w in range(1000, 1005)]
    assert info["windows"][0]["start"] == 3600.0 * 1000
    clock.now = 3600.0 * 1007                 # two empty windows later
    with pytest.raises(NotFittedError):
        agg.aggregate("m", windows=2)
    assert agg.aggregate("m", windows=4).total_weight == per_window[1004]
    centers = agg.fit("m", 3, windows=5)
    assert centers.shape == (3, 3)
    with pytest.raises(ValueError):
        agg.aggregate("m", windows=0)


def test_clock_stepping_back_into_a_folded_window(agg, key, clock):
    agg.accept("m", "dev-a", make_frame(seq=0))
    clock.now += 7200.0
    agg.accept("m", "dev-a", make_frame(seq=1))      # folds the first window
    clock.now -= 7200.0
    agg.accept("m", "dev-a", make_frame(seq=2))      # back in the folded window
    total = sum(weight_of(make_frame(seq=s)) for s in range(3))
    assert agg.total_weight("m") == total
    assert agg.aggregate("m").total_weight == total
    assert agg.aggregate("m", windows=1).total_weight == weight_of(make_frame(seq=0)) + \
        weight_of(make_frame(seq=2))


def test_window_length_is_fixed_per_model(db, clock):
    agg = Aggregator(db, clock=clock, window_seconds=60)
    agg.add_device("dev-a")
    agg.accept("m", "dev-a", make_frame())
    agg.close()
    agg = Aggregator(db, clock=clock, window_seconds=3600)
    assert agg.model_info("m")["window_seconds"] == 60
    agg.add_model("new", 3)
    assert agg.model_info("new")["window_seconds"] == 3600
    agg.close()


# ---------------------------------------------------------------- authentication


def test_authenticate_good_signature(agg, key):
    body = make_frame()
    up = signed(agg, key, body)
    assert agg.authenticate("POST", up.path, body, up.headers) == "dev-a"


def test_authenticate_rejections(agg, key, clock):
    body = make_frame()
    path = PATH.format("m")

    def headers(**kw):
        h = auth.signed_headers(key, "POST", path, body, "dev-a", now=clock.now)
        h.update(kw)
        return h
    with pytest.raises(auth.AuthError, match="signature"):
        agg.authenticate("POST", path, body, headers(**{auth.H_SIGNATURE: "0" * 64}))
    with pytest.raises(auth.AuthError, match="signature"):
        agg.authenticate("POST", path, body + b"x", headers())
    with pytest.raises(auth.AuthError, match="signature"):
        agg.authenticate("POST", PATH.format("other"), body, headers())
    stale = auth.signed_headers(key, "POST", path, body, "dev-a", now=clock.now - 301)
    with pytest.raises(auth.AuthError, match="skew"):
        agg.authenticate("POST", path, body, stale)
    ok = auth.signed_headers(key, "POST", path, body, "dev-a", now=clock.now - 300)
    assert agg.authenticate("POST", path, body, ok) == "dev-a"
    with pytest.raises(auth.AuthError, match="nonce"):
        agg.authenticate("POST", path, body, ok)
    h = headers()
    del h[auth.H_NONCE]
    with pytest.raises(auth.AuthError, match="missing"):
        agg.authenticate("POST", path, body, h)
    with pytest.raises(auth.AuthError, match="missing"):
        agg.authenticate("POST", path, body, {})
    other_key = auth.new_key()
    unknown = auth.signed_headers(other_key, "POST", path, body, "dev-z", now=clock.now)
    with pytest.raises(auth.AuthError, match="unknown device"):
        agg.authenticate("POST", path, body, unknown)


def test_revoked_device_is_forbidden_and_kept(agg, key, clock):
    body = make_frame()
    agg.revoke_device("dev-a")
    up = signed(agg, key, body)
    with pytest.raises(ForbiddenError, match="revoked"):
        agg.authenticate("POST", up.path, body, up.headers)
    # a wrong signature on a revoked device is a 401: only the device learns it is revoked
    bad = dict(up.headers, **{auth.H_SIGNATURE: "0" * 64})
    with pytest.raises(auth.AuthError):
        agg.authenticate("POST", up.path, body, bad)
    with pytest.raises(ForbiddenError):
        agg.accept("m", "dev-a", body)
    [device] = agg.list_devices()
    assert device["device_id"] == "dev-a" and device["revoked"] == clock.now
    assert "key" not in device and "key_hex" not in device
    with pytest.raises(DeviceExistsError):
        agg.add_device("dev-a")
    agg.revoke_device("dev-a")                  # idempotent
    with pytest.raises(UnknownDeviceError):
        agg.revoke_device("nobody")


def test_device_keys_are_hex_and_ids_validated(agg):
    key = agg.add_device("sensor.7_b-2")
    assert len(bytes.fromhex(key)) == 32
    with pytest.raises(DeviceExistsError):
        agg.add_device("sensor.7_b-2")
    for bad in ("", "-x", "a" * 65, "a b", "é"):
        with pytest.raises(FrameError):
            agg.add_device(bad)


def test_nonces_expire_after_twice_the_skew(agg, key, clock, db):
    body = make_frame()
    up = signed(agg, key, body)
    agg.authenticate("POST", up.path, body, up.headers)
    clock.now += 601 + 10
    up2 = signed(agg, key, body)
    agg.authenticate("POST", up2.path, body, up2.headers)
    conn = connect(db)
    assert conn.execute("SELECT count(*) FROM nonces").fetchone()[0] == 1
    conn.close()


# ---------------------------------------------------------------- rejections change nothing


def _rejections(agg, key, clock):
    """(name, uploads to accept_signed, expected exception type)."""
    agg.add_device("dev-b")
    key_r = agg.add_device("dev-r2")
    agg.revoke_device("dev-r2")
    good = make_frame(seq=1)
    out = [
        ("bad frame", [signed(agg, key, b"\x81\xa1v\x01")], FrameError),
        ("truncated", [signed(agg, key, good[:-3])], FrameError),
        ("wrong dimension", [signed(agg, key, make_frame(seq=50, d=4))], DimensionError),
        ("frame of another device", [signed(agg, key, make_frame(device="dev-b", seq=51))],
         ForbiddenError),
        ("frame of another model", [signed(agg, key, make_frame(model="x", seq=52))],
         ForbiddenError),
        ("conflict", [signed(agg, key, make_frame(seq=0, seed=5))], ConflictError),
        ("bad signature", [Upload("m", "POST", PATH.format("m"), good, dict(
            signed(agg, key, good).headers, **{auth.H_SIGNATURE: "ab" * 32}))], auth.AuthError),
        ("stale", [signed(agg, key, good, now=clock.now - 400)], auth.AuthError),
        ("unknown device", [signed(agg, auth.new_key(), make_frame(device="ghost"),
                                   device="ghost")], auth.AuthError),
        ("revoked", [signed(agg, key_r, make_frame(device="dev-r2"), device="dev-r2")],
         ForbiddenError),
    ]
    return out


def test_every_rejection_changes_nothing(agg, key, clock, db):
    agg.accept("m", "dev-a", make_frame(seq=0))
    cases = _rejections(agg, key, clock)
    before, total = snapshot(agg, db), agg.total_weight("m")
    for name, uploads, exc_type in cases:
        [result] = agg.accept_signed(uploads)
        assert isinstance(result, exc_type), (name, result)
        assert snapshot(agg, db) == before, name
        assert agg.total_weight("m") == total, name
    # a reused nonce: the first use is accepted, the replay rejected
    up = signed(agg, key, make_frame(seq=9))
    first, replay = agg.accept_signed([up, up])
    assert first["status"] == "accepted"
    assert isinstance(replay, auth.AuthError) and "nonce" in str(replay)
    assert agg.total_weight("m") == total + first["weight"]


def test_a_rejection_inside_a_batch_does_not_undo_the_others(agg, key, db):
    bodies = [make_frame(seq=s) for s in range(6)]
    ups = [signed(agg, key, b) for b in bodies]
    ups.insert(3, signed(agg, key, make_frame(seq=60, d=5)))
    results = agg.accept_signed(ups)
    assert isinstance(results[3], DimensionError)
    assert [r["status"] for r in results if isinstance(r, dict)] == ["accepted"] * 6
    assert agg.total_weight("m") == sum(weight_of(b) for b in bodies)


def test_unknown_model_when_auto_creation_is_off(db, clock):
    agg = Aggregator(db, clock=clock, auto_create_models=False)
    agg.add_device("dev-a")
    before = snapshot(agg, db)
    with pytest.raises(UnknownModelError):
        agg.accept("m", "dev-a", make_frame())
    assert snapshot(agg, db) == before
    agg.add_model("m", 3)
    assert agg.accept("m", "dev-a", make_frame())["status"] == "accepted"
    with pytest.raises(ValueError, match="n_features"):
        agg.add_model("m", 4)
    agg.add_model("m", 3)                       # the same definition again is fine
    with pytest.raises(UnknownModelError):
        agg.total_weight("nope")
    agg.close()


def test_max_frame_bytes_limit_and_limit_plus_one(db, clock):
    body = make_frame()
    agg = Aggregator(db, clock=clock, max_frame_bytes=len(body))
    agg.add_device("dev-a")
    assert agg.accept("m", "dev-a", body)["status"] == "accepted"
    agg.close()
    agg = Aggregator(db, clock=clock, max_frame_bytes=len(body) - 1)
    with pytest.raises(FrameTooLargeError):
        agg.accept("m", "dev-a", make_frame(seq=1))
    agg.close()


def test_max_points_limit_and_limit_plus_one(db, clock):
    agg = Aggregator(db, clock=clock, max_points=10)
    agg.add_device("dev-a")
    assert agg.accept("m", "dev-a", make_frame(n=10))["status"] == "accepted"
    with pytest.raises(FrameError):
        agg.accept("m", "dev-a", make_frame(seq=1, n=11))
    agg.close()


# ---------------------------------------------------------------- Observation 1


def test_observation_1_on_shuttle(tmp_path):
    """Four devices stream disjoint parts of Shuttle; the aggregator's centres cost at most
    1.05 x batch KMeans on the union."""
    from sklearn.cluster import KMeans

    from edgekm.datasets import load_shuttle

    X = load_shuttle()
    rng = np.random.default_rng(0)
    X = X[rng.permutation(len(X))]
    k = 10
    agg = Aggregator(tmp_path / "obs1.db", random_state=0)
    parts = np.array_split(X, 4)
    total = 0.0
    for i, part in enumerate(parts):
        device = f"dev-{i}"
        key = agg.add_device(device)
        for seq, chunk in enumerate(np.array_split(part, 4)):
            est = StreamingKMeans(n_clusters=k, algorithm="cc", random_state=seq + 10 * i)
            est.partial_fit(chunk)
            summary = est.coreset().merge(size=200, random_state=seq)
            assert len(summary) <= 200 and summary.total_weight == len(chunk)
            body = encode_frame(model="shuttle", device=device, boot=1, seq=seq,
                                span=(0, len(chunk) - 1), points=summary.points,
                                weights=summary.weights, level=summary.level,
                                created=time.time())
            [result] = agg.accept_signed([signed(agg, key, body, device=device,
                                                 model="shuttle")])
            assert result["status"] == "accepted", result
            total += len(chunk)
    assert agg.total_weight("shuttle") == total == len(X)
    centers = agg.fit("shuttle", k, n_init=10, random_state=0)
    X64 = X.astype(np.float64)

    def cost(C):
        d = ((X64[:, None, :] - np.asarray(C, np.float64)[None]) ** 2).sum(-1)
        return float(d.min(axis=1).sum())
    batch = KMeans(n_clusters=k, n_init=10, random_state=0).fit(X64)
    ratio = cost(centers) / cost(batch.cluster_centers_)
    assert ratio <= 1.05, ratio
    agg.close()


# ---------------------------------------------------------------- persistence


def test_restart_keeps_everything(db, clock):
    agg = Aggregator(db, clock=clock, coreset_size=8, random_state=3)
    key = agg.add_device("dev-a")
    agg.add_device("dev-b")
    agg.revoke_device("dev-b")
    ups = []
    for s in range(30):
        ups.append(signed(agg, key, make_frame(seq=s)))
        [result] = agg.accept_signed([ups[-1]])
        assert result["status"] == "accepted"
        clock.now += 100.0
    before = (agg.total_weight("m"), agg.aggregate("m"), agg.aggregate("m", windows=2),
              agg.list_devices(), agg.model_info("m"))
    agg.close()
    with pytest.raises(UnavailableError):
        agg.total_weight("m")
    agg = Aggregator(db, clock=clock, coreset_size=8, random_state=3)
    after = (agg.total_weight("m"), agg.aggregate("m"), agg.aggregate("m", windows=2),
             agg.list_devices(), agg.model_info("m"))
    assert after == before
    # dedup, nonces and the random stream survive the restart
    [dup] = agg.accept_signed([signed(agg, key, make_frame(seq=3))])
    assert dup["status"] == "duplicate"
    [replay] = agg.accept_signed([ups[-1]])
    assert isinstance(replay, auth.AuthError)
    agg.accept("m", "dev-a", make_frame(seq=31))
    agg.close()


def test_merges_are_reproducible(tmp_path):
    def run(path):
        clock = FakeClock()
        agg = Aggregator(path, clock=clock, coreset_size=8, random_state=42)
        agg.add_device("dev-a")
        for seq in range(40):
            agg.accept("m", "dev-a", make_frame(seq=seq, n=12))
            clock.now += 900.0
        result = agg.aggregate("m")
        agg.close()
        return result
    a, b = run(tmp_path / "a.db"), run(tmp_path / "b.db")
    assert a == b and a.total_weight == b.total_weight


def test_restart_mid_stream_gives_the_same_trees(tmp_path):
    """The seed and the reduce counter are persisted: closing and reopening the
    aggregator between frames gives bit-identical buckets."""
    frames = [make_frame(seq=s, n=12) for s in range(25)]
    one = Aggregator(tmp_path / "one.db", coreset_size=8, random_state=7)
    one.add_device("dev-a")
    for body in frames:
        one.accept("m", "dev-a", body)
    path = tmp_path / "two.db"
    two = Aggregator(path, coreset_size=8, random_state=7)
    two.add_device("dev-a")
    for i, body in enumerate(frames):
        if i % 5 == 4:
            two.close()
            two = Aggregator(path, coreset_size=8, random_state=7)
        two.accept("m", "dev-a", body)
    assert one.aggregate("m") == two.aggregate("m")
    one.close()
    two.close()


def test_sqlite_settings_and_schema_version(sqlite_only, db, agg):
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT version FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()
    w = agg._writer
    assert w.execute("PRAGMA synchronous").fetchone()[0] == 2          # FULL
    assert w.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert agg.check() == "ok"


def test_durability_normal(tmp_path):
    agg = Aggregator(tmp_path / "n.db", durability="normal")
    assert agg._writer.execute("PRAGMA synchronous").fetchone()[0] == 1
    agg.close()
    with pytest.raises(ValueError, match="durability"):
        Aggregator(tmp_path / "x.db", durability="off")


def test_newer_or_foreign_databases_are_refused(tmp_path):
    def write(db, sql):
        conn = sqlite3.connect(db)
        conn.execute(sql)
        conn.commit()
        conn.close()

    newer = tmp_path / "newer.db"
    Aggregator(newer).close()
    write(newer, "UPDATE schema_version SET version = 99")
    with pytest.raises(SchemaError, match="99"):
        Aggregator(newer)
    foreign = tmp_path / "foreign.db"
    write(foreign, "CREATE TABLE t (x)")
    with pytest.raises(SchemaError, match="not an edgekm"):
        Aggregator(foreign)


def test_aggregate_of_an_empty_or_unknown_model(agg):
    agg.add_model("empty", 3)
    with pytest.raises(NotFittedError):
        agg.aggregate("empty")
    with pytest.raises(UnknownModelError):
        agg.aggregate("nope")
    with pytest.raises(UnknownModelError):
        agg.fit("nope", 2)


def test_parameters_are_validated(tmp_path):
    for kwargs in ({"coreset_size": 0}, {"merge_degree": 1}, {"window_seconds": 0},
                   {"window_seconds": math.inf}, {"retain_windows": 0}, {"max_frame_bytes": -1}):
        with pytest.raises(ValueError):
            Aggregator(tmp_path / "p.db", **kwargs)


def test_concurrent_readers_and_writer(agg, key):
    import threading

    errors = []
    stop = threading.Event()

    def reader():
        try:
            while not stop.is_set():
                try:
                    c = agg.aggregate("m")
                    assert c.total_weight <= agg.total_weight("m")
                except (UnknownModelError, NotFittedError):
                    pass
        except Exception as exc:       # noqa: BLE001
            errors.append(exc)
    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    writers = []
    for i in range(2):
        ups = [signed(agg, key, make_frame(seq=100 * i + s)) for s in range(40)]
        writers.append(threading.Thread(target=lambda u=ups: [agg.accept_signed([x]) for x in u]))
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    assert agg.frame_count("m") == 80
    assert agg.aggregate("m").total_weight == agg.total_weight("m")


def test_coreset_union_is_an_edgekm_coreset(agg, key):
    for seq in range(5):
        agg.accept("m", "dev-a", make_frame(seq=seq))
    c = agg.aggregate("m")
    assert isinstance(c, Coreset) and c.n_features == 3


def cost_about(points, weights, spread, center):
    """sum of spread + w * ||mu - c||^2: the data cost about ``center`` a coreset keeps."""
    diff = np.asarray(points, dtype=np.float64) - center
    return float(np.sum(spread) + np.sum(weights * np.einsum("ij,ij->i", diff, diff)))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_spread_travels_from_devices_through_frames_and_trees_exactly(tmp_path, clock, dtype):
    """Frame v2: what each coreset point stands for reaches the aggregate. The data's cost
    about any fixed centre is kept through the device reduce, the frames, the aggregator's
    reduces on ingest and its tree merges, and a restart that reloads the buckets."""
    rng = np.random.default_rng(5)
    X = np.concatenate([rng.normal(loc, 1.0, size=(3000, 4)) for loc in (-5.0, 0.0, 5.0)])
    X = X.astype(dtype)
    rng.shuffle(X)
    center = np.array([0.5, -0.25, 1.0, 2.0])
    truth = cost_about(X, np.ones(len(X)), np.zeros(len(X)), center)
    db = tmp_path / "s.db"
    with Aggregator(db, clock=clock, random_state=0, coreset_size=24, merge_degree=2) as agg:
        for i in range(3):
            agg.add_device(f"dev-{i}")
        for seq, part in enumerate(np.array_split(X, 12)):
            device = f"dev-{seq % 3}"
            model = StreamingKMeans(3, algorithm="ct", coreset_size=40, dtype=dtype,
                                    random_state=seq).partial_fit(part)
            c = model.coreset()
            assert c.total_spread > 0
            body = encode_frame(model="m", device=device, boot=1, seq=seq,
                                span=(0, len(part) - 1), points=c.points, weights=c.weights,
                                level=c.level, created=0.0, spread=c.spread)
            assert decode_frame_version(body) == 2
            agg.accept("m", device, body)
        agg_coreset = agg.aggregate("m")
        assert agg_coreset.total_weight == len(X)
        got = cost_about(agg_coreset.points, agg_coreset.weights, agg_coreset.spread, center)
    rtol = 1e-9 if dtype == np.float64 else 1e-5
    assert got == pytest.approx(truth, rel=rtol)
    with Aggregator(db, clock=clock, random_state=0, coreset_size=24) as again:
        reloaded = again.aggregate("m")
        np.testing.assert_array_equal(reloaded.spread, agg_coreset.spread)


def decode_frame_version(body):
    from edgekm.sync.wire.frame import decode_frame
    return decode_frame(body).version
