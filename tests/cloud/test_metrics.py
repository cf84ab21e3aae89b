"""/metrics (Prometheus text format) and /healthz after some traffic."""

import time
import warnings

import numpy as np
import pytest

pytest.importorskip("prometheus_client")
pytest.importorskip("starlette")
pytest.importorskip("httpx")

with warnings.catch_warnings():
    # as in test_server.py: Starlette warns when its TestClient falls back to httpx
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient  # noqa: E402

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from edgekm.sync import encode_frame  # noqa: E402
from edgekm.sync.wire import auth
from edgekm.sync.cloud.aggregator import Aggregator  # noqa: E402
from edgekm.sync.cloud.http.app import create_app  # noqa: E402
from edgekm.sync.wire.telemetry import TelemetrySummary, encode_telemetry  # noqa: E402

ADMIN = "metrics-admin"


def body_for(device, seq, n=50, d=2):
    rng = np.random.default_rng(seq)
    return encode_frame(model="m", device=device, boot=1, seq=seq, span=(0, n - 1),
                        points=rng.normal(size=(n, d)).astype(np.float32),
                        weights=np.ones(n), level=0, created=time.time())


def telemetry(device, seq, drift, latency):
    k, d = 3, 2
    return encode_telemetry(TelemetrySummary(
        model="m", device=device, boot=1, seq=seq, window=(0.0, 60.0), version=1,
        counts=np.array([10.0, 10.0, 10.0]), sums=np.zeros((k, d)), sumsq=np.zeros((k, d)),
        n_points=30, raw_bytes=240, forwarded_bytes=24, anomalies=np.zeros((0, d)),
        anomaly_labels=np.zeros(0, dtype=np.int32), anomaly_scores=np.zeros(0), psi=0.0,
        dist_quantiles=np.zeros(3), drift_score=drift, assign_latency_us=latency))


def signed(client, key, device, method, path, body=b""):
    headers = auth.signed_headers(key, method, path, body, device)
    headers["content-type"] = "application/msgpack"
    return client.request(method, path, content=body, headers=headers)


def scrape(client):
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return r.text, samples


@pytest.fixture
def setup(tmp_path):
    agg = Aggregator(tmp_path / "m.db", random_state=0)
    keys = {d: agg.add_device(d) for d in ("dev-a", "dev-b")}
    with TestClient(create_app(agg, admin_token=ADMIN, policy_interval=None,
                               metrics_ttl=0)) as client:
        yield agg, keys, client
    agg.close()


def test_metrics_after_traffic(setup):
    agg, keys, client = setup
    text, samples = scrape(client)                       # empty but valid
    assert samples[("edgekm_devices_registered", (("state", "active"),))] == 2
    path = "/v1/models/m/frames"
    for seq in range(3):
        assert signed(client, keys["dev-a"], "dev-a", "POST", path,
                      body_for("dev-a", seq)).status_code == 200
    dup = body_for("dev-b", 0)
    for _ in range(2):
        assert signed(client, keys["dev-b"], "dev-b", "POST", path, dup).status_code == 200
    assert signed(client, keys["dev-b"], "dev-b", "POST", path, b"junk").status_code == 400
    assert signed(client, keys["dev-a"], "dev-b", "POST", path, dup).status_code == 401
    r = client.post("/v1/models/m/versions", json={"n_clusters": 3},
                    headers={"authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 200
    agg.publish("m", 3)
    tpath = "/v1/models/m/telemetry"
    assert signed(client, keys["dev-a"], "dev-a", "POST", tpath,
                  telemetry("dev-a", 0, 0.2, 1.5)).json()["status"] == "accepted"
    assert signed(client, keys["dev-b"], "dev-b", "POST", tpath,
                  telemetry("dev-b", 0, 2.0, 3.0)).json()["status"] == "accepted"
    cpath = "/v1/models/m/centroids?device=dev-a"
    r = signed(client, keys["dev-a"], "dev-a", "GET", cpath)
    assert r.status_code == 200
    headers = auth.signed_headers(keys["dev-a"], "GET", cpath, b"", "dev-a")
    headers["if-none-match"] = r.headers["etag"]
    assert client.get(cpath, headers=headers).status_code == 304

    text, s = scrape(client)
    assert s[("edgekm_frames_accepted_total", (("model", "m"),))] == 4
    assert s[("edgekm_frames_duplicate_total", (("model", "m"),))] == 1
    assert s[("edgekm_frames_rejected_total", (("reason", "bad_frame"),))] == 1
    assert s[("edgekm_frames_rejected_total", (("reason", "unauthorized"),))] == 1
    assert s[("edgekm_accept_latency_seconds_count", ())] == 7
    assert s[("edgekm_merged_weight", (("model", "m"),))] == 200
    assert s[("edgekm_versions", (("model", "m"), ("status", "active")))] == 1
    assert s[("edgekm_versions", (("model", "m"), ("status", "candidate")))] == 1
    assert s[("edgekm_active_version", (("model", "m"),))] == 1
    assert s[("edgekm_devices_seen", (("model", "m"),))] == 2
    assert s[("edgekm_drift_score", (("model", "m"), ("stat", "max")))] == 2.0
    assert s[("edgekm_drift_score", (("model", "m"), ("stat", "mean")))] == pytest.approx(1.1)
    assert s[("edgekm_devices_drifting", (("model", "m"),))] == 1
    assert s[("edgekm_telemetry_compression_ratio", (("model", "m"),))] == pytest.approx(0.1)
    assert s[("edgekm_device_assign_latency_microseconds_count", (("model", "m"),))] == 2
    assert s[("edgekm_device_assign_latency_microseconds_sum", (("model", "m"),))] == 4.5
    assert s[("edgekm_telemetry_summaries_total", (("status", "accepted"),))] == 2
    assert s[("edgekm_centroid_pulls_total", (("result", "200"),))] == 1
    assert s[("edgekm_centroid_pulls_total", (("result", "304"),))] == 1
    assert s[("edgekm_versions_published_total", (("actor", "http"), ("model", "m")))] == 1
    for key in keys.values():
        assert key not in text
    assert ADMIN not in text
    assert client.get("/healthz").json() == {"status": "ok", "db": "ok"}


def test_each_app_has_its_own_registry(tmp_path):
    with Aggregator(tmp_path / "a.db") as a, Aggregator(tmp_path / "b.db") as b:
        key = a.add_device("dev-a")
        with TestClient(create_app(a, policy_interval=None, metrics_ttl=0)) as ca, \
                TestClient(create_app(b, policy_interval=None, metrics_ttl=0)) as cb:
            assert signed(ca, key, "dev-a", "POST", "/v1/models/m/frames",
                          body_for("dev-a", 0)).status_code == 200
            _, sa = scrape(ca)
            _, sb = scrape(cb)
    assert sa[("edgekm_frames_accepted_total", (("model", "m"),))] == 1
    assert ("edgekm_frames_accepted_total", (("model", "m"),)) not in sb


def test_policy_timer_publishes(tmp_path):
    with Aggregator(tmp_path / "p.db", random_state=0) as agg:
        agg.add_device("dev-a")
        agg.accept("m", "dev-a", body_for("dev-a", 0))
        agg.set_publish_policy("m", every_weight=10, n_clusters=2)
        with TestClient(create_app(agg, policy_interval=0.05, metrics_ttl=0)) as client:
            deadline = time.monotonic() + 10
            while not agg.versions("m") and time.monotonic() < deadline:
                time.sleep(0.02)
            assert [v["version"] for v in agg.versions("m")] == [1]
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                _, s = scrape(client)
                if s.get(("edgekm_versions_published_total",
                          (("actor", "policy"), ("model", "m")))) == 1:
                    break
                time.sleep(0.02)
            assert s[("edgekm_versions_published_total",
                      (("actor", "policy"), ("model", "m")))] == 1
