"""DeviceAgent.pull(): conditional GET, digest, downgrades, atomic storage, offline restart,
and telemetry summaries through sync()."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from helpers.versions import blobs, make_version
from helpers.fake_aggregator import FakeAggregator
from edgekm.sync.device import agent as agent_mod
from edgekm.sync.device.agent import DeviceAgent
from edgekm.exceptions import TelemetryError
from edgekm.sync.wire.auth import new_key

KEY = new_key()
D = 4


@pytest.fixture
def fake():
    with FakeAggregator({"dev-1": KEY}) as f:
        yield f


@pytest.fixture
def data():
    X, centers = blobs(4000, k=3, d=D, seed=1, dtype=np.float32)
    return X, centers


def _agent(url, state_dir, **kw):
    kw.setdefault("coreset_size", 20)
    kw.setdefault("max_retries", 0)
    kw.setdefault("timeout", 5.0)
    return DeviceAgent(url, "m", "dev-1", KEY, state_dir, n_clusters=3, random_state=0, **kw)


@pytest.fixture
def versions(data):
    """Versions 1 and 2 (its centres moved by 0.5) of the data."""
    X, centers = data
    v1 = make_version(X, centers, version=1)
    v2 = make_version(X, centers + 0.5, version=2, parent=1)
    return v1, v2


def test_200_then_304_then_upgrade(fake, versions, tmp_path):
    v1, v2 = versions
    with _agent(fake.url, tmp_path) as agent:
        assert agent.pull() is None and agent.assigner is None      # 404 no_version
        fake.publish("m", v1)
        assert agent.pull() == 1 and agent.last_pull["changed"]
        assert agent.assigner.version_id == 1
        assert agent.pull() == 1 and agent.last_pull["status"] == 304
        fake.publish("m", v2)
        assert agent.pull() == 2 and agent.assigner.version_id == 2
        assert (tmp_path / "version.current").exists() and (tmp_path / "version.previous").exists()


def test_digest_mismatch_is_refused_and_the_previous_stays(fake, versions, tmp_path):
    v1, v2 = versions
    fake.publish("m", v1)
    with _agent(fake.url, tmp_path) as agent:
        assert agent.pull() == 1
        before = (tmp_path / "version.current").read_bytes()
        fake.publish("m", v2)
        fake.get_script.append("corrupt")
        assert agent.pull() == 1
        assert "digest" in agent.last_pull["error"] or "refused" in agent.last_pull["error"]
        assert agent.assigner.version_id == 1
        assert (tmp_path / "version.current").read_bytes() == before
        assert agent.pull() == 2                                # the good body next time


def test_downgrade_refused_unless_rollback_or_pinned(fake, versions, tmp_path):
    v1, v2 = versions
    with _agent(fake.url, tmp_path) as agent:
        fake.publish("m", v2)
        assert agent.pull() == 2
        fake.publish("m", v1)
        assert agent.pull() == 2 and "downgrade" in agent.last_pull["error"]
        fake.publish("m", v1, rollback=True)
        assert agent.pull() == 1
        fake.publish("m", v2)
        assert agent.pull() == 2
        fake.publish("m", v1, pinned=True)
        assert agent.pull() == 1


def test_network_errors_and_server_errors_keep_the_version(fake, versions, tmp_path):
    v1, _ = versions
    fake.publish("m", v1)
    with _agent(fake.url, tmp_path) as agent:
        assert agent.pull() == 1
        fake.get_script.extend([500, "drop_before"])
        assert agent.pull() == 1 and agent.last_pull["status"] == 500
        assert agent.pull() == 1 and agent.last_pull["error"].startswith("network")
        fake.stop()
        assert agent.pull() == 1


def test_a_failure_between_write_and_rename_leaves_the_old_version(fake, versions, tmp_path, monkeypatch):
    v1, v2 = versions
    fake.publish("m", v1)
    with _agent(fake.url, tmp_path) as agent:
        assert agent.pull() == 1
    fake.publish("m", v2)
    real_replace = os.replace

    def crash_on_the_final_rename(src, dst):
        if str(src).endswith("version.tmp"):
            raise OSError("power cut")
        return real_replace(src, dst)

    monkeypatch.setattr(agent_mod.os, "replace", crash_on_the_final_rename)
    with _agent(fake.url, tmp_path) as agent:
        assert agent.pull() == 1 and "store" in agent.last_pull["error"]
        assert agent.assigner.version_id == 1
    monkeypatch.setattr(agent_mod.os, "replace", real_replace)
    # the process "restarts": the temp file (the whole new body) is never used as is,
    # and the old version is read back (current was moved to previous before the crash)
    assert (tmp_path / "version.tmp").exists()
    with _agent("http://127.0.0.1:9", tmp_path) as agent:
        assert agent.version == 1 and not (tmp_path / "version.tmp").exists()


def test_a_torn_current_file_falls_back_to_previous(fake, data, versions, tmp_path):
    X, centers = data
    v1, v2 = versions
    with _agent(fake.url, tmp_path) as agent:
        fake.publish("m", v1)
        agent.pull()
        fake.publish("m", v2)
        assert agent.pull() == 2
    current = tmp_path / "version.current"
    current.write_bytes(current.read_bytes()[:50])           # half of a write
    with _agent("http://127.0.0.1:9", tmp_path) as agent:
        assert agent.version == 1


OFFLINE = textwrap.dedent("""
    import json, sys
    import numpy as np
    from edgekm.sync.device.agent import DeviceAgent
    url, state, key = sys.argv[1:4]
    X = np.load(sys.argv[4])
    with DeviceAgent(url, "m", "dev-1", key, state, n_clusters=3, coreset_size=20,
                     max_retries=0, timeout=2.0, random_state=0) as agent:
        pulled = agent.pull()
        r = agent.assigner.assign(X)
        report = agent.sync()
        print(json.dumps({"pulled": pulled, "version": agent.version,
                          "labels": r.labels.tolist(), "error": agent.last_pull["error"],
                          "telemetry_pending": report["telemetry_pending"]}))
""")


def test_offline_assignment_after_a_restart_without_a_server(data, versions, tmp_path):
    X, centers = data
    v1, _ = versions
    np.save(tmp_path / "x.npy", X[:50])
    state = tmp_path / "state"
    with FakeAggregator({"dev-1": KEY}) as fake:
        fake.publish("m", v1)
        with _agent(fake.url, state) as agent:
            assert agent.pull() == 1
        url = fake.url
    # the server is gone; a new process boots from the stored version
    p = subprocess.run([sys.executable, "-c", OFFLINE, url, str(state), KEY,
                        str(tmp_path / "x.npy")], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["pulled"] == 1 and out["version"] == 1 and out["error"].startswith("network")
    from edgekm import Assigner
    assert out["labels"] == Assigner(v1).assign(X[:50]).labels.tolist()


def test_ingest_runs_the_filter_and_sync_uploads_telemetry(fake, data, versions, tmp_path):
    X, centers = data
    v1, v2 = versions
    fake.publish("m", v1)
    with _agent(fake.url, tmp_path) as agent:
        agent.ingest(X[:100])                          # no version yet: no telemetry
        report = agent.sync()
        assert report["telemetry_uploaded"] == 0 and report["version"] is None
        assert agent.pull() == 1
        agent.ingest(X[100:1100])
        agent.ingest(X[1100])                          # one point, the fast path
        report = agent.sync()
        assert report["telemetry_uploaded"] == 1 and report["telemetry_pending"] == 0
        assert report["version"] == 1 and report["uploaded"] >= 1
        (s,) = fake.telemetry.values()
        assert s.n_points == 1001 and s.version == 1 and s.boot == agent.boot
        assert s.forwarded_bytes > 0 and s.counts.sum() == 1001
        # offline: summaries wait durably; a version change closes the window
        fake.stop()
        agent.ingest(X[1200:1300])
        fake.start()
        fake.publish("m", v2)
        fake.stop()
        assert agent.sync()["telemetry_pending"] == 1
        fake.start()
        assert agent.pull() == 2
        agent.ingest(X[1300:1400])
        report = agent.sync()
        assert report["telemetry_uploaded"] == 2 and report["version"] == 2
    sent = sorted((s.seq, s.version, s.n_points) for s in fake.telemetry.values())
    assert sent == [(0, 1, 1001), (1, 1, 100), (2, 2, 100)]


def _zero_p99_version(centers):
    """An old-style version (published before the quantile floor): cluster 0 has
    p99 = 0, so a point near its centre scores infinity."""
    from edgekm.sync.wire.version import CentroidVersion, decode_version, encode_version

    k = centers.shape[0]
    q = np.tile([1.0, 2.0, 3.0], (k, 1))
    q[0] = 0.0
    v = CentroidVersion(model="m", version=1, parent=None, created=1.0e9, centers=centers,
                        cluster_weights=np.ones(k), quantiles=q, training_weight=float(k),
                        cost=1.0)
    return decode_version(encode_version(v)[0])


def test_an_infinite_score_is_counted_and_never_blocks_sync_or_close(fake, data, tmp_path):
    X, centers = data
    fake.publish("m", _zero_p99_version(centers))
    near = (centers[0] + 1e-3).astype(np.float32)
    agent = _agent(fake.url, tmp_path)
    try:
        assert agent.pull() == 1
        agent.ingest(X[:300])
        agent.ingest(near)                             # the fast path
        agent.ingest(np.stack([near, centers[0].astype(np.float32)]))   # a batch
        report = agent.sync()                          # does not raise
        assert report["telemetry_uploaded"] == 1
        (s,) = fake.telemetry.values()
        assert np.isfinite(s.anomaly_scores).all() and s.n_points == 303
        stats = agent.stats()
        assert stats["scores_unscored"] >= 2 and stats["telemetry_unencodable"] == 0
        assert agent.filter.last_stats["unscored"] == stats["scores_unscored"]
        agent.ingest(near)
        assert agent.stats()["scores_unscored"] == stats["scores_unscored"] + 1
    finally:
        agent.close()                                  # does not raise either


def test_a_summary_that_cannot_be_encoded_is_dropped_counted_and_logged_once(
        fake, data, versions, tmp_path, monkeypatch, caplog):
    X, centers = data
    v1, _ = versions
    fake.publish("m", v1)

    def broken(window):
        raise TelemetryError("a field the wire refuses")

    monkeypatch.setattr(agent_mod, "summarize", broken)
    with _agent(fake.url, tmp_path) as agent:
        agent.pull()
        for i in range(2):
            agent.ingest(X[100 * i:100 * (i + 1)])
            report = agent.sync()
            assert report["telemetry_uploaded"] == 0 and report["telemetry_pending"] == 0
        assert agent.stats()["telemetry_unencodable"] == 2
        agent.ingest(X[200:300])
    # close() dropped the last window too, without raising
    assert len([r for r in caplog.records if "cannot be encoded" in r.message]) == 1
    assert not fake.telemetry


def test_telemetry_survives_a_restart(fake, data, versions, tmp_path):
    X, centers = data
    v1, _ = versions
    fake.publish("m", v1)
    with _agent(fake.url, tmp_path) as agent:
        agent.pull()
        agent.ingest(X[:500])
        fake.stop()
        assert agent.sync()["telemetry_pending"] == 1
        boot = agent.boot
    fake.start()
    with _agent(fake.url, tmp_path) as agent:
        assert agent.version == 1
        report = agent.sync()
        assert report["telemetry_uploaded"] == 1
    (s,) = fake.telemetry.values()
    assert s.boot == boot and s.n_points == 500


def test_a_version_with_other_features_is_refused(fake, data, tmp_path):
    X, centers = data
    other = make_version(np.zeros((10, D + 1)), np.ones((2, D + 1)), version=3)
    fake.publish("m", other)
    with _agent(fake.url, tmp_path) as agent:
        agent.ingest(X[:10])
        assert agent.pull() is None and "features" in agent.last_pull["error"]
