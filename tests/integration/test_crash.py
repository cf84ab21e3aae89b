"""Aggregator crash: SIGKILL a real ``edgekm serve`` under device load and restart it.

The fast variant of ``tools/crash_aggregator.py`` (4 devices, 150+ frames, 5
kills); the long one (20 devices, 1,000+ frames, 20+ kills) and its figures
are in ``docs/reliability.md``.
"""

import glob
import os
import sqlite3

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from tools import crash_aggregator


@pytest.fixture(scope="module")
def storm(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("crash-agg"))
    return workdir, crash_aggregator.run(n_devices=4, kills=5, min_frames=150, seed=1,
                                         workdir=workdir, max_seconds=60, drain_seconds=30)


def test_acknowledged_equals_merged_after_kills(storm):
    _, r = storm
    assert r["checks"] == {k: True for k in r["checks"]}, r
    assert r["kills"] == 5 and r["server_starts"] == 6
    assert r["frames_acknowledged"] == r["frames_merged"] >= 150
    assert r["frames_accepted_twice"] == 0
    assert r["weight_ingested"] == r["weight_merged"] == r["weight_aggregate"] > 0
    assert r["integrity_check"] == ["ok"]


def test_the_check_sees_a_lost_frame_and_a_double_count(storm):
    workdir, _ = storm
    db = os.path.join(workdir, "agg.db")
    logs = sorted(glob.glob(os.path.join(workdir, "dev-*.jsonl")))
    summaries = sorted(glob.glob(os.path.join(workdir, "dev-*.summary.json")))
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("DELETE FROM frames WHERE (device_id, seq) IN "
                     "(SELECT device_id, seq FROM frames LIMIT 1)")
        conn.execute("UPDATE models SET total_weight = total_weight + 1")
    conn.close()
    r = crash_aggregator.check(db, logs, summaries, [], [0] * len(logs))
    assert not r["ok"]
    assert not r["checks"]["acked_equals_merged"] and not r["checks"]["weights_match"]
    assert r["acknowledged_not_merged"] == 1


def test_two_replicas_on_postgresql_survive_kills_of_either_and_of_the_database(tmp_path):
    """The fast replica variant: 2 replicas, 4 kills of either, 1 crash of PostgreSQL."""
    from tools._pg import why_not

    reason = why_not()
    if reason is not None:
        pytest.skip(f"no PostgreSQL: {reason}")
    r = crash_aggregator.run(n_devices=3, kills=4, min_frames=100, seed=2, replicas=2,
                             pg_kills=1, workdir=str(tmp_path), max_seconds=60,
                             drain_seconds=30)
    assert r["checks"] == {k: True for k in r["checks"]}, r
    assert r["replicas"] == 2 and r["postgres_kills"] == 1 and r["kills"] == 5
    assert r["frames_acknowledged"] == r["frames_merged"] >= 100
    assert r["weight_ingested"] == r["weight_merged"] == r["weight_aggregate"] > 0
    assert r["failovers"] > 0
