"""Database growth bounds: compaction of old windows, dedup rows collapsed into seq runs,
the admin call and the server timer, and the v2 -> v3 migration."""

import sqlite3
import time
import warnings

import numpy as np
import pytest

from edgekm.sync import encode_frame
from edgekm.sync.cloud import database as store
from edgekm.sync.cloud.aggregator import Aggregator, ConflictError, DeviceWeightCapError
from edgekm.sync.wire.telemetry import TelemetrySummary, encode_telemetry
from helpers.fakes import make_frame
from helpers.postgres import connect

WINDOW = 10.0
SMALL = {"n": 8, "d": 2}          # the frames of this module: 8 points in 2-d


def rows(db, table, where=""):
    conn = connect(db)
    try:
        return conn.execute(f"SELECT count(*) FROM {table} {where}").fetchone()[0]
    finally:
        conn.close()


def scalar(db, sql, *args):
    conn = connect(db)
    try:
        return conn.execute(sql, args).fetchone()[0]
    finally:
        conn.close()


@pytest.fixture
def db(new_db):
    """A fresh store on each backend (a SQLite path, a PostgreSQL URL)."""
    return new_db("c")


@pytest.fixture
def agg(db, clock):
    a = Aggregator(db, clock=clock, random_state=0, coreset_size=16, window_seconds=WINDOW,
                   compact_windows=3, dedup_seconds=600, checkpoint_interval=None)
    a.add_device("dev-a")
    a.add_device("dev-b")
    yield a
    a.close()


def feed(agg, clock, windows, seqs, per_window=3):
    """``per_window`` frames per device in each of ``windows`` windows; returns the bodies."""
    bodies = {}
    for _ in range(windows):
        for _ in range(per_window):
            for device in ("dev-a", "dev-b"):
                seq = seqs[device]
                seqs[device] += 1
                body = make_frame(seq=seq, device=device, **SMALL)
                assert agg.accept("m", device, body)["status"] == "accepted"
                bodies[(device, seq)] = body
        clock.now += WINDOW
    return bodies


def test_compaction_keeps_weight_and_bounds_rows(agg, db, clock):
    seqs = {"dev-a": 0, "dev-b": 0}
    bounds = []
    for round_ in range(3):
        feed(agg, clock, 40, seqs)
        total = agg.total_weight("m")
        all_time = agg.aggregate("m").total_weight
        window_weight = scalar(db, "SELECT coalesce(sum(total_weight), 0) FROM windows")
        recent = agg.aggregate("m", windows=3).total_weight
        stats = agg.compact()
        assert stats["windows_compacted"] > 0
        assert (stats["frames_collapsed"] > 0) == (round_ > 0)     # 400 s < dedup_seconds
        # weight is kept to the last unit (integer weights)
        assert agg.total_weight("m") == total == all_time
        assert agg.aggregate("m").total_weight == all_time
        assert scalar(db, "SELECT coalesce(sum(total_weight), 0) FROM windows") == window_weight
        assert agg.aggregate("m", windows=3).total_weight == recent
        compacted = scalar(db, "SELECT coalesce(sum(total_weight), 0) FROM buckets WHERE window = -2")
        assert compacted == scalar(db, "SELECT total_weight FROM windows WHERE window = -2")
        assert scalar(db, "SELECT coalesce(sum(weight), 0) FROM device_windows") == total
        assert agg.frame_count("m") == sum(seqs.values())
        info = agg.model_info("m")
        assert info["compacted"]["total_weight"] == compacted and len(info["windows"]) <= 4
        bounds.append({t: rows(db, t) for t in ("frames", "windows", "device_windows",
                                                "buckets", "seq_ranges")})
    # after 120 windows and 720 frames the tables hold no more than after 80
    # (buckets: the compacted tree grows like log2 of the windows compacted)
    for table in ("frames", "windows", "device_windows", "seq_ranges"):
        assert bounds[2][table] <= bounds[1][table], (table, bounds)
    assert bounds[2]["buckets"] <= bounds[1]["buckets"] + 2
    assert bounds[2]["seq_ranges"] == 2                     # one run per (device, boot)
    assert bounds[2]["frames"] <= 2 * 3 * 60 + 2             # dedup_seconds of frames + 1 each
    assert agg.check() == "ok"
    devices = {d["device_id"]: d["frames"] for d in agg.list_devices()}
    assert devices == seqs


def test_dedup_across_compaction(agg, db, clock):
    seqs = {"dev-a": 0, "dev-b": 0}
    bodies = feed(agg, clock, 80, seqs, per_window=1)
    # dev-a skips seq 500 (a frame merged away in its outbox) and goes on after it
    for seq in (501, 502):
        bodies[("dev-a", seq)] = make_frame(seq=seq, **SMALL)
        agg.accept("m", "dev-a", bodies[("dev-a", seq)])
    clock.now += 1000.0
    agg.accept("m", "dev-a", make_frame(seq=503, **SMALL))               # recent: keeps its digest
    agg.compact()
    assert rows(db, "frames", "WHERE device_id = 'dev-a'") == 1
    conn = connect(db)
    runs = conn.execute(
        "SELECT seq_lo, seq_hi FROM seq_ranges WHERE device_id = 'dev-a' ORDER BY 1").fetchall()
    conn.close()
    assert runs == [(0, 79), (501, 502)]
    total, frames = agg.total_weight("m"), agg.frame_count("m")
    # an old frame, as it was or with another body: a duplicate, never merged again
    for body in (bodies[("dev-a", 3)], make_frame(seq=3, seed=99, **SMALL), bodies[("dev-a", 502)]):
        answer = agg.accept("m", "dev-a", body)
        assert answer["status"] == "duplicate" and answer["collapsed"] is True
    assert (agg.total_weight("m"), agg.frame_count("m")) == (total, frames)
    # the recent frame still has its digest: a changed body is a conflict
    with pytest.raises(ConflictError):
        agg.accept("m", "dev-a", make_frame(seq=503, seed=5, **SMALL))
    assert agg.accept("m", "dev-a", make_frame(seq=503, **SMALL))["status"] == "duplicate"
    # the gap was never accepted: seq 500 arriving late is merged, not lost
    late = make_frame(seq=500, **SMALL)
    answer = agg.accept("m", "dev-a", late)
    assert answer["status"] == "accepted" and agg.total_weight("m") == total + answer["weight"]
    # another boot's seq 3 is not in dev-a boot 1's run
    assert agg.accept("m", "dev-a", make_frame(seq=3, boot=2, **SMALL))["status"] == "accepted"
    agg.compact()
    agg.compact()                                            # idempotent
    assert agg.accept("m", "dev-a", late)["status"] == "duplicate"


def summary(seq):
    k, d = 2, 2
    return encode_telemetry(TelemetrySummary(
        model="m", device="dev-a", boot=7, seq=seq, window=(1.0, 2.0), version=0,
        counts=np.full(k, 5.0), sums=np.zeros((k, d)), sumsq=np.zeros((k, d)), n_points=10,
        raw_bytes=80, forwarded_bytes=40, anomalies=np.ones((1, d), dtype=np.float32),
        anomaly_labels=np.zeros(1, dtype=np.int32), anomaly_scores=np.full(1, 2.0), psi=0.0,
        dist_quantiles=np.array([0.1, 0.2, 0.3]), drift_score=0.1, assign_latency_us=1.0))


def test_telemetry_and_anomalies_are_collapsed(agg, db, clock):
    agg.accept("m", "dev-a", make_frame(seq=0, **SMALL))
    for seq in range(5):
        assert agg.accept_telemetry("m", "dev-a", summary(seq))["status"] == "accepted"
    clock.now += 700.0
    stats = agg.compact()
    assert stats["telemetry_collapsed"] == 5 and stats["anomalies_deleted"] == 5
    assert rows(db, "telemetry") == 0 and rows(db, "anomalies") == 0
    before = agg.drift("m")["telemetry"]
    answer = agg.accept_telemetry("m", "dev-a", summary(2))
    assert answer["status"] == "duplicate" and answer["collapsed"] is True
    assert agg.drift("m")["telemetry"] == before
    assert agg.accept_telemetry("m", "dev-a", summary(5))["status"] == "accepted"


def test_windowed_aggregate_never_includes_the_all_time_tree(agg, clock):
    seqs = {"dev-a": 0, "dev-b": 0}
    feed(agg, clock, 5, seqs)
    feed(agg, clock, 1, seqs)           # folds the earlier windows into the all-time tree
    total = agg.total_weight("m")
    # far more windows than exist: the union of every window, not that plus all time
    assert agg.aggregate("m", windows=10**6).total_weight == total


def test_v2_database_is_migrated(tmp_path, clock):
    path = str(tmp_path / "v2.db")

    def ones(seq):
        return encode_frame(model="m", device="dev-a", boot=1, seq=seq, span=(0, 7),
                            points=np.eye(8, 2), weights=np.ones(8), level=0, created=0.0)
    with Aggregator(path, clock=clock, random_state=0) as a:
        a.add_device("dev-a")
        a.accept("m", "dev-a", ones(0))
        weight = a.total_weight("m")
    conn = sqlite3.connect(path)            # take it back to schema v2
    conn.executescript("""
        DROP TABLE device_windows; DROP TABLE seq_ranges;
        DROP INDEX frames_by_received; DROP INDEX telemetry_by_received;
        DROP INDEX anomalies_by_received;
        ALTER TABLE frames DROP COLUMN clipped;
        ALTER TABLE models DROP COLUMN clipped_weight;
        ALTER TABLE models DROP COLUMN max_device_weight;
        ALTER TABLE models DROP COLUMN weight_cap_policy;
        ALTER TABLE models DROP COLUMN compacted_through;
        ALTER TABLE buckets DROP COLUMN spread;
        DROP TABLE version_drift; DROP TABLE canary_gates; DROP TABLE canary_cohorts;
        DROP TABLE canary_policies;
        UPDATE schema_version SET version = 2;""")
    conn.close()
    with Aggregator(path, clock=clock, random_state=0, max_device_weight=1.5 * weight) as a:
        assert scalar(path, "SELECT version FROM schema_version") == store.SCHEMA_VERSION == 5
        assert a.total_weight("m") == weight
        # the migrated device_windows row counts against the cap
        with pytest.raises(DeviceWeightCapError):
            a.accept("m", "dev-a", ones(1))
        assert a.accept("m", "dev-a", ones(0))["status"] == "duplicate"


def test_v3_database_is_migrated_and_its_buckets_read_with_zero_spread(tmp_path, clock):
    path = str(tmp_path / "v3.db")
    points = np.arange(16.0).reshape(8, 2)
    with Aggregator(path, clock=clock, random_state=0) as a:
        a.add_device("dev-a")
        a.accept("m", "dev-a", encode_frame(model="m", device="dev-a", boot=1, seq=0,
                                            span=(0, 7), points=points, weights=np.ones(8),
                                            level=0, created=0.0))
    conn = sqlite3.connect(path)            # take it back to schema v3: no spread column
    conn.executescript("ALTER TABLE buckets DROP COLUMN spread; DROP TABLE version_drift; "
                       "DROP TABLE canary_gates; DROP TABLE canary_cohorts; "
                       "DROP TABLE canary_policies; "
                       "UPDATE schema_version SET version = 3;")
    conn.close()
    with Aggregator(path, clock=clock, random_state=0) as a:
        assert scalar(path, "SELECT version FROM schema_version") == 5
        assert scalar(path, "SELECT count(*) FROM buckets WHERE spread IS NULL") > 0
        before = a.aggregate("m")
        np.testing.assert_array_equal(before.spread, np.zeros(len(before)))
        assert before.total_weight == 8.0
        # a v2 frame merges on top: its spread is kept beside the old buckets' zeros
        a.accept("m", "dev-a", encode_frame(model="m", device="dev-a", boot=1, seq=1,
                                            span=(8, 9), points=points[:2],
                                            weights=np.array([2.0, 3.0]), level=1,
                                            created=0.0, spread=np.array([0.5, 1.5])))
        after = a.aggregate("m")
        assert after.total_weight == 13.0
        assert after.total_spread == 2.0


# ---------------------------------------------------------------- over HTTP

def test_admin_compact_and_timer(agg, clock):
    pytest.importorskip("starlette")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
        from starlette.testclient import TestClient
    from edgekm.sync.cloud.http.app import create_app

    seqs = {"dev-a": 0, "dev-b": 0}
    feed(agg, clock, 8, seqs)
    app = create_app(agg, admin_token="tok", policy_interval=None, compact_interval=None)
    with TestClient(app) as client:
        assert client.post("/v1/admin/compact").status_code == 401
        r = client.post("/v1/admin/compact", headers={"authorization": "Bearer tok"})
        assert r.status_code == 200 and r.json()["windows_compacted"] > 0
        text = client.get("/metrics").text
        assert "edgekm_compactions_total 1.0" in text
        assert 'edgekm_db_rows{table="seq_ranges"}' in text
    feed(agg, clock, 8, seqs)
    app = create_app(agg, policy_interval=None, compact_interval=0.02)
    with TestClient(app):
        deadline = time.monotonic() + 20
        while agg.model_info("m")["compacted"]["through"] < clock.now // WINDOW - 4:
            assert time.monotonic() < deadline, "the compaction timer never ran"
            time.sleep(0.02)
    assert agg.total_weight("m") == agg.aggregate("m").total_weight
