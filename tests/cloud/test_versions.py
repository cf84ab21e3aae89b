"""Centroid versions on the aggregator: publish, stable labels, rollout, telemetry, drift."""

import json
import sqlite3
import time
import warnings

import numpy as np
import pytest

pytest.importorskip("scipy")
pytest.importorskip("starlette")
pytest.importorskip("httpx")

with warnings.catch_warnings():
    # as in test_server.py: Starlette warns when its TestClient falls back to httpx
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient  # noqa: E402

import edgekm  # noqa: E402
from edgekm.cli import main as cli_main  # noqa: E402
from edgekm.sync import encode_frame  # noqa: E402
from edgekm.sync.cloud import database as store  # noqa: E402
from edgekm.sync.wire import auth
from edgekm.sync.cloud.aggregator import Aggregator, ConflictError, ForbiddenError  # noqa: E402
from edgekm.sync.cloud.http.app import create_app  # noqa: E402
from edgekm.sync.wire.telemetry import TelemetrySummary, encode_telemetry  # noqa: E402
from edgekm.sync.wire.version import decode_version  # noqa: E402
from edgekm.sync.cloud.versions import (RolloutError, UnknownVersionError,  # noqa: E402
                                        cohort_bucket, in_cohort, match_labels)
from edgekm.solve import squared_distances, weighted_quantiles  # noqa: E402
from helpers.fakes import FakeClock  # noqa: E402
from helpers.postgres import REFUSED, connect  # noqa: E402
from helpers.versions import pull_during, two_versions  # noqa: E402

ADMIN = "admin-token-for-tests"
BLOBS = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0], [6.0, 6.0], [3.0, 10.0]])


def blob_points(centres, n_per=150, seed=0, scale=0.3):
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(c, scale, size=(n_per, len(c))) for c in centres])


def frame(points, device="dev-a", model="m", seq=0, weights=None):
    points = np.asarray(points, dtype=np.float32)
    w = np.ones(len(points)) if weights is None else weights
    return encode_frame(model=model, device=device, boot=1, seq=seq, span=(0, len(points) - 1),
                        points=points, weights=w, level=0, created=0.0)


@pytest.fixture
def clock():
    return FakeClock(1_700_000_000.0)


@pytest.fixture
def agg(new_db, clock):
    a = Aggregator(new_db("v"), random_state=0, clock=clock, coreset_size=400)
    a.add_device("dev-a")
    yield a
    a.close()


def fill(agg, centres=BLOBS[:4], seq=0, seed=0, device="dev-a"):
    return agg.accept("m", device, frame(blob_points(centres, seed=seed), device=device, seq=seq))


# ---------------------------------------------------------------- pure functions


def test_match_labels_is_invariant_to_the_order_of_the_fit():
    rng = np.random.default_rng(1)
    parent = rng.normal(size=(6, 3)) * 10
    new = parent + rng.normal(scale=0.1, size=parent.shape)
    labels, new_c, vanished, shift = match_labels(new, parent)
    assert labels.tolist() == list(range(6)) and new_c == [] and vanished == []
    assert shift == pytest.approx(np.sqrt(((new - parent) ** 2).sum(1)).max())
    for seed in range(5):
        perm = np.random.default_rng(seed).permutation(6)
        got, _, _, s = match_labels(new[perm], parent)
        published = np.empty_like(new)
        published[got] = new[perm]
        np.testing.assert_array_equal(published, new)
        assert s == shift
    # without a parent: lexicographic, so also order-free
    a, _, _, none = match_labels(new)
    b, _, _, _ = match_labels(new[::-1])
    assert none is None
    pa, pb = np.empty_like(new), np.empty_like(new)
    pa[a], pb[b] = new, new[::-1]
    np.testing.assert_array_equal(pa, pb)


def test_match_labels_reports_new_and_vanished_clusters():
    parent = BLOBS[:4]
    grown = np.concatenate([BLOBS[4:5], BLOBS[[2, 0, 3, 1]] + 0.01])   # k 4 -> 5
    labels, new, vanished, _ = match_labels(grown, parent)
    assert labels.tolist() == [4, 2, 0, 3, 1] and new == [4] and vanished == []
    shrunk = BLOBS[[3, 0, 1]]                                           # k 4 -> 3, 2 gone
    labels, new, vanished, _ = match_labels(shrunk, parent)
    # labels 0 and 1 keep their meaning; parent 3 must take free label 2: reported both ways
    assert labels.tolist() == [2, 0, 1] and new == [2] and sorted(vanished) == [2, 3]


def weighted_quantile_oracle(values, weights, q):
    return np.quantile(values, q, weights=weights, method="inverted_cdf")


@pytest.mark.parametrize("seed", range(5))
def test_weighted_quantiles_match_numpy(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    values = rng.exponential(size=n)
    weights = rng.integers(1, 20, size=n).astype(np.float64) * rng.choice([0.5, 1.0, 3.0])
    got = weighted_quantiles(values, weights, (0.5, 0.95, 0.99))
    want = [weighted_quantile_oracle(values, weights, q) for q in (0.5, 0.95, 0.99)]
    np.testing.assert_array_equal(got, want)
    # integer weights: the same as repeating each value
    rep = np.repeat(values, rng.integers(1, 5, size=n))
    np.testing.assert_array_equal(weighted_quantiles(rep, np.ones(len(rep)), (0.5, 0.99)),
                                  np.quantile(rep, [0.5, 0.99], method="inverted_cdf"))


def test_cohort_is_sticky_as_the_percentage_grows():
    ids = [f"dev-{i:05d}" for i in range(10_000)]
    previous = set()
    for percent in (5, 10, 50, 100):
        cohort = {d for d in ids if in_cohort("m", d, percent)}
        assert previous <= cohort
        assert abs(len(cohort) - percent * 100) <= max(4 * np.sqrt(percent * 100), 1)
        previous = cohort
    assert len(previous) == 10_000
    # the contract's hash, spelled out
    import hashlib
    digest = hashlib.sha256(b"m/dev-00042").digest()
    assert cohort_bucket("m", "dev-00042") == int.from_bytes(digest[:8], "big") % 10000
    assert in_cohort("m", "x", 0.01) == (cohort_bucket("m", "x") < 1)


# ---------------------------------------------------------------- publish


def test_publish_stores_an_immutable_version(agg, clock):
    fill(agg)
    v1 = agg.publish("m", 4)
    assert v1 == 1
    info = agg.versions("m")[0]
    assert info["status"] == "active" and info["parent"] is None and info["k"] == 4
    cv = agg.version("m", 1)
    body, digest = agg.version_body("m", 1)
    assert decode_version(body, expected_digest=digest).version == 1 == cv.version
    assert cv.digest == digest == info["digest"]
    assert cv.centers.dtype == np.float32 and cv.cluster_weights.sum() == pytest.approx(600)
    assert cv.created == clock.now and cv.training_weight == 600
    clock.now += 10
    assert agg.publish("m", 4) == 2
    assert [v["status"] for v in agg.versions("m")] == ["active", "candidate"]
    assert agg.version("m", 2).parent == 1
    conn = connect(agg.db_path)
    try:
        with pytest.raises(REFUSED, match="immutable"):
            conn.execute("UPDATE versions SET body = ? WHERE version = 1", (b"\0",))
        with pytest.raises(REFUSED, match="never deleted"):
            conn.execute("DELETE FROM versions")
    finally:
        conn.close()
    with pytest.raises(UnknownVersionError):
        agg.version("m", 3)


def test_published_quantiles_are_the_statistics_of_the_aggregate(agg):
    """Publish takes weights and quantiles from the aggregate and its spread, through the
    one entry (edgekm.solve.cluster_statistics); each row matches the stored centre."""
    rng = np.random.default_rng(3)
    pts = blob_points(BLOBS[:3], seed=3)
    w = rng.integers(1, 7, size=len(pts)).astype(np.float64)
    agg.accept("m", "dev-a", frame(pts, weights=w))
    cv = agg.version("m", agg.publish("m", 3))
    coreset = agg.aggregate("m")
    assert coreset.total_spread > 0                 # the tree reduced the frame
    weights, want = edgekm.solve.cluster_statistics(coreset, cv.centers)
    np.testing.assert_allclose(cv.quantiles, want, rtol=1e-12)
    labels, _ = squared_distances(coreset.points, cv.centers)
    for c in range(3):
        assert cv.cluster_weights[c] == pytest.approx(coreset.weights[labels == c].sum())
    np.testing.assert_allclose(cv.cluster_weights, weights, rtol=1e-12)
    assert cv.cost == pytest.approx(coreset.cost(cv.centers), rel=1e-5)


def test_publish_centers_takes_the_quantiles_from_the_spread(agg):
    """A coreset of leaf means with their spread: the published p50 is that of the
    data, not of the means; a cluster of one raw point gets a positive, finite floor."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(20_000, 2))
    summary = edgekm.Coreset(X).merge(size=100, random_state=0)
    lone = np.array([[50.0, 50.0]])
    cs = edgekm.Coreset(np.vstack([summary.points, lone]), np.append(summary.weights, 1.0),
                        spread=np.append(summary.spread, 0.0))
    C = np.array([[0.0, 0.0], [50.0, 50.0]])
    agg.add_model("m", 2, dtype="float64")
    cv = agg.version("m", agg.publish_centers("m", C, cs))
    order = np.argsort(cv.centers[:, 0])
    q = cv.quantiles[order]
    np.testing.assert_allclose(q[0], [1.386, 5.991, 9.210], rtol=0.1)    # chi-square, 2 dof
    assert np.isfinite(q).all() and (q[1] > 0).all()


def test_publish_labels_do_not_depend_on_the_order_of_the_fit(agg, monkeypatch):
    fill(agg)
    agg.publish("m", 4)
    fill(agg, seq=1, seed=1)
    original = edgekm.Coreset.fit_centers
    published = []
    for seed in range(3):
        perm = np.random.default_rng(seed).permutation(4)

        def permuted(self, *args, perm=perm, **kwargs):
            centers, weights, cost = original(self, *args, **kwargs)
            return centers[perm], weights[perm], cost
        monkeypatch.setattr(edgekm.Coreset, "fit_centers", permuted)
        published.append(agg.version("m", agg.publish("m", 4)))
    for cv in published[1:]:
        np.testing.assert_array_equal(cv.centers, published[0].centers)
        np.testing.assert_array_equal(cv.quantiles, published[0].quantiles)
    # and label c is the parent's cluster c
    parent = agg.version("m", 1).centers
    for cv in published:
        assert np.abs(cv.centers - parent).max() < 0.5


def test_publish_reports_new_and_vanished_clusters_when_k_changes(agg):
    fill(agg, centres=BLOBS)
    agg.publish("m", 4)                    # 4 centres for 5 blobs
    v2 = agg.version("m", agg.publish("m", 5))
    assert len(v2.new_clusters) == 1 and v2.vanished_clusters == ()
    assert v2.parent == 1 and v2.shift is not None and v2.shift > 0
    v3 = agg.version("m", agg.publish("m", 2))
    assert v3.parent == 1                  # the active version, not the latest
    assert len(v3.vanished_clusters) >= 2
    report = agg.drift("m")
    assert [v["version"] for v in report["versions"]] == [1, 2, 3]
    assert report["versions"][1]["new_clusters"] == list(v2.new_clusters)
    assert report["versions"][1]["share_change"] is not None


# ---------------------------------------------------------------- rollout


def kinds(agg):
    return [(e["action"], e["version"], e["old_status"], e["new_status"])
            for e in agg.version_events("m")]


def test_canary_promote_rollback_and_pin(agg, clock):
    fill(agg)
    for _ in range(3):
        agg.publish("m", 4)
    assert agg.rollout_state("m")["active"] == 1
    with pytest.raises(ValueError):
        agg.canary("m", 2, 0)
    with pytest.raises(RolloutError):
        agg.canary("m", 1, 10)             # the active one
    assert agg.canary("m", 2, 10)["status"] == "canary"
    with pytest.raises(RolloutError, match="one canary"):
        agg.canary("m", 3, 10)
    agg.canary("m", 2, 50)                 # the canary grows
    devices = [f"d{i}" for i in range(40)]
    for d in devices:
        agg.add_device(d)
    served = {d: agg.version_for("m", d) for d in devices}
    for d, (cv, flags) in served.items():
        assert cv.version == (2 if in_cohort("m", d, 50) else 1)
        assert flags["canary"] == in_cohort("m", d, 50) and not flags["rollback"]
    assert agg.promote("m", 3) == {"active": 3, "retired": 1}   # canary 2 goes back
    assert [v["status"] for v in agg.versions("m")] == ["retired", "candidate", "active"]
    with pytest.raises(RolloutError):
        agg.promote("m", 3)
    agg.pin("m", "d0", 1)
    cv, flags = agg.version_for("m", "d0")
    assert cv.version == 1 and flags["pinned"]
    for d in devices[1:]:
        assert agg.version_for("m", d)[0].version == 3
    clock.now += 5
    assert agg.rollback("m") == {"active": 1, "retired": 3}
    for d in devices[1:]:
        cv, flags = agg.version_for("m", d)
        assert cv.version == 1 and flags["rollback"]           # served 3 before
        assert not agg.version_for("m", d)[1]["rollback"]      # said once
    with pytest.raises(RolloutError, match="no earlier"):
        agg.rollback("m")
    assert agg.pin("m", "d0", None)["previous"] == 1
    assert not agg.version_for("m", "d0")[1]["pinned"]
    assert kinds(agg) == [
        ("publish", 1, None, "active"), ("publish", 2, None, "candidate"),
        ("publish", 3, None, "candidate"), ("canary", 2, "candidate", "canary"),
        ("canary", 2, "canary", "canary"), ("promote", 1, "active", "retired"),
        ("promote", 2, "canary", "candidate"), ("promote", 3, "candidate", "active"),
        ("pin", 1, "retired", "retired"), ("rollback", 3, "active", "retired"),
        ("rollback", 1, "retired", "active"), ("unpin", 1, None, None)]
    events = agg.version_events("m")
    assert all(e["actor"] == "api" for e in events)
    assert events[-3]["at"] == clock.now and events[4]["detail"]["percent"] == 50


def test_rollback_is_atomic_under_concurrent_pulls(agg):
    fill(agg)
    devices = [f"p{i}" for i in range(8)]
    bodies = two_versions(agg, devices)

    def change(_):
        agg.rollback("m")
        assert agg.rollout_state("m")["active"] == 1
        agg.promote("m", 2)

    seen = pull_during(agg, change, devices, bodies, 30)
    assert set(seen) <= {1, 2} and len(seen) > 0
    statuses = {v["version"]: v["status"] for v in agg.versions("m")}
    assert statuses == {1: "retired", 2: "active"}


def test_schema_v1_database_is_migrated(tmp_path):
    path = tmp_path / "old.db"
    conn = store.connect(str(path))
    conn.execute("BEGIN IMMEDIATE")
    for statement in store.MIGRATIONS[0].split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    conn.execute("INSERT INTO schema_version VALUES (1)")
    conn.execute("COMMIT")
    conn.close()
    with Aggregator(path, random_state=0) as a:
        a.add_device("dev-a")
        fill(a)
        assert a.publish("m", 2) == 1
    assert sqlite3.connect(path).execute("SELECT version FROM schema_version").fetchone() == (store.SCHEMA_VERSION,)


# ---------------------------------------------------------------- telemetry and drift


def summary(device="dev-a", seq=0, version=1, drift=0.1, psi=0.01, k=4, d=2, n=100,
            window=(1_700_000_000.0, 1_700_000_060.0), anomalies=0, latency=1.5):
    counts = np.full(k, n / k)
    return TelemetrySummary(
        model="m", device=device, boot=7, seq=seq, window=window, version=version,
        counts=counts, sums=np.zeros((k, d)), sumsq=np.zeros((k, d)), n_points=n,
        raw_bytes=n * d * 4, forwarded_bytes=40 + anomalies * d * 4,
        anomalies=np.ones((anomalies, d), dtype=np.float32),
        anomaly_labels=np.zeros(anomalies, dtype=np.int32),
        anomaly_scores=np.full(anomalies, 2.0), psi=psi,
        dist_quantiles=np.array([0.1, 0.2, 0.3]), drift_score=drift, assign_latency_us=latency)


def test_telemetry_dedup_and_drift_report(agg):
    fill(agg)
    agg.publish("m", 4)
    agg.add_device("dev-b")
    body = encode_telemetry(summary(anomalies=2))
    assert agg.accept_telemetry("m", "dev-a", body)["status"] == "accepted"
    assert agg.accept_telemetry("m", "dev-a", body)["status"] == "duplicate"
    with pytest.raises(ConflictError):
        agg.accept_telemetry("m", "dev-a", encode_telemetry(summary(drift=0.2)))
    with pytest.raises(ForbiddenError):
        agg.accept_telemetry("m", "dev-b", body)
    agg.accept_telemetry("m", "dev-b", encode_telemetry(summary("dev-b", drift=3.0, psi=0.5)))
    # an older window arriving late does not replace the latest drift
    agg.accept_telemetry("m", "dev-b", encode_telemetry(
        summary("dev-b", seq=1, drift=0.0, window=(1_699_999_000.0, 1_699_999_060.0))))
    report = agg.drift("m")
    dev = report["devices"]
    assert dev["reporting"] == 2 and dev["max_drift_score"] == 3.0
    assert dev["mean_drift_score"] == pytest.approx(1.55) and dev["over_threshold"] == 1
    assert dev["top"][0]["device"] == "dev-b"
    t = report["telemetry"]
    assert t["summaries"] == 3 and t["points"] == 300 and t["anomalies"] == 2
    assert t["compression_ratio"] == pytest.approx((40 * 3 + 16) / 2400)
    v1 = report["versions"][0]
    assert v1["observed_shares"] == pytest.approx([0.25] * 4)
    assert v1["empty_clusters"] == [] and v1["shift"] is None
    assert len(agg.anomalies("m")) == 1 and agg.anomalies("m")[0]["labels"] == [0, 0]


def test_auto_publish_policy_with_an_injected_clock(agg, clock):
    fill(agg)
    with pytest.raises(ValueError, match="n_clusters"):
        agg.set_publish_policy("m", every_seconds=60)
    agg.set_publish_policy("m", every_seconds=60, n_clusters=4)
    assert agg.run_publish_policies() == []
    clock.now += 60
    (published,) = agg.run_publish_policies()
    assert published[:2] == ("m", 1) and "every_seconds" in published[2]
    clock.now += 120
    assert agg.run_publish_policies() == []            # no new weight: nothing to refit
    fill(agg, seq=1, seed=1)
    assert [p[1] for p in agg.run_publish_policies()] == [2]
    # by weight
    agg.set_publish_policy("m", every_weight=1000)
    fill(agg, seq=2, seed=2)
    assert agg.run_publish_policies() == []
    fill(agg, seq=3, seed=3)
    assert [p[1] for p in agg.run_publish_policies()] == [3]
    # by device drift
    agg.set_publish_policy("m", drift_threshold=0.5)
    fill(agg, seq=4, seed=4)
    clock.now += 1
    agg.accept_telemetry("m", "dev-a", encode_telemetry(summary(drift=0.2)))
    assert agg.run_publish_policies() == []
    agg.accept_telemetry("m", "dev-a", encode_telemetry(summary(seq=1, drift=0.9)))
    ((_, v, reason),) = agg.run_publish_policies()
    assert v == 4 and reason.startswith("drift")
    assert agg.versions("m")[-1]["status"] == "candidate"
    events = [e for e in agg.version_events("m") if e["action"] == "publish"]
    assert [e["actor"] for e in events] == ["policy"] * 4
    assert agg.set_publish_policy("m") is None and agg.publish_policy("m") is None


# ---------------------------------------------------------------- HTTP


@pytest.fixture
def client(agg):
    with TestClient(create_app(agg, admin_token=ADMIN, policy_interval=None)) as c:
        yield c


def admin(client, method, path, body=None):
    return client.request(method, path, headers={"authorization": f"Bearer {ADMIN}"},
                          json=body)


def pull(client, key, device="dev-a", model="m", etag=None, query=None, signer=None):
    path = f"/v1/models/{model}/centroids?device={device if query is None else query}"
    headers = auth.signed_headers(key, "GET", path, b"", signer or device)
    if etag is not None:
        headers["if-none-match"] = etag
    return client.get(path, headers=headers)


def test_http_publish_given_centres(agg, client):
    path = "/v1/models/m/versions"
    r = admin(client, "POST", path, {"centers": BLOBS[:4].tolist()})
    assert r.status_code == 404 and r.json()["reason"] == "unknown_model"
    fill(agg)
    d = BLOBS.shape[1]
    for bad in ([], [[]], [[1.0] * d, [1.0] * (d - 1)], [["x"] * d], [[True] * d], "nope"):
        r = admin(client, "POST", path, {"centers": bad})
        assert r.status_code == 400 and r.json()["reason"] == "bad_request", bad
    for literal in (b"Infinity", b"NaN", b"1e400"):      # Python's json reads all three
        row = b", ".join([literal] * d)
        r = client.post(path, content=b'{"centers": [[' + row + b"]]}",
                        headers={"authorization": f"Bearer {ADMIN}",
                                 "content-type": "application/json"})
        assert r.status_code == 400 and r.json()["reason"] == "bad_request", literal
    r = admin(client, "POST", path, {"centers": BLOBS[:4].tolist(), "n_clusters": 4})
    assert r.status_code == 400 and "alone" in r.json()["error"]
    r = admin(client, "POST", path, {"centers": [[0.0] * (d + 1)] * 2})
    assert r.status_code == 400 and "features" in r.json()["error"]
    assert agg.versions("m") == []                     # nothing was published by the above
    given = BLOBS[:4] + 0.25
    r = admin(client, "POST", path, {"centers": given.tolist()})
    assert r.status_code == 200 and r.json()["version"] == 1 and r.json()["k"] == 4
    stored = agg.version("m", 1).centers
    order = np.lexsort(given.T[::-1])                  # first publish: lexicographic labels
    np.testing.assert_allclose(stored, given[order], rtol=1e-6)
    assert agg.version("m", 1).cluster_weights.sum() == agg.total_weight("m")


def test_abort_canary_sends_the_cohort_back_to_the_active_version(agg, client, clock):
    clock.now = time.time()                  # requests are signed with the real clock
    key = agg.add_device("dev-h")
    fill(agg)
    assert agg.publish("m", 4) == 1 and agg.publish("m", 3, random_state=1) == 2
    r = admin(client, "POST", "/v1/models/m/canary/abort")
    assert r.status_code == 409 and r.json()["reason"] == "rollout_conflict"
    agg.canary("m", 2, 100.0)
    r = pull(client, key, "dev-h")
    assert r.status_code == 200 and decode_version(r.content).version == 2
    r = admin(client, "POST", "/v1/models/m/canary/abort")
    assert r.status_code == 200 and r.json() == {"aborted": 2, "active": 1}
    assert {v["version"]: v["status"] for v in agg.versions("m")} == {1: "active",
                                                                     2: "candidate"}
    r = pull(client, key, "dev-h")           # older than what it was served: a rollback
    assert r.status_code == 200 and decode_version(r.content).version == 1
    assert r.headers["x-edgekm-rollback"] == "1"
    event = agg.version_events("m")[-1]
    assert (event["action"], event["version"], event["old_status"], event["new_status"]) == \
        ("abort", 2, "canary", "candidate")
    agg.canary("m", 2, 50.0)                 # a withdrawn canary may be canaried again
    assert agg.rollout_state("m")["canary"] == 2


def test_http_pull_etag_rollback_and_pin(agg, client, clock):
    clock.now = time.time()                  # requests are signed with the real clock
    key = agg.add_device("dev-h")
    r = pull(client, key, "dev-h")
    assert r.status_code == 404 and r.json()["reason"] == "unknown_model"
    fill(agg)
    r = pull(client, key, "dev-h")
    assert r.status_code == 404 and r.json()["reason"] == "no_version"
    r = admin(client, "POST", "/v1/models/m/versions", {"n_clusters": 4})
    assert r.status_code == 200 and r.json()["version"] == 1 and r.json()["status"] == "active"
    r = pull(client, key, "dev-h")
    assert r.status_code == 200 and r.headers["content-type"] == "application/msgpack"
    etag = r.headers["etag"]
    cv = decode_version(r.content, expected_digest=etag.strip('"'))
    assert cv.version == 1 and "x-edgekm-rollback" not in r.headers
    r = pull(client, key, "dev-h", etag=etag)
    assert r.status_code == 304 and r.content == b"" and r.headers["etag"] == etag
    assert admin(client, "POST", "/v1/models/m/versions", {"n_clusters": 3}).json()["version"] == 2
    assert admin(client, "POST", "/v1/models/m/versions/2/promote").json()["active"] == 2
    r = pull(client, key, "dev-h", etag=etag)
    assert r.status_code == 200 and decode_version(r.content).version == 2
    assert admin(client, "POST", "/v1/models/m/rollback").json() == {"active": 1, "retired": 2}
    r = pull(client, key, "dev-h", etag=etag)
    assert r.status_code == 304 and r.headers["x-edgekm-rollback"] == "1"
    r = admin(client, "POST", "/v1/models/m/pins", {"device": "dev-h", "version": 2})
    assert r.status_code == 200
    r = pull(client, key, "dev-h")
    assert decode_version(r.content).version == 2 and r.headers["x-edgekm-pinned"] == "1"
    # signed by another device, or the query changed after signing
    other = agg.add_device("dev-o")
    assert pull(client, other, "dev-h", signer="dev-o").json()["reason"] == "forbidden"
    path = "/v1/models/m/centroids?device=dev-h"
    headers = auth.signed_headers(key, "GET", path, b"", "dev-h")
    r = client.get("/v1/models/m/centroids?device=dev-x", headers=headers)
    assert r.status_code == 401
    listing = admin(client, "GET", "/v1/models/m/versions").json()
    assert listing["active"] == 1 and listing["pins"] == {"dev-h": 2}
    assert [v["status"] for v in listing["versions"]] == ["active", "retired"]
    assert admin(client, "GET", "/v1/models/m/versions/2").json()["k"] == 3
    assert admin(client, "GET", "/v1/models/m/versions/9").json()["reason"] == "unknown_version"
    r = admin(client, "POST", "/v1/models/m/versions/1/canary", {"percent": 10})
    assert r.status_code == 409 and r.json()["reason"] == "rollout_conflict"
    publish = admin(client, "POST", "/v1/models/m/versions", {"n_clusters": 4}).json()
    r = admin(client, "POST", f"/v1/models/m/versions/{publish['version']}/canary",
              {"percent": 150})
    assert r.status_code == 400
    assert admin(client, "POST", f"/v1/models/m/versions/{publish['version']}/canary",
                 {"percent": 25}).json()["percent"] == 25
    url = f"/v1/models/m/versions/{publish['version']}/canary"
    for bad in ({"percent": 25, "auto_abort": "yes"}, {"percent": 25, "auto_promote_after": 0},
                {"percent": 25, "auto_promote": 5}):
        assert admin(client, "POST", url, bad).status_code == 400
    gated = admin(client, "POST", url, {"percent": 25, "auto_abort": True,
                                        "auto_promote_after": 5000}).json()
    assert gated["auto_abort"] is True and gated["auto_promote_after"] == 5000
    gate = admin(client, "GET", "/v1/models/m/drift").json()["canary_gate"]
    assert gate["auto_abort"] and gate["auto_promote_after"] == 5000
    assert gate["thresholds"]["min_points"] == 2000
    assert client.post("/v1/models/m/rollback").status_code == 401
    actors = {e["actor"] for e in admin(client, "GET", "/v1/models/m/events").json()}
    assert actors == {"http"}


def test_http_telemetry_and_drift(agg, client, clock):
    clock.now = time.time()
    key = agg.add_device("dev-t")
    fill(agg)
    agg.publish("m", 4)
    body = encode_telemetry(summary("dev-t"))
    path = "/v1/models/m/telemetry"

    def post(data, device="dev-t"):
        headers = auth.signed_headers(key, "POST", path, data, device)
        headers["content-type"] = "application/msgpack"
        return client.post(path, content=data, headers=headers)
    assert post(body).json()["status"] == "accepted"
    assert post(body).json()["status"] == "duplicate"
    r = post(b"\x81\xa1v\x01")
    assert r.status_code == 400 and r.json()["reason"] == "bad_telemetry"
    r = post(encode_telemetry(summary("dev-t", seq=1, d=3)))
    assert r.status_code == 422
    report = admin(client, "GET", "/v1/models/m/drift").json()
    assert report["devices"]["reporting"] == 1 and report["telemetry"]["summaries"] == 1
    r = admin(client, "POST", "/v1/models/m/policy", {"every_weight": 10})
    assert r.json()["policy"]["n_clusters"] == 4
    assert admin(client, "GET", "/v1/models/m/policy").json()["policy"]["every_weight"] == 10


# ---------------------------------------------------------------- CLI


def run_cli(capsys, *args):
    status = cli_main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def test_cli_versions(tmp_path, capsys):
    db = str(tmp_path / "cli.db")
    with Aggregator(db, random_state=0) as a:
        a.add_device("dev-a")
        a.add_device("dev-b")
        fill(a)
    base = ("--db", db, "--model", "m", "--json")
    status, out, _ = run_cli(capsys, "versions", "publish", "--k", "4", *base)
    assert status == 0 and json.loads(out)["status"] == "active"
    status, out, _ = run_cli(capsys, "versions", "publish", "--k", "3", "--seed", "1", *base)
    assert json.loads(out)["version"] == 2
    status, out, _ = run_cli(capsys, "versions", "canary", "2", "--percent", "20", *base)
    assert json.loads(out) == {"version": 2, "status": "canary", "percent": 20.0,
                               "auto_abort": False, "auto_promote_after": None}
    status, out, _ = run_cli(capsys, "versions", "canary", "2", "--percent", "20",
                             "--auto-abort", "--auto-promote-after", "50000", *base)
    assert json.loads(out)["auto_abort"] is True
    assert json.loads(out)["auto_promote_after"] == 50000
    status, out, _ = run_cli(capsys, "versions", "drift", "--db", db, "--model", "m")
    assert "canary gate: min points 2,000" in out and "auto-abort on" in out
    status, out, _ = run_cli(capsys, "versions", "promote", "2", *base)
    assert json.loads(out) == {"active": 2, "retired": 1}
    status, out, _ = run_cli(capsys, "versions", "pin", "dev-b", "1", *base)
    assert json.loads(out)["version"] == 1
    status, out, _ = run_cli(capsys, "versions", "pin", "dev-b", "none", *base)
    assert json.loads(out) == {"device": "dev-b", "version": None, "previous": 1}
    status, out, _ = run_cli(capsys, "versions", "rollback", *base)
    assert json.loads(out) == {"active": 1, "retired": 2}
    status, out, _ = run_cli(capsys, "versions", "list", *base)
    listing = json.loads(out)
    assert [v["status"] for v in listing["versions"]] == ["active", "retired"]
    status, out, _ = run_cli(capsys, "versions", "events", *base)
    assert {e["actor"] for e in json.loads(out)} == {"cli"}
    status, out, _ = run_cli(capsys, "versions", "drift", *base)
    assert json.loads(out)["active"] == 1
    status, out, _ = run_cli(capsys, "versions", "list", "--db", db, "--model", "m")
    assert status == 0 and "retired" in out
    # user errors
    status, _, err = run_cli(capsys, "versions", "rollback", *base)
    assert status == 2 and "no earlier" in err
    status, _, err = run_cli(capsys, "versions", "promote", "9", *base)
    assert status == 2 and "no version" in err
    status, _, err = run_cli(capsys, "versions", "canary", "2", "--percent", "0", *base)
    assert status == 2
    status, _, err = run_cli(capsys, "versions", "list", "--db", db, "--model", "nope")
    assert status == 2 and "no model" in err


def test_drift_report_pools_the_devices_v2_summaries_per_version(agg, clock):
    from edgekm import EdgeFilter
    from edgekm.sync.wire.telemetry import summarize

    fill(agg)
    agg.publish("m", 4)
    agg.add_device("dev-b")
    v = agg.version("m", 1)
    assert agg.drift("m")["versions"][0]["pooled_drift"] is None
    for i, device in enumerate(("dev-a", "dev-b")):      # the training distribution
        f = EdgeFilter(v, device=device, clock=clock, summarize=summarize)
        f.observe(blob_points(BLOBS[:4], n_per=300, seed=10 + i))
        agg.accept_telemetry("m", device, encode_telemetry(f.flush()))
    pooled = agg.drift("m")["versions"][0]["pooled_drift"]
    assert pooled["points"] == 2400 and pooled["summaries"] == 2
    assert pooled["drift_score"] < 1, pooled
    moved = blob_points(BLOBS[:4], n_per=300, seed=20) + np.array([0.6, 0.0])  # 2 sd
    f = EdgeFilter(v, device="dev-a", seq_source=lambda: 9, clock=clock, summarize=summarize)
    f.observe(moved)
    agg.accept_telemetry("m", "dev-a", encode_telemetry(f.flush()))
    pooled = agg.drift("m")["versions"][0]["pooled_drift"]
    assert pooled["points"] == 3600 and pooled["drift_score"] >= 1, pooled
    # a v1 summary is recorded but not pooled
    agg.accept_telemetry("m", "dev-b", encode_telemetry(summary("dev-b", seq=5)))
    assert agg.drift("m")["versions"][0]["pooled_drift"]["summaries"] == 3
