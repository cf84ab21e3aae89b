"""Two aggregator replicas on one PostgreSQL: every frame merged once, rollout changes atomic
for pulls served by the other replica, publish policies and compaction run once."""

import random
import threading

import numpy as np
import pytest

from edgekm.sync import encode_frame
from edgekm.sync.cloud.aggregator import Aggregator, Upload
from edgekm.sync.wire import auth
from edgekm.sync.wire.frame import decode_frame
from helpers.fakes import FakeClock, make_frame
from helpers.versions import pull_during, two_versions

PATH = "/v1/models/m/frames"
DEVICES = [f"dev-{i}" for i in range(4)]
N_SEQ = 40


@pytest.fixture
def replicas(postgres_server):
    url = postgres_server.new_database("replicas")
    clock = FakeClock()
    pair = [Aggregator(url, clock=clock, random_state=0, coreset_size=16) for _ in range(2)]
    yield pair
    for agg in pair:
        agg.close()


def upload(key, device, body, now):
    return Upload("m", "POST", PATH, body,
                  auth.signed_headers(key, "POST", PATH, body, device, now=now))


def test_two_replicas_accepting_the_same_frames_merge_each_once(replicas):
    a, b = replicas
    keys = {d: a.add_device(d) for d in DEVICES}          # b sees them: one database
    bodies = [(d, make_frame(device=d, seq=s, n=6, d=2)) for d in DEVICES for s in range(N_SEQ)]
    expected = sum(decode_frame(body).total_weight for _, body in bodies)
    results = {0: [], 1: []}
    errors = []
    start = threading.Barrier(2)

    def send(index, agg):
        order = list(bodies)
        random.Random(index).shuffle(order)
        start.wait()
        try:
            for i in range(0, len(order), 8):          # batches, as the group commit sends
                batch = order[i:i + 8]
                answers = agg.accept_signed([upload(keys[d], d, body, agg.clock())
                                             for d, body in batch])
                for (d, body), answer in zip(batch, answers):
                    assert not isinstance(answer, Exception), answer
                    results[index].append((d, decode_frame(body).seq, answer["status"]))
        except BaseException as exc:     # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(i, agg)) for i, agg in enumerate((a, b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    accepted = {}
    for index in (0, 1):
        for d, seq, status in results[index]:
            assert status in ("accepted", "duplicate")
            accepted[(d, seq)] = accepted.get((d, seq), 0) + (status == "accepted")
    assert len(accepted) == len(bodies) and set(accepted.values()) == {1}
    for agg in (a, b):
        assert agg.total_weight("m") == expected
        assert agg.frame_count("m") == len(bodies)
        assert agg.aggregate("m").total_weight == pytest.approx(expected, rel=1e-12)
    # the trees either replica mirrors are the stored ones
    assert a.aggregate("m") == b.aggregate("m")


def fill(agg, device):
    """Four well-separated blobs of 100 unit-weight points, in one frame."""
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0], [6.0, 6.0]])
    points = np.concatenate([rng.normal(c, 0.3, size=(100, 2)) for c in centres])
    points = points.astype(np.float32)
    agg.accept("m", device, encode_frame(model="m", device=device, boot=1, seq=0,
                                         span=(0, len(points) - 1), points=points,
                                         weights=np.ones(len(points)), level=0, created=0.0))


def test_rollout_changes_are_atomic_for_pulls_at_the_other_replica(replicas):
    a, b = replicas
    a.add_device("dev-a")
    fill(a, "dev-a")
    devices = [f"p{i}" for i in range(4)]
    bodies = two_versions(a, devices)

    def change(_):
        a.rollback("m")
        assert b.rollout_state("m")["active"] == 1
        a.promote("m", 2)
        assert b.rollout_state("m")["active"] == 2

    seen = pull_during(b, change, devices, bodies, 15)
    assert set(seen) <= {1, 2} and seen
    assert {v["version"]: v["status"] for v in b.versions("m")} == {1: "retired", 2: "active"}


def test_publish_policies_and_compaction_run_once_across_replicas(replicas):
    a, b = replicas
    a.add_device("dev-a")
    fill(a, "dev-a")
    a.set_publish_policy("m", every_seconds=60, n_clusters=4)
    a.clock.now += 61
    start = threading.Barrier(2)
    published = {}

    def tick(index, agg):
        start.wait()
        published[index] = agg.run_publish_policies()

    threads = [threading.Thread(target=tick, args=(i, agg)) for i, agg in enumerate((a, b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(len(p) for p in published.values()) == 1
    assert [v["version"] for v in b.versions("m")] == [1]
    # a second round at either replica finds nothing due: no new weight
    assert a.run_publish_policies() == [] == b.run_publish_policies()
    # compaction is one transaction under the write lock: the second finds nothing left
    first = a.compact(now=a.clock.now + 10**7)
    second = b.compact(now=a.clock.now + 10**7)
    assert second["frames_collapsed"] == second["windows_compacted"] == 0
    assert second["buckets_after"] == first["buckets_after"]
    assert a.total_weight("m") == b.total_weight("m") == 400.0


def test_device_fails_over_between_two_served_replicas(postgres_server, tmp_path):
    from edgekm.sync.device.agent import DeviceAgent
    from helpers.serve import start_serve, stop_serve

    url = postgres_server.new_database("failover")
    with Aggregator(url) as admin:
        key = admin.add_device("dev-1")
    (proc_a, url_a), (proc_b, url_b) = start_serve(url), start_serve(url)
    try:
        agent = DeviceAgent([url_a, url_b], "m", "dev-1", key, tmp_path / "state",
                            n_clusters=3, coreset_size=20, max_retries=2, timeout=5.0,
                            random_state=0, sleep=lambda s: None)
        rng = np.random.default_rng(0)
        for _ in range(3):
            agent.ingest(rng.normal(size=(50, 2)).astype(np.float32))
            assert agent.sync()["pending"] == 0
        assert agent.current_server == url_a
        stop_serve(proc_a)                                  # replica A goes away
        for _ in range(3):
            agent.ingest(rng.normal(size=(50, 2)).astype(np.float32))
            assert agent.sync()["pending"] == 0
        assert agent.current_server == url_b
        agent.close()
    finally:
        for proc in (proc_a, proc_b):
            if proc.poll() is None:
                stop_serve(proc)
    with Aggregator(url) as check:
        assert check.total_weight("m") == 300.0 and check.frame_count("m") == 6
