"""The device agent against a fake aggregator: exact weight, retries, merges, restarts."""

import doctest
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from helpers.fake_aggregator import FakeAggregator
from edgekm.sync.device import agent as agent_mod
from edgekm.sync.device.agent import AgentLockedError, DeviceAgent
from edgekm.sync.wire.auth import new_key

D = 4
M = 20
KEY = new_key()


class FixedRng:
    """A jitter source that always draws the same fraction."""

    def __init__(self, value):
        self.value = value

    def random(self):
        return self.value


def _points(n, seed=0):
    return np.random.default_rng(seed).normal(size=(n, D)).astype(np.float32)


def _agent(url, state_dir, **kw):
    kw.setdefault("coreset_size", M)
    kw.setdefault("max_pending", 8)
    kw.setdefault("max_retries", 0)
    kw.setdefault("timeout", 5.0)
    kw.setdefault("random_state", 0)
    kw.setdefault("sleep", lambda s: None)
    return DeviceAgent(url, "fleet", kw.pop("device_id", "dev-1"), kw.pop("key", KEY),
                       state_dir, n_clusters=3, **kw)


def _check(agent, ingested=None):
    """The accounting equation, exactly; returns the stats."""
    s = agent.stats()
    assert s["weight_ingested"] == (s["window_weight"] + s["pending_weight"]
                                    + s["weight_acked"] + s["rejected_weight"])
    if ingested is not None:
        assert s["weight_ingested"] == ingested
    return s


def _spans_cover(fake, n):
    """The frames the fake merged tile [0, n - 1] exactly (weights are point counts)."""
    spans = sorted(span for _, w, span in fake.frames.values())
    assert spans[0][0] == 0 and spans[-1][1] == n - 1
    assert all(a[1] + 1 == b[0] for a, b in zip(spans, spans[1:]))
    assert sum(w for _, w, _ in fake.frames.values()) == n


@pytest.fixture
def fake():
    with FakeAggregator({"dev-1": KEY, "dev-2": KEY}) as server:
        yield server


def test_ingest_sync_and_exact_weight(fake, tmp_path):
    with _agent(fake.url, tmp_path) as agent:
        n = 0
        for i in range(5):
            X = _points(37 * (i + 1), seed=i)
            agent.ingest(X)
            agent.ingest(X[0])                       # one point
            n += len(X) + 1
            _check(agent, n)
            report = agent.sync()
            assert report == {"uploaded": 1, "accepted": 1, "duplicates": 0, "rejected": 0,
                              "merged": 0, "failed_attempts": 0, "error": None, "pending": 0,
                              "pending_weight": 0.0, "telemetry_uploaded": 0,
                              "telemetry_pending": 0, "version": None}
            _check(agent, n)
        assert agent.sync()["uploaded"] == 0        # nothing new: no empty frame
        assert agent.model.n_seen_ == n
        assert fake.total_weight("fleet") == n and fake.duplicates == 0
        _spans_cover(fake, n)
        seqs = sorted(seq for (_, _, _, seq) in fake.frames)
        assert seqs == list(range(5))
        s = _check(agent, n)
        assert s["frames_acked"] == 5 and s["weight_acked"] == n


def test_frames_are_signed_over_the_path_prefix(tmp_path):
    with FakeAggregator({"dev-1": KEY}) as server:
        with _agent(server.url + "/", tmp_path) as agent:
            agent.ingest(_points(10))
            assert agent.sync()["uploaded"] == 1
        assert server.log[0][0] == "/v1/models/fleet/frames"


def test_server_down_for_many_syncs_then_back(fake, tmp_path):
    """Bounded outbox while offline; afterwards the aggregator holds every point once."""
    fake.stop()
    n = 0
    with _agent(fake.url, tmp_path, max_pending=3, max_retries=1) as agent:
        merged = 0
        for i in range(40):
            X = _points(int(5 + 7 * (i % 5)), seed=i)
            agent.ingest(X)
            n += len(X)
            report = agent.sync()
            assert report["uploaded"] == 0 and "network" in report["error"]
            assert report["pending"] <= 3
            merged += report["merged"]
            _check(agent, n)
        assert merged >= 37
        # two mergeable slots (the head is attempted): levels grow, but slower than 1 per sync
        assert max(f.level for f in agent.outbox.pending()) < 30
        fake.start()
        report = agent.sync()
        assert report["uploaded"] == report["accepted"] == 3 and report["pending"] == 0
        assert report["error"] is None
        s = _check(agent, n)
        assert s["weight_acked"] == n
    assert fake.total_weight("fleet") == n and fake.duplicates == 0
    _spans_cover(fake, n)


def test_lost_ack_is_retried_and_counted_once(fake, tmp_path):
    fake.script = ["drop_after_accept"]
    with _agent(fake.url, tmp_path, max_retries=2) as agent:
        agent.ingest(_points(50))
        report = agent.sync()
        assert report["uploaded"] == report["duplicates"] == 1 and report["accepted"] == 0
        assert report["failed_attempts"] == 1 and "network" in report["error"]
        _check(agent, 50)
    assert fake.accepted == 1 and fake.duplicates == 1
    assert fake.total_weight("fleet") == 50


def test_lost_ack_then_offline_with_merges(fake, tmp_path):
    """The frame whose ACK was lost is never merged; it comes back as a duplicate."""
    fake.script = ["drop_after_accept"]
    n = 0
    with _agent(fake.url, tmp_path, max_pending=3) as agent:
        agent.ingest(_points(30))
        n += 30
        assert agent.sync()["uploaded"] == 0
        assert fake.total_weight("fleet") == 30          # merged there, ACK lost here
        head = agent.outbox.pending()[0]
        fake.stop()
        for i in range(20):
            agent.ingest(_points(11, seed=i))
            n += 11
            report = agent.sync()
            assert report["pending"] <= 3
            _check(agent, n)
        now = agent.outbox.pending()[0]
        assert (now.seq, now.boot, now.body, now.attempts) == (head.seq, head.boot, head.body, 21)
        fake.start()
        report = agent.sync()
        assert report["duplicates"] == 1 and report["pending"] == 0
        _check(agent, n)
    assert fake.total_weight("fleet") == n and fake.duplicates == 1
    _spans_cover(fake, n)


@pytest.mark.parametrize("status", [400, 409, 413, 422])
def test_frame_specific_refusals_go_to_rejected(fake, tmp_path, status):
    with _agent(fake.url, tmp_path) as agent:
        agent.ingest(_points(10))
        agent.flush()
        agent.ingest(_points(15, seed=1))
        fake.script = [status]
        report = agent.sync()
        assert report["rejected"] == 1 and report["uploaded"] == 1 and report["pending"] == 0
        assert report["error"].startswith(f"HTTP {status}")
        s = _check(agent, 25)
        assert s["rejected_weight"] == 10 and s["weight_acked"] == 15
        rejected = agent.outbox.rejected()
        assert [(r.seq, r.status) for r in rejected] == [(0, status)]
        assert "scripted" in rejected[0].reason
        # an operator fixes the cause and requeues: the frame goes through once
        assert agent.outbox.requeue_rejected() == 1
        assert agent.sync()["uploaded"] == 1
        _check(agent, 25)
    assert fake.total_weight("fleet") == 25


@pytest.mark.parametrize("status", [401, 403, 404, 405, 410])
def test_device_wide_refusals_stop_the_sync(fake, tmp_path, status):
    with _agent(fake.url, tmp_path) as agent:
        for i in range(3):
            agent.ingest(_points(10, seed=i))
            agent.flush()
        fake.script = [status]
        report = agent.sync()
        assert report["rejected"] == 1 and report["uploaded"] == 0 and report["pending"] == 2
        _check(agent, 30)
        assert agent.sync()["uploaded"] == 2


def test_real_refusals_from_the_fake(tmp_path):
    """An unregistered device (401) and a model clash on n_features (422)."""
    with FakeAggregator({"dev-2": KEY}) as server:
        with _agent(server.url, tmp_path / "a") as agent:
            agent.ingest(_points(5))
            report = agent.sync()
            assert report["rejected"] == 1 and "unauthorized" in report["error"]
            _check(agent, 5)
        with _agent(server.url, tmp_path / "b", device_id="dev-2") as agent:
            agent.ingest(np.ones((5, D + 1)))
            agent.sync()
            assert agent.sync()["rejected"] == 0
        with _agent(server.url, tmp_path / "c", device_id="dev-2") as agent:
            agent.ingest(_points(5))
            report = agent.sync()
            assert report["rejected"] == 1 and report["error"].startswith("HTTP 422")


def test_backoff_schedule_with_full_jitter(fake, tmp_path):
    sleeps = []
    fake.script = [500, 502, 500, 500, 500]
    with _agent(fake.url, tmp_path, max_retries=3, backoff_base=0.5, backoff_max=1.5,
                sleep=sleeps.append, rng=FixedRng(0.5)) as agent:
        agent.ingest(_points(10))
        report = agent.sync()
        # retries 0, 1, 2 cap at 0.5, 1.0, min(2.0, 1.5): half of each with this jitter
        assert sleeps == [0.25, 0.5, 0.75]
        assert report["failed_attempts"] == 4 and report["uploaded"] == 0
        assert report["pending"] == 1 and report["error"].startswith("HTTP 500")
        f = agent.outbox.pending()[0]
        assert f.attempted and f.attempts == 4 and f.last_error.startswith("HTTP 500")
        sleeps.clear()
        report = agent.sync()               # one more 500, then accepted
        assert sleeps == [0.25] and report["uploaded"] == 1 and report["failed_attempts"] == 1
    assert fake.total_weight("fleet") == 10


def test_jitter_spans_zero_to_the_cap_and_retry_after(fake, tmp_path):
    sleeps = []
    with _agent(fake.url, tmp_path, max_retries=2, backoff_base=4.0, backoff_max=10.0,
                sleep=sleeps.append, rng=FixedRng(0.0)) as agent:
        agent.ingest(_points(10))
        fake.script = [500, 500]
        agent.sync()
        assert sleeps == [0.0, 0.0]
        sleeps.clear()
        agent.ingest(_points(10))
        fake.script = [503, 503]                # the fake sends Retry-After: 1
        agent.sync()
        assert sleeps == [1.0, 1.0]
    with _agent(fake.url, tmp_path, max_retries=4, backoff_base=4.0, backoff_max=10.0,
                sleep=sleeps.append, rng=FixedRng(0.999)) as agent:
        sleeps.clear()
        agent.ingest(_points(10))
        fake.script = [500, 500, 500, 500]
        agent.sync()
        assert sleeps == pytest.approx([3.996, 7.992, 9.99, 9.99])


@pytest.mark.parametrize("status", [408, 429, 500, 503, 302])
def test_retryable_answers(fake, tmp_path, status):
    sleeps = []
    fake.script = [status]
    with _agent(fake.url, tmp_path, max_retries=1, sleep=sleeps.append) as agent:
        agent.ingest(_points(10))
        report = agent.sync()
        assert report["uploaded"] == 1 and report["failed_attempts"] == 1
        assert report["error"].startswith(f"HTTP {status}") and len(sleeps) == 1
        assert report["rejected"] == 0


def test_a_retry_after_beyond_backoff_max_waits_for_the_next_sync(fake, tmp_path):
    sleeps = []
    fake.script = [503]                         # Retry-After: 1
    with _agent(fake.url, tmp_path, max_retries=3, backoff_max=0.5,
                sleep=sleeps.append) as agent:
        agent.ingest(_points(10))
        report = agent.sync()
        assert report["uploaded"] == 0 and report["pending"] == 1 and sleeps == []
        assert agent.sync()["uploaded"] == 1


def test_a_2xx_that_is_not_an_ack_keeps_the_frame(fake, tmp_path):
    fake.script = [200]                     # a 200 with someone else's body
    with _agent(fake.url, tmp_path) as agent:
        agent.ingest(_points(10))
        report = agent.sync()
        assert report["uploaded"] == 0 and "without an acknowledgement" in report["error"]
        assert agent.sync()["uploaded"] == 1
    assert fake.total_weight("fleet") == 10


def test_a_device_clock_off_by_an_hour_is_corrected(tmp_path):
    """A 401 while the server's Date is an hour away: learn the offset and retry."""
    with FakeAggregator({"dev-1": KEY}, clock_offset=3600.0) as server:
        with _agent(server.url, tmp_path, max_retries=1) as agent:
            agent.ingest(_points(10))
            report = agent.sync()
            assert report["uploaded"] == 1 and report["failed_attempts"] == 1
            assert "clock skew" in report["error"]
            agent.ingest(_points(10))
            report = agent.sync()
            assert report["uploaded"] == 1 and report["error"] is None
        assert server.total_weight("fleet") == 20


_CHILD = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    from edgekm.sync.device.agent import DeviceAgent
    url, state, key, mode = sys.argv[1:5]
    agent = DeviceAgent(url, "fleet", "dev-1", key, state, n_clusters=3, coreset_size=20,
                        max_pending=4, max_retries=0, random_state=1)
    rng = np.random.default_rng(int(sys.argv[5]))
    for i in range(6):
        agent.ingest(rng.normal(size=(25, 4)).astype(np.float32))
        agent.sync()
    agent.ingest(rng.normal(size=(7, 4)).astype(np.float32))      # only in the window
    out = {"boot": agent.boot, "stats": agent.stats(),
           "pending": [[f.seq, f.boot, f.body.hex()] for f in agent.outbox.pending()]}
    print(json.dumps(out), flush=True)
    if mode == "crash":
        os._exit(0)
    agent.close()
""")


@pytest.mark.parametrize("mode", ["crash", "close"])
def test_restart_in_a_new_process_keeps_seq_and_pending(fake, tmp_path, mode):
    fake.stop()                              # the first run is offline
    state = tmp_path / "state"

    def run(seed):
        proc = subprocess.run([sys.executable, "-c", _CHILD, fake.url, str(state), KEY, mode,
                               str(seed)], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    first = run(0)
    assert first["stats"]["weight_ingested"] == 157 and first["stats"]["window_weight"] == 7
    second = run(1)
    assert second["boot"] != first["boot"]
    old = {seq: (boot, body) for seq, boot, body in first["pending"]}
    for seq, boot, body in second["pending"]:
        if seq in old:                       # attempted frames keep their id and bytes
            assert (boot, body) == old[seq]
    kept = 150 if mode == "crash" else 157   # a crash loses the window (and its count)
    assert second["stats"]["next_point"] - second["stats"]["window_weight"] == kept + 150
    assert min(s for s, _, _ in second["pending"]) == min(old)
    assert max(s for s, _, _ in second["pending"]) > max(old)
    fake.start()
    with _agent(fake.url, state, max_pending=4, random_state=1) as agent:
        s = _check(agent)
        total = kept + (150 if mode == "crash" else 157)
        assert s["weight_ingested"] == total
        assert len(agent.outbox.boots()) == 3
        assert agent.model.n_seen_ == total      # the summary saved at the last flush
        next_point = s["next_point"]
        agent.ingest(_points(3))
        report = agent.sync()
        assert report["pending"] == 0
        _check(agent, total + 3)
    assert fake.total_weight("fleet") == total + 3 and fake.duplicates == 0
    spans = sorted(span for _, _, span in fake.frames.values())
    assert spans[-1][1] == next_point + 2
    assert all(a[1] < b[0] for a, b in zip(spans, spans[1:]))      # disjoint, increasing


def test_spans_and_seqs_are_monotonic(fake, tmp_path):
    with _agent(fake.url, tmp_path) as agent:
        for i in range(6):
            agent.ingest(_points(3 + i, seed=i))
            agent.sync()
    frames = sorted((seq, span) for (_, _, _, seq), (_, _, span) in fake.frames.items())
    assert [seq for seq, _ in frames] == list(range(6))
    spans = [span for _, span in frames]
    assert spans == sorted(spans) and spans[0][0] == 0
    assert all(a[1] + 1 == b[0] for a, b in zip(spans, spans[1:]))


def test_close_flushes_and_restores_the_local_model(fake, tmp_path):
    with _agent(fake.url, tmp_path) as agent:
        agent.ingest(_points(100))
        centers = agent.model.cluster_centers_
    with _agent(fake.url, tmp_path) as agent:
        s = _check(agent, 100)
        assert s["pending_weight"] == 100 and s["window_weight"] == 0
        assert agent.model.n_seen_ == 100
        assert agent.model.cluster_centers_.shape == centers.shape
        agent.sync()
    assert fake.total_weight("fleet") == 100


def test_ingest_validation(fake, tmp_path):
    with _agent(fake.url, tmp_path) as agent:
        agent.ingest([1.0, 2.0, 3.0, 4.0])
        bad = _points(5)
        bad[3, 1] = np.nan
        with pytest.raises(ValueError, match="first bad row is 3"):
            agent.ingest(bad)
        with pytest.raises(ValueError, match="5 features"):
            agent.ingest(np.ones((2, 5)))
        with pytest.raises(ValueError, match="2-D"):
            agent.ingest(np.ones((2, 2, 2)))
        with pytest.raises(ValueError, match="minimum of 1"):
            agent.ingest(np.ones((0, 4)))
        _check(agent, 1)
        assert agent.model.n_seen_ == 1
    with _agent(fake.url, tmp_path) as agent:        # the layout survives the restart
        with pytest.raises(ValueError, match="4 features"):
            agent.ingest(np.ones((2, 3)))
    with pytest.raises(ValueError, match="dtype"):
        _agent(fake.url, tmp_path, dtype=np.float64)
    with _agent(fake.url, tmp_path) as agent:           # the fast path checks too
        agent.ingest(np.ones(4, dtype=np.float32))
        for bad in (np.array([1, np.inf, 0, 0], dtype=np.float32), np.ones(5, np.float32)):
            with pytest.raises(ValueError):
                agent.ingest(bad)
        _check(agent, 2)
        assert agent.model.n_seen_ == 2            # 1 restored from the snapshot, 1 new


def test_parameters_are_checked(tmp_path):
    with pytest.raises(ValueError, match="server_url"):
        _agent("ftp://x", tmp_path)
    with pytest.raises(ValueError, match="key"):
        _agent("http://127.0.0.1:9", tmp_path, key="zz")
    with pytest.raises(ValueError, match="coreset_size"):
        _agent("http://127.0.0.1:9", tmp_path, coreset_size=2)
    with pytest.raises(ValueError, match="max_retries"):
        _agent("http://127.0.0.1:9", tmp_path, max_retries=-1)
    with pytest.raises(ValueError, match="model"):
        DeviceAgent("http://127.0.0.1:9", "a/b", "dev-1", KEY, tmp_path)
    with _agent("http://127.0.0.1:9", tmp_path, coreset_size=65536) as agent:
        with pytest.raises(ValueError, match="max_frame_bytes"):
            agent.ingest(np.ones((1, 64)))


def test_one_agent_per_state_dir(tmp_path):
    agent = _agent("http://127.0.0.1:9", tmp_path)
    with pytest.raises(AgentLockedError):
        _agent("http://127.0.0.1:9", tmp_path)
    agent.close()
    agent.close()                                # idempotent
    for call in (lambda: agent.ingest(np.ones(4)), agent.sync, agent.stats):
        with pytest.raises(ValueError, match="closed"):
            call()
    _agent("http://127.0.0.1:9", tmp_path).close()


def test_examples_run():
    failed, attempted = doctest.testmod(agent_mod, verbose=False, report=True)
    assert attempted > 0 and failed == 0


def test_device_side_imports_only_stdlib_numpy_msgpack_edgekm(fake, tmp_path):
    code = textwrap.dedent(f"""
        import sys
        before = set(sys.modules)
        import numpy as np
        import edgekm.sync.device.agent
        from edgekm.sync import DeviceAgent
        agent = DeviceAgent({fake.url!r}, "fleet", "dev-1", {KEY!r}, {str(tmp_path)!r},
                            n_clusters=2, coreset_size=20, max_retries=0)
        agent.ingest(np.random.default_rng(0).random((50, 3)))
        report = agent.sync()
        assert report["uploaded"] == 1, report
        agent.ingest(np.ones(3))
        agent.close()
        new = sorted(set(sys.modules) - before)
        print("\\n".join(new))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    loaded = proc.stdout.split()
    tops = {name.split(".")[0] for name in loaded}
    allowed = set(sys.stdlib_module_names) | {"numpy", "msgpack", "edgekm"}
    odd = sorted(t for t in tops if t not in allowed and not t.startswith("_cython_")
           and t != "cython_runtime")
    assert odd == [], f"the device side imported {odd}"
    for banned in ("starlette", "uvicorn", "httpx", "requests", "sklearn", "scipy", "anyio",
                   "edgekm.sync.cloud.aggregator", "edgekm.sync.cloud.http.app", "edgekm.sync.cloud.database"):
        assert banned not in loaded
    assert "sqlite3" in tops and "urllib" in tops


# ---------------------------------------------------------------- end to end
_DEVICE = textwrap.dedent("""
    import json, sys
    import numpy as np
    from edgekm.datasets import load_shuttle
    from edgekm.sync import DeviceAgent
    url, state, device, key, start, stop, online = sys.argv[1:8]
    X = load_shuttle()[int(start):int(stop)]
    duplicates = 0
    with DeviceAgent(url, "shuttle", device, key, state, n_clusters=5, coreset_size=50,
                     max_pending=4, max_retries=2, backoff_base=0.05, backoff_max=0.2,
                     random_state=0) as agent:
        for batch in np.array_split(X, 8):
            agent.ingest(batch)
            report = agent.sync()
            duplicates += report["duplicates"]
        for _ in range(20 if online == "online" else 0):
            if not report["pending"]:
                break
            report = agent.sync()
            duplicates += report["duplicates"]
        print(json.dumps({"report": report, "stats": agent.stats(), "duplicates": duplicates}),
              flush=True)
""")


class _AckDroppingRelay:
    """A TCP relay in front of the aggregator that loses some answers.

    Connection ``n`` (0-based) with ``n % drop_every == 1`` reaches the
    aggregator, which processes the frame, but the relay closes the device's
    connection as soon as the answer starts: a lost ACK on a real network.
    """

    def __init__(self, port, upstream_port, drop_every=3):
        import socket
        import threading
        self.upstream_port = upstream_port
        self.drop_every = drop_every
        self.connections = 0
        self.dropped = 0
        self._lock = threading.Lock()
        self._sock = socket.create_server(("127.0.0.1", port))
        self._closed = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        import threading
        while True:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                n = self.connections
                self.connections += 1
            threading.Thread(target=self._relay, args=(client, n % self.drop_every == 1),
                             daemon=True).start()

    @staticmethod
    def _pump(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass

    def _relay(self, client, drop):
        import socket
        import threading
        with client, socket.create_connection(("127.0.0.1", self.upstream_port)) as upstream:
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            if drop:
                try:
                    upstream.recv(1)                    # the aggregator has committed
                except OSError:
                    pass
                with self._lock:
                    self.dropped += 1
                client.shutdown(socket.SHUT_RDWR)
            else:
                self._pump(upstream, client)

    def close(self):
        self._sock.close()


def test_end_to_end_real_aggregator_uvicorn_and_device_processes(tmp_path):
    """Device processes, offline first (the outbox merges), then through a lossy network.

    The real aggregator (``create_app`` under uvicorn on loopback) sits
    behind a relay that loses one answer in three: the devices retry, the
    aggregator answers "duplicate", and its exact weight equals the points
    the devices ingested.
    """
    aggregator_mod = pytest.importorskip(
        "edgekm.sync.cloud.aggregator", reason="the aggregator (edgekm.sync.cloud.aggregator) is missing")
    server_mod = pytest.importorskip("edgekm.sync.cloud.http.app",
                                     reason="the server (edgekm.sync.cloud.http.app) is missing")
    uvicorn = pytest.importorskip("uvicorn")
    import threading

    from helpers.fake_aggregator import _free_port

    aggregator = aggregator_mod.Aggregator(tmp_path / "agg.db", coreset_size=50, random_state=0)
    devices = {f"dev-{i}": aggregator.add_device(f"dev-{i}") for i in range(3)}
    relay_port, server_port = _free_port(), _free_port()
    url = f"http://127.0.0.1:{relay_port}"

    def run_devices(ranges, online):
        procs = {dev: subprocess.Popen(
            [sys.executable, "-c", _DEVICE, url, str(tmp_path / dev), dev, devices[dev],
             str(lo), str(hi), online], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
            for dev, (lo, hi) in ranges.items()}
        out = {}
        for dev, proc in procs.items():
            stdout, stderr = proc.communicate(timeout=120)
            assert proc.returncode == 0, stderr
            out[dev] = json.loads(stdout)
        return out

    # phase 1: nothing listens yet; every device queues and merges
    offline = run_devices({"dev-0": (0, 1500), "dev-1": (1500, 3000), "dev-2": (3000, 4500)},
                          "offline")
    for result in offline.values():
        assert result["report"]["pending"] <= 4 and result["stats"]["frames_merged"] > 0
        assert result["stats"]["weight_ingested"] == 1500

    app = server_mod.create_app(aggregator)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=server_port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    relay = None
    try:
        for _ in range(200):
            if server.started:
                break
            threading.Event().wait(0.05)
        assert server.started
        relay = _AckDroppingRelay(relay_port, server_port)
        # phase 2: new processes (new boots) upload their outbox and stream more
        online = run_devices({"dev-0": (4500, 5000), "dev-1": (5000, 5500),
                              "dev-2": (5500, 6000)}, "online")
        for result in online.values():
            assert result["report"]["pending"] == 0, result
            assert result["stats"]["weight_acked"] == result["stats"]["weight_ingested"] == 2000
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        if relay is not None:
            relay.close()
    try:
        # every lost answer came back as a duplicate (or, for a lost error, an accept)
        assert 1 <= sum(r["duplicates"] for r in online.values()) <= relay.dropped
        assert aggregator.total_weight("shuttle") == 6000          # exactly, despite the drops
        centers = aggregator.fit("shuttle", 5)
        assert centers.shape == (5, 9) and np.isfinite(centers).all()
    finally:
        aggregator.close()


def test_call_json_returns_the_answer_and_raises_answer_error_otherwise(tmp_path):
    """The one client's JSON form (the admin API's): 2xx JSON decoded, anything else an
    AnswerError that names the request and carries the status."""
    from edgekm.exceptions import AnswerError
    from edgekm.sync import Aggregator
    from edgekm.sync.cloud.http import BackgroundServer, create_app
    from edgekm.sync.device.client import SignedClient

    with Aggregator(str(tmp_path / "a.db")) as aggregator:
        app = create_app(aggregator, admin_token="t0ken", policy_interval=None)
        with BackgroundServer(app) as server:
            client = SignedClient(server.url, admin_token="t0ken", proxies={})
            assert client.call_json("GET", "/healthz") == {"status": "ok", "db": "ok"}
            with pytest.raises(AnswerError, match=r"GET /v1/models/nope: HTTP 404") as info:
                client.call_json("GET", "/v1/models/nope")
            assert info.value.status == 404
            wrong = SignedClient(server.url, admin_token="wrong", proxies={})
            with pytest.raises(AnswerError) as info:
                wrong.call_json("GET", "/v1/models/nope")
            assert info.value.status == 401
    with pytest.raises(AnswerError, match=r"GET /healthz: ") as info:
        SignedClient("http://127.0.0.1:9", admin_token="t", timeout=1.0).call_json(
            "GET", "/healthz")
    assert info.value.status is None
