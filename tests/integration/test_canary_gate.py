"""Canaries gated on behaviour, against a real server with real device agents.

The aggregator is served by uvicorn on loopback; DeviceAgents pull versions and
upload frames and telemetry summaries over HTTP.  A canary whose centres are
moved by several within-cluster spreads is withdrawn by the gate before its cohort
has streamed 20,000 points; one fitted on the same distribution is never withdrawn
over 100,000 points.
"""

import json

import numpy as np
import pytest

pytest.importorskip("uvicorn")
pytest.importorskip("starlette")
pytest.importorskip("scipy")

from edgekm.sync.cloud.aggregator import Aggregator  # noqa: E402
from edgekm.sync.cloud.http import BackgroundServer, create_app  # noqa: E402
from edgekm.sync.cloud.versions import in_cohort  # noqa: E402
from edgekm.sync.device.agent import DeviceAgent  # noqa: E402

D, K = 4, 3
CENTRES = np.array([[0.0, 0, 0, 0], [10.0, 0, 0, 0], [0.0, 10, 0, 0]])
NAMES = [f"dev-{i}" for i in range(6)]
PERCENT = 50.0
BATCH = 2000


def points(rng, n):
    return np.ascontiguousarray(CENTRES[rng.integers(0, K, n)] + rng.normal(size=(n, D)),
                                dtype=np.float32)


@pytest.fixture
def fleet(tmp_path):
    agg = Aggregator(tmp_path / "a.db", coreset_size=200, random_state=0)
    agg.add_model("m", D, dtype="float32")
    keys = {n: agg.add_device(n) for n in NAMES}
    with BackgroundServer(create_app(agg, policy_interval=None)) as server:
        agents = [DeviceAgent(server.url, "m", n, keys[n], tmp_path / n, n_clusters=K,
                              random_state=0, timeout=30.0, max_retries=2)
                  for n in NAMES]
        rng = np.random.default_rng(0)
        for a in agents:
            a.ingest(points(rng, 3000))
            a.sync()
        agg.publish("m", K)
        for a in agents:
            assert a.pull() == 1
        yield agg, agents, rng
        for a in agents:
            a.close()
    agg.close()


def stream_round(agents, rng, canary):
    """Every agent pulls, streams one batch and syncs; returns the points streamed under
    the canary in this round."""
    streamed = 0
    for a in agents:
        a.pull()
        a.ingest(points(rng, BATCH))
        if a.assigner is not None and a.assigner.version_id == canary:
            streamed += BATCH
        a.sync()
    return streamed


def test_cohorts_split_the_fleet():
    inside = [n for n in NAMES if in_cohort("m", n, PERCENT)]
    assert 0 < len(inside) < len(NAMES)


def test_a_canary_moved_by_several_spreads_is_withdrawn_before_20000_points(fleet):
    agg, agents, rng = fleet
    v1 = agg.version("m", 1)
    bad = agg.publish_centers("m", v1.centers + 3.0)        # 6 sigma away
    agg.canary("m", bad, PERCENT, auto_abort=True)
    streamed = 0
    while agg.rollout_state("m")["canary"] == bad:
        streamed += stream_round(agents, rng, bad)
        assert streamed < 20_000, agg.drift("m")["canary_gate"]
    assert 0 < streamed < 20_000
    event = [e for e in agg.version_events("m") if e["version"] == bad][-1]
    assert (event["actor"], event["action"], event["new_status"]) == ("gate", "abort",
                                                                     "candidate")
    figures = json.loads(event["detail"])["gate"] if isinstance(event["detail"], str) \
        else event["detail"]["gate"]
    assert figures["verdict"] == "worse" and figures["reasons"]
    assert figures["canary_points"] >= 2000 and figures["control_points"] >= 2000
    # the cohort pulls the active version back, flagged as a rollback
    for a in agents:
        assert a.pull() == 1
    assert agg.rollout_state("m")["active"] == 1
    snap = {m["model"]: m for m in agg.metrics_snapshot()["models"]}
    assert snap["m"]["gate_actions"] == {"abort": 1, "promote": 0}


def test_a_canary_fitted_on_the_same_distribution_is_never_withdrawn(fleet):
    agg, agents, rng = fleet
    good = agg.publish("m", K, random_state=7)
    agg.canary("m", good, PERCENT, auto_abort=True)
    streamed = 0
    while streamed < 100_000:
        streamed += stream_round(agents, rng, good)
        assert agg.rollout_state("m")["canary"] == good, agg.drift("m")["canary_gate"]
    gate = agg.drift("m")["canary_gate"]
    assert gate["auto_abort"] and gate["figures"]["verdict"] == "no_regression", gate


def test_auto_promote_after_n_points(fleet):
    agg, agents, rng = fleet
    good = agg.publish("m", K, random_state=7)
    agg.canary("m", good, PERCENT, auto_abort=True, auto_promote_after=10_000)
    for _ in range(20):
        stream_round(agents, rng, good)
        if agg.rollout_state("m")["active"] == good:
            break
    assert agg.rollout_state("m")["active"] == good
    event = [e for e in agg.version_events("m") if e["version"] == good][-1]
    assert (event["actor"], event["action"]) == ("gate", "promote")


def test_thresholds_are_per_model(fleet):
    agg, _, _ = fleet
    assert agg.set_canary_policy("m", min_points=500, cost_margin=0.5) == {
        "min_points": 500, "tail_margin": 0.01, "cost_margin": 0.5, "z": 3.0}
    assert agg.drift("m")["canary_gate"]["thresholds"]["min_points"] == 500
    with pytest.raises(ValueError):
        agg.set_canary_policy("m", min_points=0)
