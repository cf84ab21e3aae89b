"""Device power cut: SIGKILL a DeviceAgent at 40 kill points, check its state after each.

The fast variant of ``tools/crash_device.py`` (kill points in the outbox's SQL,
the version store's writes, fsyncs and renames, and around HTTP requests);
the long one and its figures are in ``docs/reliability.md``.
"""

import os
import shutil
import sqlite3

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from edgekm.sync.wire.version import CentroidVersion, encode_version
from tools import crash_device


def test_forty_power_cuts_lose_and_double_nothing():
    r = crash_device.run(40, seed=3)
    assert r["ok"], r["failures"]
    assert r["kills"] == 40
    assert len(r["kills_by_family"]) >= 8, r["kills_by_family"]
    assert r["weight_ingested"] == r["weight_acked"] == r["aggregator_weight"] > 0
    assert r["frames_acked"] == r["aggregator_frames"] > 0
    assert r["aggregator_integrity"] == ["ok"]


# ---------------------------------------------------------------- the checker can fail

def _state(tmp_path):
    """A state_dir with a few frames in its outbox and a stored version."""
    from edgekm.sync.device.agent import DeviceAgent

    state = str(tmp_path / "state")
    with DeviceAgent("http://127.0.0.1:9", crash_device.MODEL, crash_device.DEVICE, "00" * 32,
                     state, n_clusters=2, coreset_size=8, max_retries=0,
                     random_state=0) as agent:
        agent.ingest(np.random.default_rng(0).normal(size=(30, 2)))
        agent.flush()
        v = CentroidVersion(model=crash_device.MODEL, version=1, parent=None, created=1.0,
                            centers=np.zeros((2, 2)), cluster_weights=np.ones(2),
                            quantiles=np.ones((2, 3)), training_weight=2.0, cost=0.0)
        body, digest = encode_version(v)
        agent._store_version(body)
    events = [{"event": "start", "stats": {"weight_ingested": 0.0}, "digest": None},
              {"event": "flushing", "durable": 0.0, "weight": 30},
              {"event": "flushed", "durable": 30.0},
              {"event": "pull", "digest": None}]
    return state, events, body, digest


def test_check_state_passes_a_good_state(tmp_path):
    state, events, _, digest = _state(tmp_path)
    assert crash_device.check_state(state, events, {digest}, 30) == ([], digest)


def test_check_state_sees_a_torn_version(tmp_path):
    state, events, body, digest = _state(tmp_path)
    with open(os.path.join(state, "version.current"), "wb") as fh:
        fh.write(body[:len(body) // 2])
    failures, _ = crash_device.check_state(state, events, {digest}, 30)
    assert any("version.current is not a whole version" in f for f in failures), failures


def test_check_state_sees_another_version(tmp_path):
    state, events, _, digest = _state(tmp_path)
    failures, _ = crash_device.check_state(state, events, {"f" * 64}, 30)
    assert any("neither the old one" in f for f in failures), failures
    # the version the last check loaded is still the old one for a run killed early
    assert crash_device.check_state(state, events, {"f" * 64}, 30, digest) == ([], digest)


def test_check_state_sees_lost_and_invented_weight(tmp_path):
    state, events, _, digest = _state(tmp_path)
    backup = str(tmp_path / "backup")
    shutil.copytree(state, backup)
    conn = sqlite3.connect(os.path.join(state, "outbox.sqlite3"))
    with conn:
        conn.execute("DELETE FROM frames")
    conn.close()
    failures, _ = crash_device.check_state(state, events, {digest}, 30)
    assert any("!= acked + pending + rejected" in f for f in failures), failures
    conn = sqlite3.connect(os.path.join(backup, "outbox.sqlite3"))
    with conn:
        conn.execute("UPDATE state SET value = value + 30 WHERE key IN "
                     "('weight_ingested', 'weight_acked')")
    conn.close()
    failures, _ = crash_device.check_state(backup, events, {digest}, 30)
    assert failures == ["weight_ingested 60.0, expected one of [30.0]"], failures
