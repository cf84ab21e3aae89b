"""The aggregator's SQLite store: schema, migrations and connection settings.

The aggregator's services use this module through :class:`Database`.  The database runs in WAL
mode, so that readers (fits, health checks) never block the single writer,
with ``synchronous=FULL`` by default: a transaction is on disk when COMMIT
returns, and the aggregator answers 200 only after that.

Schema v1 (every table is documented in ``sync/PROTOCOL.md`` §Aggregator):

- ``schema_version``: one row, the version of this schema.
- ``devices``: device id, key (hex), creation time, revocation time (NULL
  while the device is active; a revoked device is kept for audit).
- ``models``: id, name, n_features, dtype of the stored points, window
  length in seconds (fixed when the model is created), the exact sum of the
  accepted frame weights, the frame count, the seed and merge counter of
  the model's random stream, and ``folded_through``: the last window whose
  tree has been merged into the all-time tree (NULL: none yet).
- ``frames``: one row per accepted frame, keyed on (model, device, boot,
  seq), with the sha256 digest of its body (deduplication), its weight and
  the aggregator's receive time and window.  No points are kept here.
- ``buckets``: the coreset trees, one row per bucket: (model, window, level,
  position) and the bucket's points, weights and (schema v4) spread as
  little-endian bytes.
  ``window = -1`` is the all-time tree; it holds the windows up to
  ``models.folded_through``, and the all-time aggregate is its union with
  the trees of the later windows.
- ``windows``: per model and window, the exact weight and frame count.
- ``nonces``: (device, nonce, request timestamp), expired after twice the
  allowed clock skew.

Schema v2 adds the centroid versions (issue 4, :mod:`edgekm.sync.cloud.versions`):

- ``versions``: one row per published version, keyed on (model, version):
  the exact encoded document (``body``) and its ``digest``, a few columns
  copied out of it for listing, the model's merged weight when it was
  published, and ``status``.  Triggers make every column but ``status``
  immutable and forbid deletes.
- ``rollouts``: per model, the active version, the canary and its percentage.
- ``active_history``: per model, the stack of versions made active
  (``rollback`` pops it).
- ``pins``: (model, device) -> version.
- ``served``: (model, device) -> the last version served to that device and
  when (the rollback header).
- ``version_events``: every status change, pin and unpin, with its time and
  actor (``cli``, ``http``, ``policy``, ``api``).
- ``telemetry``: one row per accepted telemetry summary, keyed on (model,
  device, boot, seq) with its digest (deduplication) and scalar fields.
- ``device_drift``: per (model, device), the latest drift the device reported.
- ``telemetry_totals``: per model, counts, bytes and anomalies summed.
- ``version_usage``: per (model, version), the cluster counts devices reported.
- ``anomalies``: the raw anomaly points forwarded with each summary.
- ``publish_policies``: per model, the automatic publishing policy.

Schema v3 adds the weight cap and the compaction (issue 5, hardening):

- ``models`` gains ``clipped_weight`` (weight removed by the ``clip`` cap
  policy, all time), ``max_device_weight`` and ``weight_cap_policy`` (a
  per-model cap; NULL: the aggregator's) and ``compacted_through`` (the last
  window merged into the compacted tree, ``window = -2`` of ``buckets``).
- ``frames`` gains ``clipped``: the weight the cap removed from the frame
  (``weight`` is the weight merged).
- ``device_windows``: per (model, device, window), the weight merged, the
  frames and the weight clipped; the cap is checked against it.  Compaction
  sums the rows of compacted windows into one row per (model, device) at
  ``window = -2``.
- ``seq_ranges``: per (kind, model, device, boot), runs ``[seq_lo, seq_hi]``
  of consecutive sequence numbers whose dedup rows (``frames`` or
  ``telemetry``) were collapsed by compaction: every seq of a run was
  accepted, so a frame in a run is a duplicate (``kind`` is ``frame`` or
  ``telemetry``).

Schema v5 adds the pooled drift test (issue 12):

- ``version_drift``: per (model, version), the sums over every v2 summary devices
  sent while using it: cluster counts, counts beyond p99, sums and sums of
  squares (little-endian float64 blobs), and the points and summaries pooled;
  the drift report runs :func:`edgekm.drift.drift_test` on them.
- ``canary_gates``: per model, the canary started with a gate (``auto_abort``,
  ``auto_promote_after``) and when (:mod:`edgekm.sync.cloud.gate`).
- ``canary_cohorts``: per (model, canary, cohort ``canary``/``control``), the
  pooled statistics of the cohort's v2 summaries and their cost.
- ``canary_policies``: per model, the gate's thresholds (NULL: the default).
"""

import contextlib
import sqlite3
import threading

from edgekm.exceptions import (SchemaError, StorageIntegrityError, UnavailableError,
                               UnknownModelError)

from .._sqlite import transaction
from .connections import Connections, schema_version
from .postgres import PgDatabase, is_postgres_url

SCHEMA_VERSION = 5
ALL_TIME = -1
#: the ``window`` of the compacted tree (buckets) and of the compacted totals (windows,
#: device_windows)
COMPACTED = -2

_V1 = """
CREATE TABLE devices (
    device_id   TEXT PRIMARY KEY,
    key_hex     TEXT NOT NULL,
    created     REAL NOT NULL,
    revoked     REAL
) WITHOUT ROWID;

CREATE TABLE models (
    model_id        INTEGER PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    n_features      INTEGER NOT NULL CHECK (n_features >= 1),
    dtype           TEXT NOT NULL CHECK (dtype IN ('<f4', '<f8')),
    window_seconds  REAL NOT NULL CHECK (window_seconds > 0),
    created         REAL NOT NULL,
    total_weight    REAL NOT NULL DEFAULT 0,
    n_frames        INTEGER NOT NULL DEFAULT 0,
    seed            INTEGER NOT NULL,
    n_reduces       INTEGER NOT NULL DEFAULT 0,
    folded_through  INTEGER             -- windows <= this are merged into the all-time tree
);

CREATE TABLE frames (
    model_id    INTEGER NOT NULL REFERENCES models(model_id),
    device_id   TEXT NOT NULL REFERENCES devices(device_id),
    boot        INTEGER NOT NULL,   -- the uint64 boot id, stored as two's complement int64
    seq         INTEGER NOT NULL,
    digest      BLOB NOT NULL,      -- sha256 of the frame body
    weight      REAL NOT NULL,
    n_points    INTEGER NOT NULL,
    span_first  INTEGER NOT NULL,
    span_last   INTEGER NOT NULL,
    level       INTEGER NOT NULL,
    created     REAL NOT NULL,      -- device clock
    received    REAL NOT NULL,      -- aggregator clock
    window      INTEGER NOT NULL,
    PRIMARY KEY (model_id, device_id, boot, seq)
) WITHOUT ROWID;

CREATE TABLE buckets (
    model_id        INTEGER NOT NULL REFERENCES models(model_id),
    window          INTEGER NOT NULL,
    level           INTEGER NOT NULL,
    position        INTEGER NOT NULL,
    n_points        INTEGER NOT NULL,
    n_features      INTEGER NOT NULL,
    dtype           TEXT NOT NULL,
    points          BLOB NOT NULL,
    weights         BLOB NOT NULL,
    total_weight    REAL NOT NULL,
    coreset_level   INTEGER NOT NULL,
    PRIMARY KEY (model_id, window, level, position)
);

CREATE TABLE windows (
    model_id        INTEGER NOT NULL REFERENCES models(model_id),
    window          INTEGER NOT NULL,
    total_weight    REAL NOT NULL,
    n_frames        INTEGER NOT NULL,
    first_received  REAL NOT NULL,
    last_received   REAL NOT NULL,
    PRIMARY KEY (model_id, window)
) WITHOUT ROWID;

CREATE TABLE nonces (
    device_id   TEXT NOT NULL,
    nonce       TEXT NOT NULL,
    timestamp   INTEGER NOT NULL,
    PRIMARY KEY (device_id, nonce)
) WITHOUT ROWID;
CREATE INDEX nonces_by_time ON nonces (timestamp);
"""

_V2 = (
    """CREATE TABLE versions (
    model_id        INTEGER NOT NULL REFERENCES models(model_id),
    version         INTEGER NOT NULL CHECK (version >= 1),
    status          TEXT NOT NULL CHECK (status IN ('candidate', 'canary', 'active', 'retired')),
    created         REAL NOT NULL,
    parent          INTEGER,
    k               INTEGER NOT NULL,
    d               INTEGER NOT NULL,
    training_weight REAL NOT NULL,
    cost            REAL NOT NULL,
    shift           REAL,
    windows         INTEGER,
    model_weight    REAL NOT NULL,      -- models.total_weight when it was published
    digest          TEXT NOT NULL,
    body            BLOB NOT NULL,      -- encode_version() bytes, served as they are
    PRIMARY KEY (model_id, version)
) WITHOUT ROWID""",
    """CREATE TRIGGER versions_immutable BEFORE UPDATE OF model_id, version, created, parent, k,
    d, training_weight, cost, shift, windows, model_weight, digest, body ON versions
BEGIN
    SELECT RAISE(ABORT, 'a published version is immutable (only its status changes)');
END""",
    """CREATE TRIGGER versions_kept BEFORE DELETE ON versions
BEGIN
    SELECT RAISE(ABORT, 'a published version is never deleted');
END""",
    """CREATE TABLE rollouts (
    model_id        INTEGER PRIMARY KEY REFERENCES models(model_id),
    active          INTEGER,
    canary          INTEGER,
    canary_percent  REAL NOT NULL DEFAULT 0,
    updated         REAL NOT NULL
)""",
    """CREATE TABLE active_history (
    model_id    INTEGER NOT NULL REFERENCES models(model_id),
    position    INTEGER NOT NULL,
    version     INTEGER NOT NULL,
    since       REAL NOT NULL,
    PRIMARY KEY (model_id, position)
) WITHOUT ROWID""",
    """CREATE TABLE pins (
    model_id    INTEGER NOT NULL REFERENCES models(model_id),
    device_id   TEXT NOT NULL REFERENCES devices(device_id),
    version     INTEGER NOT NULL,
    since       REAL NOT NULL,
    PRIMARY KEY (model_id, device_id)
) WITHOUT ROWID""",
    """CREATE TABLE served (
    model_id    INTEGER NOT NULL REFERENCES models(model_id),
    device_id   TEXT NOT NULL,
    version     INTEGER NOT NULL,
    at          REAL NOT NULL,
    PRIMARY KEY (model_id, device_id)
) WITHOUT ROWID""",
    """CREATE TABLE version_events (
    event_id    INTEGER PRIMARY KEY AUTOINCREMENT,
    model_id    INTEGER NOT NULL REFERENCES models(model_id),
    version     INTEGER,
    at          REAL NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    old_status  TEXT,
    new_status  TEXT,
    detail      TEXT                -- JSON
)""",
    "CREATE INDEX version_events_by_model ON version_events (model_id, event_id)",
    """CREATE TABLE telemetry (
    model_id        INTEGER NOT NULL REFERENCES models(model_id),
    device_id       TEXT NOT NULL,
    boot            INTEGER NOT NULL,   -- two's complement int64, as in frames
    seq             INTEGER NOT NULL,
    digest          BLOB NOT NULL,
    received        REAL NOT NULL,
    version         INTEGER NOT NULL,
    window_start    REAL NOT NULL,
    window_end      REAL NOT NULL,
    n_points        INTEGER NOT NULL,
    raw_bytes       INTEGER NOT NULL,
    forwarded_bytes INTEGER NOT NULL,
    n_anomalies     INTEGER NOT NULL,
    psi             REAL NOT NULL,
    drift_score     REAL NOT NULL,
    assign_latency_us REAL NOT NULL,
    PRIMARY KEY (model_id, device_id, boot, seq)
) WITHOUT ROWID""",
    """CREATE TABLE device_drift (
    model_id        INTEGER NOT NULL REFERENCES models(model_id),
    device_id       TEXT NOT NULL,
    version         INTEGER NOT NULL,
    received        REAL NOT NULL,
    window_end      REAL NOT NULL,
    n_points        INTEGER NOT NULL,
    psi             REAL NOT NULL,
    dist_p50        REAL NOT NULL,
    dist_p95        REAL NOT NULL,
    dist_p99        REAL NOT NULL,
    drift_score     REAL NOT NULL,
    compression     REAL NOT NULL,
    assign_latency_us REAL NOT NULL,
    PRIMARY KEY (model_id, device_id)
) WITHOUT ROWID""",
    """CREATE TABLE telemetry_totals (
    model_id        INTEGER PRIMARY KEY REFERENCES models(model_id),
    summaries       INTEGER NOT NULL,
    n_points        INTEGER NOT NULL,
    raw_bytes       INTEGER NOT NULL,
    forwarded_bytes INTEGER NOT NULL,
    n_anomalies     INTEGER NOT NULL
)""",
    """CREATE TABLE version_usage (
    model_id    INTEGER NOT NULL REFERENCES models(model_id),
    version     INTEGER NOT NULL,
    counts      BLOB NOT NULL,      -- little-endian float64, one per cluster
    n_points    INTEGER NOT NULL,
    PRIMARY KEY (model_id, version)
) WITHOUT ROWID""",
    """CREATE TABLE anomalies (
    model_id    INTEGER NOT NULL REFERENCES models(model_id),
    device_id   TEXT NOT NULL,
    boot        INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    version     INTEGER NOT NULL,
    received    REAL NOT NULL,
    n           INTEGER NOT NULL,
    d           INTEGER NOT NULL,
    dtype       TEXT NOT NULL,
    points      BLOB NOT NULL,
    labels      BLOB NOT NULL,      -- little-endian int32
    scores      BLOB NOT NULL,      -- little-endian float64
    PRIMARY KEY (model_id, device_id, boot, seq)
) WITHOUT ROWID""",
    """CREATE TABLE publish_policies (
    model_id        INTEGER PRIMARY KEY REFERENCES models(model_id),
    every_seconds   REAL,
    every_weight    REAL,
    drift_threshold REAL,
    n_clusters      INTEGER,
    windows         INTEGER,
    n_init          INTEGER NOT NULL,
    random_state    INTEGER,
    since           REAL NOT NULL       -- when the policy was set
)""",
)

_V3 = (
    "ALTER TABLE models ADD COLUMN clipped_weight REAL NOT NULL DEFAULT 0",
    "ALTER TABLE models ADD COLUMN max_device_weight REAL",
    "ALTER TABLE models ADD COLUMN weight_cap_policy TEXT CHECK (weight_cap_policy IN "
    "('reject', 'clip'))",
    "ALTER TABLE models ADD COLUMN compacted_through INTEGER",
    "ALTER TABLE frames ADD COLUMN clipped REAL NOT NULL DEFAULT 0",
    """CREATE TABLE device_windows (
    model_id    INTEGER NOT NULL REFERENCES models(model_id),
    device_id   TEXT NOT NULL,
    window      INTEGER NOT NULL,   -- -2: the compacted windows
    weight      REAL NOT NULL,      -- merged
    n_frames    INTEGER NOT NULL,
    clipped     REAL NOT NULL,      -- removed by the clip policy
    PRIMARY KEY (model_id, device_id, window)
) WITHOUT ROWID""",
    """CREATE TABLE seq_ranges (
    kind        TEXT NOT NULL CHECK (kind IN ('frame', 'telemetry')),
    model_id    INTEGER NOT NULL REFERENCES models(model_id),
    device_id   TEXT NOT NULL,
    boot        INTEGER NOT NULL,   -- two's complement int64, as in frames
    seq_lo      INTEGER NOT NULL,
    seq_hi      INTEGER NOT NULL CHECK (seq_hi >= seq_lo),
    n_items     INTEGER NOT NULL,   -- rows collapsed (seq_hi - seq_lo + 1)
    weight      REAL NOT NULL,      -- their merged weight (0 for telemetry)
    PRIMARY KEY (kind, model_id, device_id, boot, seq_lo)
) WITHOUT ROWID""",
    # the frames of the existing rows, per device and window, so that the cap sees them
    """INSERT INTO device_windows (model_id, device_id, window, weight, n_frames, clipped)
    SELECT model_id, device_id, window, sum(weight), count(*), 0 FROM frames
    GROUP BY model_id, device_id, window""",
    "CREATE INDEX frames_by_received ON frames (received)",
    "CREATE INDEX telemetry_by_received ON telemetry (received)",
    "CREATE INDEX anomalies_by_received ON anomalies (received)",
)

#: v4: each bucket keeps its points' spread (frame v2), little-endian float64; NULL for the
#: buckets written before, which read as zeros
_V4 = ("ALTER TABLE buckets ADD COLUMN spread BLOB",)

_V5 = ("""CREATE TABLE version_drift (
    model_id    INTEGER NOT NULL REFERENCES models(model_id),
    version     INTEGER NOT NULL,
    counts      BLOB NOT NULL,      -- little-endian float64, one per cluster
    beyond      BLOB NOT NULL,      -- points beyond each cluster's p99
    sums        BLOB NOT NULL,      -- k x d
    sumsq       BLOB NOT NULL,      -- k x d
    n_points    INTEGER NOT NULL,
    summaries   INTEGER NOT NULL,
    PRIMARY KEY (model_id, version)
) WITHOUT ROWID""",
       """CREATE TABLE canary_gates (
    model_id            INTEGER PRIMARY KEY REFERENCES models(model_id),
    version             INTEGER NOT NULL,
    auto_abort          INTEGER NOT NULL,
    auto_promote_after  INTEGER,
    started             REAL NOT NULL
)""",
       """CREATE TABLE canary_cohorts (
    model_id    INTEGER NOT NULL REFERENCES models(model_id),
    version     INTEGER NOT NULL,   -- the canary
    cohort      TEXT NOT NULL,      -- 'canary' or 'control'
    counts      BLOB NOT NULL,
    beyond      BLOB NOT NULL,
    sums        BLOB NOT NULL,
    sumsq       BLOB NOT NULL,
    n_points    INTEGER NOT NULL,
    cost        REAL NOT NULL,
    PRIMARY KEY (model_id, version, cohort)
) WITHOUT ROWID""",
       """CREATE TABLE canary_policies (
    model_id    INTEGER PRIMARY KEY REFERENCES models(model_id),
    min_points  INTEGER,
    tail_margin REAL,
    cost_margin REAL,
    z           REAL
)""")

#: MIGRATIONS[v] upgrades a database from version v to v + 1 (v = 0: empty file):
#: a script split on ";", or a tuple of statements (needed for triggers)
MIGRATIONS = {0: _V1, 1: _V2, 2: _V3, 3: _V4, 4: _V5}

DURABILITY = {"full": "FULL", "normal": "NORMAL"}

#: what a violated constraint raises, on either backend
INTEGRITY_ERRORS = (sqlite3.IntegrityError, StorageIntegrityError)


def connect(path, *, durability="full", busy_timeout=30.0):
    """Open a connection in autocommit mode with the aggregator's pragmas.

    Transactions are explicit (``BEGIN IMMEDIATE`` ... ``COMMIT``).  The
    connection may be used from any thread, but from one thread at a time.
    """
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                           timeout=busy_timeout)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {DURABILITY[durability]}")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA cache_size = -32768")      # 32 MiB of page cache
    return conn


def _begin_immediate(conn):
    conn.execute("BEGIN IMMEDIATE")


def migrate(conn, *, version=None, ddl=None, begin=_begin_immediate):
    """Bring the schema to :data:`SCHEMA_VERSION`, one transaction per step.

    ``version(conn)`` reads the schema version, ``ddl(statement)`` gives the statements of
    one migration statement in the backend's dialect and ``begin(conn)`` opens a write
    transaction: SQLite's by default (:mod:`edgekm.sync.cloud.postgres` passes its own).
    """
    version_of = _version if version is None else version
    ddl = (lambda statement: (statement,)) if ddl is None else ddl
    while True:
        begin(conn)
        try:
            version = version_of(conn)
            if version > SCHEMA_VERSION:
                raise SchemaError(
                    f"the database has schema version {version}; this edgekm reads up to "
                    f"{SCHEMA_VERSION}. Upgrade edgekm.")
            if version == SCHEMA_VERSION:
                conn.execute("COMMIT")
                return version
            steps = MIGRATIONS[version]
            for statement in steps.split(";") if isinstance(steps, str) else steps:
                if statement.strip():
                    for translated in ddl(statement):
                        conn.execute(translated)
            if version == 0:
                for translated in ddl("CREATE TABLE schema_version (version INTEGER NOT NULL)"):
                    conn.execute(translated)
                conn.execute("INSERT INTO schema_version VALUES (?)", (version + 1,))
            else:
                conn.execute("UPDATE schema_version SET version = ?", (version + 1,))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


def _version(conn):
    return schema_version(conn, {row[0] for row in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")})


class Checkpointer:
    """Checkpoints the WAL from a background thread, off the writer's path.

    The writer's connection runs with ``wal_autocheckpoint = 0``, so that no
    COMMIT pays for copying the WAL into the database.  Every ``interval``
    seconds this thread runs a PASSIVE checkpoint (which never blocks the
    writer); SQLite starts the WAL over at the next write once everything
    has been copied.  Should the WAL still grow past ``max_wal_pages``
    (a writer that never pauses), it runs a RESTART checkpoint, which makes
    the writer wait for that one checkpoint.
    """

    def __init__(self, path, interval, *, durability="full", max_wal_pages=16384):
        self.interval = float(interval)
        self.max_wal_pages = int(max_wal_pages)
        self._conn = connect(path, durability=durability, busy_timeout=5.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edgekm-checkpointer",
                                        daemon=True)
        self._thread.start()

    def _run(self):
        try:
            while not self._stop.wait(self.interval):
                try:
                    _, log, _ = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    if log > self.max_wal_pages:
                        self._conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
                except sqlite3.Error:
                    pass            # busy or failing: the next round tries again
        finally:
            self._conn.close()

    def stop(self):
        self._stop.set()
        self._thread.join()


#: the columns of a model row, as :func:`model_row` returns them
MODEL_COLUMNS = ("model_id", "n_features", "dtype", "window_seconds", "total_weight",
                 "n_frames", "seed", "n_reduces", "folded_through", "clipped_weight",
                 "max_device_weight", "weight_cap_policy", "compacted_through")


def model_row(conn, model):
    """The model's row as a dict of :data:`MODEL_COLUMNS`, or None."""
    row = conn.execute(f"SELECT {', '.join(MODEL_COLUMNS)} FROM models WHERE name = ?",
                       (model,)).fetchone()
    return None if row is None else dict(zip(MODEL_COLUMNS, row))


def require_model(conn, model):
    """:func:`model_row`, raising :class:`UnknownModelError` when there is none."""
    row = model_row(conn, model)
    if row is None:
        raise UnknownModelError(f"no model {model!r}.")
    return row


def in_ranges(conn, kind, key):
    """True when ``key`` (model_id, device_id, boot, seq) lies in a collapsed seq run."""
    mid, device_id, boot, seq = key
    hit = conn.execute("SELECT seq_hi FROM seq_ranges WHERE kind = ? AND model_id = ? AND "
                       "device_id = ? AND boot = ? AND seq_lo <= ? ORDER BY seq_lo DESC LIMIT 1",
                       (kind, mid, device_id, boot, seq)).fetchone()
    return hit is not None and hit[0] >= seq


class Database(Connections):
    """The aggregator's SQLite connections: one writer (serialised by ``lock``) and one
    read-only connection per reading thread (WAL readers never block the writer).

    Examples
    --------
    >>> import os, tempfile
    >>> db = Database(os.path.join(tempfile.mkdtemp(), "a.db"), checkpoint_interval=None)
    >>> db.transaction(lambda conn: conn.execute("SELECT count(*) FROM models").fetchone()[0])
    0
    >>> db.close()
    """

    def __init__(self, path, *, durability="full", checkpoint_interval=0.5):
        super().__init__(path, durability)
        self._checkpointer = None
        self.writer = connect(self.path, durability=durability)
        try:
            migrate(self.writer)
            if checkpoint_interval is not None:
                self.writer.execute("PRAGMA wal_autocheckpoint = 0")
                self._checkpointer = Checkpointer(self.path, checkpoint_interval,
                                                  durability=durability)
        except BaseException:
            self.writer.close()
            raise

    def close(self):
        """Close every connection (copying the WAL into the database first)."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            if self._checkpointer is not None:
                self._checkpointer.stop()
        self._close_readers()
        with self.lock:
            try:    # copy the WAL into the database and empty it
                self.writer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            except sqlite3.Error:
                pass
            self.writer.close()

    def _open_reader(self):
        conn = connect(self.path, durability=self.durability)
        conn.execute("PRAGMA query_only = ON")
        return conn

    @contextlib.contextmanager
    def snapshot(self):
        """This thread's read-only connection inside one read transaction, so that
        every query in the block sees the same state."""
        conn = self.reader()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def transaction(self, work):
        """Run ``work(conn)`` in one BEGIN IMMEDIATE ... COMMIT on the writer."""
        with self.lock:
            self.check_open()
            try:
                with transaction(self.writer, "IMMEDIATE") as conn:
                    result = work(conn)
            except BaseException:
                self._run_rollback_hooks()
                if self.writer.in_transaction:      # a failed COMMIT leaves it open
                    self.writer.execute("ROLLBACK")
                raise
            return result

    def check(self):
        """SQLite's quick_check: "ok" or the first problem found."""
        return self.reader().execute("PRAGMA quick_check").fetchone()[0]


def open_database(path, *, durability="full", checkpoint_interval=0.5):
    """The aggregator's store at ``path``: a SQLite file, or a ``postgresql://`` URL
    (:class:`~edgekm.sync.cloud.postgres.PgDatabase`, which takes no checkpointer)."""
    if is_postgres_url(path):
        return PgDatabase(path, durability=durability, migrate=migrate)
    return Database(path, durability=durability, checkpoint_interval=checkpoint_interval)
