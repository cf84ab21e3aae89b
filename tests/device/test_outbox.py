"""The device outbox: durability, atomicity, bounded merging and exact weight accounting."""

import os
import sqlite3
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from edgekm import Coreset
from edgekm.sync.device import outbox as outbox_mod
from edgekm.sync.wire.frame import MAX_LEVEL, decode_frame
from edgekm.sync.device.outbox import OUTBOX_FILE, Outbox, OutboxError

M = 16          # coreset_size
D = 3


def _coreset(n, seed=0):
    X = np.random.default_rng(seed).random((n, D)).astype(np.float32)
    return Coreset(X)


def _open(path, **kw):
    kw.setdefault("device_id", "dev-1")
    kw.setdefault("model", "m1")
    kw.setdefault("coreset_size", M)
    kw.setdefault("max_pending", 4)
    kw.setdefault("random_state", 0)
    return Outbox(path, **kw)


def _check_accounting(ob):
    s = ob.stats()
    assert s["weight_ingested"] == s["weight_acked"] + s["pending_weight"] + s["rejected_weight"]
    return s


def _check_frames(ob):
    """Every pending body decodes to its row: id, weight, span, level."""
    for f in ob.pending():
        frame = decode_frame(f.body)
        assert (frame.model, frame.device, frame.boot, frame.seq) == ("m1", "dev-1", f.boot, f.seq)
        assert frame.total_weight == f.weight and frame.span == f.span
        assert frame.level == f.level and len(frame.points) == f.n_points <= M


def test_pragmas_and_schema(tmp_path):
    with _open(tmp_path) as ob:
        assert ob._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert ob._db.execute("PRAGMA synchronous").fetchone()[0] == 2      # FULL
        tables = {r[0] for r in ob._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"frames", "rejected", "state", "boots"} <= tables
    assert os.path.exists(tmp_path / OUTBOX_FILE)


def test_reopen_after_every_operation(tmp_path):
    """Each operation is committed when it returns; a new boot per open, old ids kept."""
    boots = []
    point = 0
    bodies = {}
    for step in range(6):
        with _open(tmp_path, max_pending=100) as ob:
            boots.append(ob.boot)
            seq, merges = ob.append(_coreset(10, step), span=(point, point + 9))
            point += 10
            assert merges == 0 and seq == step
            bodies[seq] = ob.pending()[-1].body
        with _open(tmp_path, max_pending=100) as ob:
            boots.append(ob.boot)
            s = _check_accounting(ob)
            assert s["next_seq"] == step + 1 and s["next_point"] == point
            assert {f.seq: f.body for f in ob.pending()} == bodies     # byte for byte
            ob.mark_attempted(step)
        with _open(tmp_path, max_pending=100) as ob:
            boots.append(ob.boot)
            f = ob.next_pending(step - 1)
            assert f.seq == step and f.attempted and f.attempts == 1
            assert decode_frame(f.body).boot == boots[-3]               # its original boot
    assert len(set(boots)) == len(boots)
    with _open(tmp_path) as ob:
        assert [b for b, _ in ob.boots()][:-1] == boots
        assert ob.ack(0) == 10.0 and ob.ack(0) is None                  # counted once
        ob.reject(1, 409, "conflict")
    with _open(tmp_path) as ob:
        s = _check_accounting(ob)
        assert (s["weight_acked"], s["frames_acked"], s["rejected"], s["rejected_weight"]) == \
            (10.0, 1, 1, 10.0)
        assert [(r.seq, r.status, r.reason) for r in ob.rejected()] == [(1, 409, "conflict")]


def _child(tmp_path, max_pending, frames):
    """The start of a child process's script: an outbox in tmp_path, fed ``frames`` frames."""
    return textwrap.dedent(f"""
        import os, numpy as np
        from edgekm import Coreset
        from edgekm.sync.device.outbox import Outbox
        ob = Outbox({str(tmp_path)!r}, device_id="dev-1", model="m1", coreset_size={M},
                    max_pending={max_pending}, random_state=0)
        for i in range({frames}):
            X = np.random.default_rng(i).random((10, {D})).astype(np.float32)
            ob.append(Coreset(X), span=(10 * i, 10 * i + 9))
    """)


def test_crash_without_close_keeps_commits(tmp_path):
    """A process that dies without closing loses nothing that an operation returned."""
    code = _child(tmp_path, max_pending=4, frames=7) + textwrap.dedent("""
        first = ob.pending()[0].seq
        ob.mark_attempted(first)
        print(ob.boot, ob.ack(first), flush=True)
        os._exit(0)          # no close, no atexit
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    boot, acked = out.stdout.split()
    with _open(tmp_path) as ob:
        s = _check_accounting(ob)
        assert s["weight_ingested"] == 70.0 and s["weight_acked"] == float(acked) > 0
        assert s["pending"] <= 4 and s["pending_weight"] == 70.0 - float(acked)
        assert s["next_point"] == 70 and s["frames_merged"] > 0 and s["frames_acked"] == 1
        assert ob.boots()[0][0] == int(boot)
        _check_frames(ob)


def _state(ob):
    return ob.stats() | {"frames": [(f.seq, f.body, f.attempted) for f in ob.pending()]}


def test_merge_transaction_rolls_back_on_error(tmp_path, monkeypatch):
    with _open(tmp_path, max_pending=3) as ob:
        for i in range(3):
            ob.append(_coreset(10, i), span=(10 * i, 10 * i + 9))
        before = _state(ob)
        real = Outbox._insert
        calls = []

        def failing_insert(self, *args):
            seq = real(self, *args)
            calls.append(seq)
            if len(calls) == 2:             # the merged frame is in, the parts not deleted
                raise RuntimeError("injected failure inside the merge")
            return seq

        monkeypatch.setattr(Outbox, "_insert", failing_insert)
        with pytest.raises(RuntimeError, match="injected"):
            ob.append(_coreset(10, 9), span=(30, 39))
        monkeypatch.undo()
        after = _state(ob)
        after["boot"] = before["boot"]
        assert after == before              # the append and the merge rolled back together
        ob.append(_coreset(10, 9), span=(30, 39))
        s = _check_accounting(ob)
        assert s["pending"] == 3 and s["pending_weight"] == 40.0 and s["frames_merged"] == 1


def test_crash_inside_merge_transaction(tmp_path):
    """Killed between the merged insert and the deletes: the reopened outbox has neither."""
    code = _child(tmp_path, max_pending=3, frames=3) + textwrap.dedent(f"""
        real = Outbox._insert
        calls = []
        def dying_insert(self, *args):
            seq = real(self, *args)
            calls.append(seq)
            if len(calls) == 2:
                os._exit(7)
            return seq
        Outbox._insert = dying_insert
        X = np.random.default_rng(9).random((10, {D})).astype(np.float32)
        ob.append(Coreset(X), span=(30, 39))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 7, proc.stderr
    with _open(tmp_path, max_pending=3) as ob:
        s = _check_accounting(ob)
        assert s["weight_ingested"] == 30.0 and s["next_seq"] == 3 and s["next_point"] == 30
        assert [f.seq for f in ob.pending()] == [0, 1, 2] and s["frames_merged"] == 0


def test_bounded_merging_keeps_weight_spans_and_levels(tmp_path):
    rng = np.random.default_rng(1)
    point = 0
    with _open(tmp_path, max_pending=5) as ob:
        for i in range(120):
            n = int(rng.integers(1, 3 * M))
            seq, _ = ob.append(_coreset(n, i), span=(point, point + n - 1))
            point += n
            s = _check_accounting(ob)
            assert s["pending"] <= 5 and s["pending_weight"] == point
        _check_frames(ob)
        frames = ob.pending()
        spans = sorted(f.span for f in frames)
        assert spans[0][0] == 0 and spans[-1][1] == point - 1
        assert all(a[1] + 1 == b[0] for a, b in zip(spans, spans[1:]))     # disjoint, gapless
        seqs = [f.seq for f in frames]
        assert seqs == sorted(set(seqs)) and seqs[-1] == ob.next_seq - 1
        # pairs merge by level, as a coreset tree: the level grows like log2(frames)
        assert max(f.level for f in frames) <= 2 + int(np.log2(120)) + 2 < MAX_LEVEL


def test_merge_levels_grow_like_a_coreset_tree(tmp_path):
    """Full frames (every merge reduces): the level stays near log2(frames), not frames."""
    X = np.random.default_rng(0).random((M, D)).astype(np.float32)
    with _open(tmp_path, max_pending=12) as ob:
        for i in range(200):
            ob.append(Coreset(X), span=(M * i, M * i + M - 1))
        assert max(f.level for f in ob.pending()) <= int(np.ceil(np.log2(200)))
        assert _check_accounting(ob)["pending_weight"] == 200 * M


def test_never_merges_an_attempted_frame(tmp_path):
    with _open(tmp_path, max_pending=3) as ob:
        ob.append(_coreset(10, 0), span=(0, 9))
        ob.mark_attempted(0)
        head = ob.pending()[0]
        for i in range(1, 30):
            ob.append(_coreset(10, i), span=(10 * i, 10 * i + 9))
            frames = ob.pending()
            assert frames[0] == head          # same seq, boot, body: its ACK may be lost
            assert len(frames) <= 3
        _check_accounting(ob)
        assert ob.stats()["pending_weight"] == 300.0


def test_only_attempted_frames_left_exceeds_the_bound_without_merging(tmp_path):
    with _open(tmp_path, max_pending=2) as ob:
        for i in range(3):
            ob.append(_coreset(10, i), span=(10 * i, 10 * i + 9))
            ob.mark_attempted(ob.pending()[-1].seq)
        assert ob.stats()["pending"] == 3 and ob.stats()["frames_merged"] == 0


def test_merge_without_reduce_keeps_the_level(tmp_path):
    with _open(tmp_path, max_pending=2) as ob:
        for i in range(3):
            ob.append(_coreset(3, i), span=(3 * i, 3 * i + 2))
        levels = sorted(f.level for f in ob.pending())
        assert levels == [0, 0]               # 3 + 3 points fit in m: a union, no reduce


def test_append_reduces_a_large_coreset(tmp_path):
    with _open(tmp_path) as ob:
        ob.append(_coreset(5 * M), span=(0, 5 * M - 1))
        f = ob.pending()[0]
        assert f.n_points == M and f.level == 1 and f.weight == 5 * M


def test_span_must_be_monotonic(tmp_path):
    with _open(tmp_path) as ob:
        ob.append(_coreset(4), span=(0, 3))
        before = _state(ob)
        for span in [(3, 10), (5, 4), (-1, 2)]:
            with pytest.raises(ValueError, match="monotonic"):
                ob.append(_coreset(4), span=span)
        assert _state(ob) == before
        ob.append(_coreset(4), span=(10, 13))      # a gap is allowed (points lost in a crash)


def test_identity_and_parameters(tmp_path):
    _open(tmp_path).close()
    with pytest.raises(OutboxError, match="device_id 'dev-1'"):
        _open(tmp_path, device_id="dev-2")
    with pytest.raises(OutboxError, match="model 'm1'"):
        _open(tmp_path, model="m2")
    with pytest.raises(ValueError, match="max_pending"):
        _open(tmp_path, max_pending=1)
    with pytest.raises(ValueError, match="coreset_size"):
        _open(tmp_path, coreset_size=0)
    with pytest.raises(ValueError, match="device_id"):
        _open(tmp_path, device_id="../x")
    with _open(tmp_path) as ob:
        with pytest.raises(TypeError, match="Coreset"):
            ob.append(np.ones((2, 2)), span=(0, 1))
        ob.set_layout(3, "<f4")
        ob.set_layout(3, "<f4")
        with pytest.raises(ValueError, match="n_features=3"):
            ob.set_layout(4, "<f4")


def test_boot_ids_are_unsigned_64_bit(tmp_path, monkeypatch):
    monkeypatch.setattr(outbox_mod.secrets, "randbits", lambda bits: 2**64 - 5)
    with _open(tmp_path) as ob:
        assert ob.boot == 2**64 - 5
        ob.append(_coreset(4), span=(0, 3))
        f = ob.pending()[0]
        assert f.boot == decode_frame(f.body).boot == 2**64 - 5
        assert ob.boots()[0][0] == 2**64 - 5


def test_reject_and_requeue(tmp_path):
    with _open(tmp_path, max_pending=10) as ob:
        for i in range(3):
            ob.append(_coreset(5, i), span=(5 * i, 5 * i + 4))
        ob.mark_attempted(1)
        assert ob.reject(1, 404, "unknown_model: no such model") == 5.0
        assert ob.reject(1, 404, "again") is None
        s = _check_accounting(ob)
        assert s["rejected"] == 1 and s["pending"] == 2
        body = ob.rejected()[0].body
        assert ob.requeue_rejected() == 1
        requeued = [f for f in ob.pending() if f.seq == 1][0]
        assert requeued.body == body and requeued.attempted and "404" in requeued.last_error
        _check_accounting(ob)
        ob.reject(1, 409, "conflict")
        assert ob.requeue_rejected(seqs=[99]) == 0


def test_two_handles_never_double_ack(tmp_path):
    with _open(tmp_path) as a, _open(tmp_path) as b:
        a.append(_coreset(5), span=(0, 4))
        assert a.ack(0) == 5.0 and b.ack(0) is None
        assert _check_accounting(b)["frames_acked"] == 1


def test_snapshot_roundtrip(tmp_path):
    with _open(tmp_path) as ob:
        assert ob.load_snapshot() is None
        ob.save_snapshot(b"abc")
    with _open(tmp_path) as ob:
        assert ob.load_snapshot() == b"abc"


def test_database_file_is_plain_sqlite(tmp_path):
    with _open(tmp_path) as ob:
        ob.append(_coreset(5), span=(0, 4))
    db = sqlite3.connect(tmp_path / OUTBOX_FILE)
    assert db.execute("SELECT count(*), sum(weight) FROM frames").fetchone() == (1, 5.0)
    db.close()


class OutboxMachine(RuleBasedStateMachine):
    """The outbox against an exact reference: every weight is somewhere, exactly once."""

    def __init__(self):
        super().__init__()
        import tempfile
        self.dir = tempfile.mkdtemp()
        self.ob = _open(self.dir, max_pending=3)
        self.point = 0
        self.ingested = 0.0
        self.acked = 0.0
        self.attempted = {}           # seq -> body of frames that may have reached the server

    def teardown(self):
        import shutil
        self.ob.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(n=st.integers(1, 3 * M), seed=st.integers(0, 2**16))
    def append(self, n, seed):
        self.ob.append(_coreset(n, seed), span=(self.point, self.point + n - 1))
        self.point += n
        self.ingested += n

    @precondition(lambda self: self.ob.stats()["pending"] > 0)
    @rule()
    def attempt_head(self):
        f = self.ob.pending()[0]
        self.ob.mark_attempted(f.seq)
        self.attempted[f.seq] = f.body

    @precondition(lambda self: self.ob.stats()["pending_attempted"] > 0)
    @rule()
    def ack_head(self):
        f = [f for f in self.ob.pending() if f.attempted][0]
        self.acked += self.ob.ack(f.seq)

    @precondition(lambda self: self.ob.stats()["pending_attempted"] > 0)
    @rule(status=st.sampled_from([400, 409]))
    def reject_head(self, status):
        f = [f for f in self.ob.pending() if f.attempted][0]
        self.ob.reject(f.seq, status, "test")

    @rule()
    def requeue(self):
        self.ob.requeue_rejected()

    @rule()
    def reopen(self):
        self.ob.close()
        self.ob = _open(self.dir, max_pending=3)

    @invariant()
    def weight_is_conserved(self):
        s = _check_accounting(self.ob)
        assert s["weight_ingested"] == self.ingested and s["weight_acked"] == self.acked

    @invariant()
    def attempted_frames_are_never_rewritten(self):
        pending = {f.seq: f.body for f in self.ob.pending()}
        rejected = {r.seq: r.body for r in self.ob.rejected()}
        for seq, body in self.attempted.items():
            assert pending.get(seq, rejected.get(seq, body)) == body


TestOutboxMachine = OutboxMachine.TestCase
TestOutboxMachine.settings = settings(max_examples=15, stateful_step_count=20, deadline=None,
                                      suppress_health_check=[HealthCheck.too_slow])


def test_pair_merges_keep_the_spread_and_the_cost_about_any_centre(tmp_path):
    """Frames are v2; merging pending frames composes their spread exactly (Observation 1)."""
    rng = np.random.default_rng(3)
    center = np.array([0.25, 0.5, 0.75])
    truth = 0.0
    with _open(tmp_path, max_pending=2) as ob:
        point = 0
        for step in range(6):
            X = rng.random((12, D))
            c = Coreset(X).merge(size=5, random_state=step)      # 12 points -> 5, with spread
            assert c.total_spread > 0
            truth += float(np.sum((X - center) ** 2))
            ob.append(c, span=(point, point + 11))
            point += 12
        assert ob.stats()["frames_merged"] > 0
        got = 0.0
        for f in ob.pending():
            frame = decode_frame(f.body)
            assert frame.version == 2
            diff = frame.points - center
            got += float(np.sum(frame.spread) + np.sum(frame.weights * np.sum(diff * diff, 1)))
    assert got == pytest.approx(truth, rel=1e-9)
