"""The device's durable, bounded outbox of coreset frames (SQLite, WAL, ``synchronous=FULL``).

Standard library, numpy, msgpack and edgekm only: it runs on the device.

The outbox lives in ``state_dir/outbox.sqlite3`` and holds four tables:

- ``frames``: the frames waiting for an acknowledgement, keyed on ``seq``,
  with their ``boot``, encoded ``body`` (sent byte for byte on every retry),
  total ``weight``, row count ``n_points``, ``span_first``/``span_last``,
  ``level``, ``created``, the ``attempted`` flag, the ``attempts`` counter
  and the ``last_error``.
- ``rejected``: frames the aggregator refused for good (400, 403, 404, 409,
  413, 422, or 401 with a correct clock), kept with the HTTP status and the
  reason so that their weight is never dropped silently.
  :meth:`Outbox.requeue_rejected` puts them back in the queue.
- ``boots``: every boot id this outbox has used, with its start time.
- ``telemetry``: encoded telemetry summaries (``edgekm.EdgeFilter``) waiting
  for an acknowledgement, keyed on their ``seq`` (``state.next_tseq``), at
  most :data:`MAX_PENDING_TELEMETRY` (the oldest are dropped and counted in
  ``state.telemetry_dropped``).  Added without a schema bump: the table is
  created when an older outbox is opened.
- ``state``: ``device_id``, ``model``, ``next_seq``, ``next_point`` (the
  index of the next point the device will ingest), ``n_features`` and
  ``dtype`` once known, the counters ``weight_ingested``, ``weight_acked``,
  ``frames_acked``, ``frames_merged``, and the snapshot of the device's own
  model.

Every change is one SQLite transaction (``BEGIN IMMEDIATE`` .. ``COMMIT``),
and the counters move in the same transaction as the frames, so that at
every commit::

    weight_ingested == weight_acked + pending weight + rejected weight

exactly (the weights are integers held in float64, exact below 2**53).

Why no weight is counted twice at the aggregator
------------------------------------------------
1. A frame id ``(model, device, boot, seq)`` names one body for ever:
   ``next_seq`` moves in the transaction that inserts the frame, and the
   boot id is a fresh random 64-bit number at every open, so that even a
   wiped or restored ``state_dir`` does not reuse an id for other data.
2. A body never changes once stored.  A retry sends the same bytes, so the
   aggregator, which deduplicates on the id and the body's sha256, merges
   it once and answers "duplicate" afterwards.
3. A frame leaves ``frames`` in three ways only: after a 2xx (the
   aggregator merged it exactly once), to ``rejected`` after a permanent
   refusal (the aggregator merged nothing), or by a merge here.
4. A merge takes only frames whose ``attempted`` flag is 0.  The agent sets
   the flag, durably, *before* the first byte of a frame is sent, so a frame
   with the flag at 0 was never seen by the aggregator.  A frame that was
   attempted may have been merged there with its acknowledgement lost, so
   it is never merged here: merging it into a new frame (a new id) would
   count its weight twice.  It waits for its "duplicate" answer instead.
5. A merge inserts the merged frame, with a new ``seq`` and exactly the
   total weight of its parts, and deletes the parts, in one transaction: a
   crash leaves either the parts or the merged frame, never both or neither.

The argument assumes one timeline per ``state_dir``.  Restoring a copy or
a backup of a ``state_dir`` forks it: the copy's "never attempted" flags
may be stale (the original may have sent or merged those frames since), so
the two timelines can upload the same data under different ids, and the
aggregator counts it twice.  To replace a lost or damaged ``state_dir``,
start from an empty one: the fresh boot id keeps the new frame ids unique.

Bounding
--------
When an append leaves more than ``max_pending`` frames, pairs of frames are
merged (Observation 1 of the paper: the union of coresets of disjoint data
is a coreset of the union, reduced to ``coreset_size`` points with
:meth:`edgekm.Coreset.merge`) until the bound holds again.  The pair is two
never-attempted frames that are neighbours in span order, so that the
merged span is the union of theirs; among those, the pair whose merged
level is lowest wins (first a pair that fits in ``coreset_size`` points
without a reduce, then equal levels, oldest first).  Merging pairs by level
rather than folding everything into one frame at every overflow keeps the
levels logarithmic in the number of frames, as a coreset tree does, while
fewer than about 2**(max_pending - 1) frames have been queued: the oldest
data of a device that stays offline for days goes through about
log2(frames) reduce steps, not one per sync, and the level stays far below
:data:`edgekm.sync.wire.frame.MAX_LEVEL`.  (Beyond that, the top level grows by
one per 2**(max_pending - 2) frames or so; folding everything into one frame
would make it grow by one per frame.)

Only frames never attempted can merge.  The agent stops uploading at the
first retryable failure, so at most the head of the queue is attempted and
``max_pending >= 2`` is enough for the bound to hold.
"""

import math
import os
import secrets
import sqlite3
import time
from collections import namedtuple

import numpy as np

from edgekm import Coreset
from edgekm.exceptions import EdgekmError, OutboxError

from edgekm.sync._sqlite import from_sql_u64, to_sql_u64, transaction
from edgekm.sync.wire import frame as _frame

OUTBOX_FILE = "outbox.sqlite3"
SCHEMA_VERSION = 1

PendingFrame = namedtuple(
    "PendingFrame",
    "seq boot body weight n_points span level created attempted attempts last_error")
RejectedFrame = namedtuple(
    "RejectedFrame", "seq boot body weight n_points span level created status reason rejected_at")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS state (
    key     TEXT PRIMARY KEY,
    value
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS boots (
    n       INTEGER PRIMARY KEY,       -- 0, 1, 2, ...: the order of the boots
    boot    INTEGER NOT NULL UNIQUE,   -- uint64 boot id as two's complement int64
    started REAL NOT NULL
);

CREATE TABLE IF NOT EXISTS frames (
    seq         INTEGER PRIMARY KEY,
    boot        INTEGER NOT NULL,
    body        BLOB NOT NULL,
    weight      REAL NOT NULL CHECK (weight > 0),
    n_points    INTEGER NOT NULL CHECK (n_points >= 1),
    span_first  INTEGER NOT NULL,
    span_last   INTEGER NOT NULL,
    level       INTEGER NOT NULL,
    created     REAL NOT NULL,
    attempted   INTEGER NOT NULL DEFAULT 0 CHECK (attempted IN (0, 1)),
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT
);

CREATE TABLE IF NOT EXISTS rejected (
    seq         INTEGER PRIMARY KEY,
    boot        INTEGER NOT NULL,
    body        BLOB NOT NULL,
    weight      REAL NOT NULL,
    n_points    INTEGER NOT NULL,
    span_first  INTEGER NOT NULL,
    span_last   INTEGER NOT NULL,
    level       INTEGER NOT NULL,
    created     REAL NOT NULL,
    attempts    INTEGER NOT NULL,
    status      INTEGER NOT NULL,
    reason      TEXT NOT NULL,
    rejected_at REAL NOT NULL
);

CREATE TABLE IF NOT EXISTS telemetry (
    seq         INTEGER PRIMARY KEY,       -- unique per outbox, so per (boot) too
    boot        INTEGER NOT NULL,
    body        BLOB NOT NULL,             -- encode_telemetry bytes, sent byte for byte
    created     REAL NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT
);
"""

#: telemetry summaries kept at most; beyond it the oldest are dropped (and counted):
#: summaries are statistics, the coreset frames carry the data
MAX_PENDING_TELEMETRY = 256

_COUNTERS = ("next_seq", "next_point", "weight_ingested", "weight_acked", "frames_acked",
             "frames_merged")


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:             # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:             # pragma: no cover
        pass
    finally:
        os.close(fd)


class Outbox:
    """Durable, bounded queue of coreset frames for one device and one model.

    Opening an outbox starts a new boot: a fresh random 64-bit boot id,
    recorded in ``boots``, which names the frames created from now on.
    Frames already queued keep their own ``(boot, seq)``.

    Parameters
    ----------
    state_dir : str or path
        Directory of ``outbox.sqlite3`` (created if missing).
    device_id, model : str
        Identity stamped on every frame.  An existing outbox made for another
        device or model raises :class:`OutboxError`.
    coreset_size : int, default=200
        m: frames hold at most m points (larger coresets are reduced).
    max_pending : int, default=64
        Bound on queued frames (>= 2); beyond it frames are merged.
    random_state : None, int or numpy Generator, default=None
        Seeds the reduce steps of merges.

    Not thread-safe: use one outbox from one thread.  Several processes may
    open the same file (SQLite serialises them), but the device agent takes
    a lock so that only one agent uses a ``state_dir`` at a time.
    """

    def __init__(self, state_dir, *, device_id, model, coreset_size=200, max_pending=64,
                 random_state=None):
        _frame.check_id(device_id, "device_id")
        _frame.check_id(model, "model")
        if not (isinstance(coreset_size, int) and 1 <= coreset_size <= _frame.MAX_POINTS):
            raise ValueError(
                f"coreset_size must be an int in [1, {_frame.MAX_POINTS}]; got {coreset_size!r}.")
        if not (isinstance(max_pending, int) and max_pending >= 2):
            raise ValueError(f"max_pending must be an int >= 2; got {max_pending!r}.")
        self.device_id = device_id
        self.model = model
        self.coreset_size = coreset_size
        self.max_pending = max_pending
        self._rng = np.random.default_rng(random_state)
        self.state_dir = os.fspath(state_dir)
        os.makedirs(self.state_dir, exist_ok=True)
        self.path = os.path.join(self.state_dir, OUTBOX_FILE)
        fresh = not os.path.exists(self.path)
        self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._open_state()
        except BaseException:
            self._db.close()
            raise
        if fresh:
            _fsync_dir(self.state_dir)          # the new file's directory entry is durable

    # ------------------------------------------------------------ plumbing
    def _transaction(self, mode="IMMEDIATE"):
        return transaction(self._db, mode)

    def _get(self, key, default=None):
        row = self._db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return default if row is None else row[0]

    def _set(self, key, value):
        self._db.execute("INSERT INTO state (key, value) VALUES (?, ?) "
                         "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value))

    def _add(self, key, amount):
        self._db.execute("UPDATE state SET value = value + ? WHERE key = ?", (amount, key))

    def _open_state(self):
        with self._transaction() as db:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            version = self._get("schema")
            if version is None:
                self._set("schema", SCHEMA_VERSION)
                self._set("device_id", self.device_id)
                self._set("model", self.model)
                for key in _COUNTERS:
                    self._set(key, 0 if key in ("next_seq", "next_point", "frames_acked",
                                                 "frames_merged") else 0.0)
            elif version != SCHEMA_VERSION:
                raise OutboxError(f"{self.path} has outbox schema {version!r}; this version "
                                  f"reads schema {SCHEMA_VERSION}.")
            for key, mine in (("device_id", self.device_id), ("model", self.model)):
                theirs = self._get(key)
                if theirs != mine:
                    raise OutboxError(
                        f"{self.path} belongs to {key} {theirs!r}, not {mine!r}; use another "
                        "state_dir for another device or model.")
            known = {row[0] for row in db.execute("SELECT boot FROM boots")}
            while True:
                boot = secrets.randbits(64)
                if to_sql_u64(boot) not in known:
                    break
            db.execute("INSERT INTO boots (boot, started) VALUES (?, ?)",
                       (to_sql_u64(boot), time.time()))
            self._set("last_boot", to_sql_u64(boot))
        self.boot = boot

    def close(self):
        """Close the database (everything is already committed)."""
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------ reading
    def boots(self):
        """Boot ids used so far, oldest first, as ``(boot, started)`` pairs."""
        rows = self._db.execute("SELECT boot, started FROM boots ORDER BY n")
        return [(from_sql_u64(b), s) for b, s in rows]

    def stats(self):
        """Counters and totals, read in one transaction (a consistent snapshot)."""
        with self._transaction("DEFERRED") as db:
            out = {key: self._get(key) for key in _COUNTERS}
            n, w, att = db.execute("SELECT count(*), coalesce(sum(weight), 0.0), "
                                   "coalesce(sum(attempted), 0) FROM frames").fetchone()
            rn, rw = db.execute("SELECT count(*), coalesce(sum(weight), 0.0) FROM rejected"
                                ).fetchone()
        out.update(pending=n, pending_weight=float(w), pending_attempted=att, rejected=rn,
                   rejected_weight=float(rw), boot=self.boot)
        out["weight_ingested"] = float(out["weight_ingested"])
        out["weight_acked"] = float(out["weight_acked"])
        return out

    @property
    def next_seq(self):
        return self._get("next_seq")

    @property
    def next_point(self):
        return self._get("next_point")

    def layout(self):
        """``(n_features, dtype code)`` fixed by the first frame, or ``(None, None)``."""
        return self._get("n_features"), self._get("dtype")

    def set_layout(self, n_features, dtype_code):
        """Record the number of features and the dtype of this device's frames (once)."""
        with self._transaction():
            old = (self._get("n_features"), self._get("dtype"))
            if old == (None, None):
                self._set("n_features", int(n_features))
                self._set("dtype", str(dtype_code))
            elif old != (n_features, dtype_code):
                raise ValueError(
                    f"this outbox holds frames with n_features={old[0]} and dtype {old[1]}; "
                    f"got n_features={n_features} and dtype {dtype_code}.")

    def _row_to_pending(self, row):
        (seq, boot, body, weight, n_points, first, last, level, created, attempted, attempts,
         error) = row
        return PendingFrame(seq, from_sql_u64(boot), bytes(body), weight, n_points,
                            (first, last), level, created, bool(attempted), attempts, error)

    _PENDING_COLUMNS = ("seq, boot, body, weight, n_points, span_first, span_last, level, "
                        "created, attempted, attempts, last_error")

    def next_pending(self, after=-1):
        """The pending frame with the lowest seq above ``after``, or None."""
        row = self._db.execute(
            f"SELECT {self._PENDING_COLUMNS} FROM frames WHERE seq > ? ORDER BY seq LIMIT 1",
            (after,)).fetchone()
        return None if row is None else self._row_to_pending(row)

    def pending(self):
        """All pending frames in seq order (the upload order)."""
        rows = self._db.execute(f"SELECT {self._PENDING_COLUMNS} FROM frames ORDER BY seq")
        return [self._row_to_pending(r) for r in rows]

    def rejected(self):
        """Frames the aggregator refused for good, in seq order."""
        rows = self._db.execute(
            "SELECT seq, boot, body, weight, n_points, span_first, span_last, level, created, "
            "status, reason, rejected_at FROM rejected ORDER BY seq")
        return [RejectedFrame(s, from_sql_u64(b), bytes(body), w, n, (f, l), lv, c, st, r, t)
                for s, b, body, w, n, f, l, lv, c, st, r, t in rows]

    # ------------------------------------------------------------ writing
    def append(self, coreset, *, span, created=None):
        """Queue a coreset as a new frame; returns ``(seq, merges)``.

        ``coreset`` (an :class:`edgekm.Coreset`) summarises the points
        ``span = (first, last)`` (0-based indices over the device's life,
        ``first >= next_point``).  It is reduced to ``coreset_size`` points
        if larger.  The insert, the counters (``next_seq``, ``next_point``,
        ``weight_ingested``) and any merges that bring the queue back to
        ``max_pending`` frames are one transaction.  ``merges`` counts the
        pair merges done.
        """
        if not isinstance(coreset, Coreset):
            raise TypeError(f"append takes an edgekm.Coreset; got {type(coreset).__name__}.")
        first, last = int(span[0]), int(span[1])
        created = time.time() if created is None else float(created)
        if len(coreset) > self.coreset_size:
            coreset = coreset.merge(size=self.coreset_size, random_state=self._rng)
        weight = coreset.total_weight
        with self._transaction():
            next_point = self._get("next_point")
            if not 0 <= first <= last or first < next_point:
                raise ValueError(f"span must be (first, last) with {next_point} <= first <= "
                                 f"last (spans are monotonic); got {span!r}.")
            seq = self._insert(coreset, (first, last), created)
            self._set("next_point", last + 1)
            self._add("weight_ingested", weight)
            merges = 0
            while self._db.execute("SELECT count(*) FROM frames").fetchone()[0] > self.max_pending:
                if not self._merge_one_pair():
                    break
                merges += 1
        return seq, merges

    def _insert(self, coreset, span, created):
        """Encode and insert a frame with the next seq (inside a transaction)."""
        seq = self._get("next_seq")
        body = _frame.encode_frame(
            model=self.model, device=self.device_id, boot=self.boot, seq=seq, span=span,
            points=coreset.points, weights=coreset.weights, level=coreset.level,
            created=created, spread=coreset.spread)
        self._db.execute(
            "INSERT INTO frames (seq, boot, body, weight, n_points, span_first, span_last, "
            "level, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (seq, to_sql_u64(self.boot), body, coreset.total_weight, len(coreset), span[0],
             span[1], coreset.level, created))
        self._set("next_seq", seq + 1)
        return seq

    def _merge_one_pair(self):
        """Merge the best pair of never-attempted neighbours (inside a transaction)."""
        rows = self._db.execute(
            "SELECT seq, n_points, level, attempted, span_first FROM frames "
            "ORDER BY span_first, seq").fetchall()
        m = self.coreset_size
        best = None
        for a, b in zip(rows, rows[1:]):
            if a[3] or b[3]:
                continue                         # attempted: the aggregator may hold it
            size = a[1] + b[1]
            level = max(a[2], b[2]) + (1 if size > m else 0)
            if level > _frame.MAX_LEVEL:
                continue
            key = (level, size, a[4])
            if best is None or key < best[0]:
                best = (key, a[0], b[0])
        if best is None:
            return False
        parts = [self._db.execute(
            "SELECT body, weight, created FROM frames WHERE seq = ?", (s,)).fetchone()
            for s in best[1:]]
        frames = [_frame.decode_frame(bytes(body)) for body, _, _ in parts]
        coresets = [Coreset(f.points, f.weights, level=f.level, spread=f.spread) for f in frames]
        merged = Coreset.merge(*coresets, size=m, random_state=self._rng)
        expected = math.fsum(w for _, w, _ in parts)
        if not math.isclose(merged.total_weight, expected, rel_tol=1e-12, abs_tol=0.0):
            raise AssertionError(                 # pragma: no cover - would lose weight
                f"merge changed the weight from {expected!r} to {merged.total_weight!r}")
        span = (min(f.span[0] for f in frames), max(f.span[1] for f in frames))
        created = max(c for _, _, c in parts)   # when the newest data was packaged
        self._insert(merged, span, created)
        deleted = self._db.execute(
            "DELETE FROM frames WHERE seq IN (?, ?) AND attempted = 0", best[1:]).rowcount
        if deleted != 2:
            raise AssertionError("merge parts changed under the transaction")  # pragma: no cover
        self._add("frames_merged", 1)
        return True

    def mark_attempted(self, seq):
        """Set ``attempted`` and count one attempt; call before sending any byte."""
        with self._transaction() as db:
            n = db.execute("UPDATE frames SET attempted = 1, attempts = attempts + 1 "
                           "WHERE seq = ?", (seq,)).rowcount
        return n == 1

    def record_error(self, seq, error):
        """Store the last upload error of a pending frame."""
        with self._transaction() as db:
            db.execute("UPDATE frames SET last_error = ? WHERE seq = ?", (str(error)[:500], seq))

    def ack(self, seq):
        """The aggregator acknowledged ``seq``: delete it and count its weight as acked.

        Returns the weight, or None when the frame was not pending (nothing
        is counted twice, even if two handles acknowledge the same frame).
        """
        with self._transaction() as db:
            row = db.execute("SELECT weight FROM frames WHERE seq = ?", (seq,)).fetchone()
            if row is None:
                return None
            db.execute("DELETE FROM frames WHERE seq = ?", (seq,))
            self._add("weight_acked", row[0])
            self._add("frames_acked", 1)
        return row[0]

    def reject(self, seq, status, reason):
        """Move ``seq`` to ``rejected`` with the HTTP status and the reason; returns the weight."""
        with self._transaction() as db:
            row = db.execute("SELECT weight FROM frames WHERE seq = ?", (seq,)).fetchone()
            if row is None:
                return None
            db.execute(
                "INSERT INTO rejected (seq, boot, body, weight, n_points, span_first, span_last, "
                "level, created, attempts, status, reason, rejected_at) SELECT seq, boot, body, "
                "weight, n_points, span_first, span_last, level, created, attempts, ?, ?, ? "
                "FROM frames WHERE seq = ?", (int(status), str(reason)[:500], time.time(), seq))
            db.execute("DELETE FROM frames WHERE seq = ?", (seq,))
        return row[0]

    def requeue_rejected(self, seqs=None):
        """Put rejected frames back in the queue (all, or those in ``seqs``); returns the count.

        For a refusal that is fixed on the aggregator (a device registered
        late, a model created).  They keep their id and body, and come back
        marked as attempted, so they are never merged.
        """
        with self._transaction() as db:
            rows = db.execute("SELECT seq FROM rejected ORDER BY seq").fetchall()
            chosen = [r[0] for r in rows if seqs is None or r[0] in set(seqs)]
            for seq in chosen:
                db.execute(
                    "INSERT INTO frames (seq, boot, body, weight, n_points, span_first, "
                    "span_last, level, created, attempted, attempts, last_error) SELECT seq, "
                    "boot, body, weight, n_points, span_first, span_last, level, created, 1, "
                    "attempts, 'requeued after ' || status || ': ' || reason FROM rejected "
                    "WHERE seq = ?", (seq,))
                db.execute("DELETE FROM rejected WHERE seq = ?", (seq,))
        return len(chosen)

    # ------------------------------------------------------------ telemetry
    def take_telemetry_seq(self):
        """The next telemetry seq (durably consumed: a crash leaves a gap, never a reuse)."""
        with self._transaction():
            seq = self._get("next_tseq", 0)
            self._set("next_tseq", seq + 1)
        return seq

    def append_telemetry(self, seq, boot, body, created=None):
        """Queue an encoded summary; drops the oldest beyond the cap. Returns the drop count."""
        created = time.time() if created is None else float(created)
        with self._transaction() as db:
            db.execute("INSERT INTO telemetry (seq, boot, body, created) VALUES (?, ?, ?, ?)",
                       (int(seq), to_sql_u64(int(boot)), bytes(body), created))
            n = db.execute("SELECT count(*) FROM telemetry").fetchone()[0]
            dropped = max(0, n - MAX_PENDING_TELEMETRY)
            if dropped:
                db.execute("DELETE FROM telemetry WHERE seq IN (SELECT seq FROM telemetry "
                           "ORDER BY seq LIMIT ?)", (dropped,))
                self._set("telemetry_dropped", self._get("telemetry_dropped", 0) + dropped)
        return dropped

    def pending_telemetry(self):
        """``(seq, body)`` of the queued summaries, oldest first."""
        return [(seq, bytes(body)) for seq, body in
                self._db.execute("SELECT seq, body FROM telemetry ORDER BY seq")]

    def ack_telemetry(self, seq):
        with self._transaction() as db:
            n = db.execute("DELETE FROM telemetry WHERE seq = ?", (seq,)).rowcount
            if n:
                self._set("telemetry_acked", self._get("telemetry_acked", 0) + 1)
        return n == 1

    def drop_telemetry(self, seq, reason):
        """Discard a summary the aggregator refused for good (counted)."""
        with self._transaction() as db:
            n = db.execute("DELETE FROM telemetry WHERE seq = ?", (seq,)).rowcount
            if n:
                self._set("telemetry_rejected", self._get("telemetry_rejected", 0) + 1)
                self._set("telemetry_last_rejection", str(reason)[:500])
        return n == 1

    def record_telemetry_error(self, seq, error):
        with self._transaction() as db:
            db.execute("UPDATE telemetry SET attempts = attempts + 1, last_error = ? "
                       "WHERE seq = ?", (str(error)[:500], seq))

    def telemetry_stats(self):
        with self._transaction("DEFERRED") as db:
            n = db.execute("SELECT count(*) FROM telemetry").fetchone()[0]
            return {"telemetry_pending": n,
                    "telemetry_acked": self._get("telemetry_acked", 0),
                    "telemetry_rejected": self._get("telemetry_rejected", 0),
                    "telemetry_dropped": self._get("telemetry_dropped", 0)}

    # ------------------------------------------------------------ model snapshot
    def save_snapshot(self, body):
        """Store the device model's summary (an encoded frame) for the next boot."""
        with self._transaction():
            self._set("snapshot", body)

    def load_snapshot(self):
        """The stored summary (bytes) or None."""
        value = self._get("snapshot")
        return None if value is None else bytes(value)
