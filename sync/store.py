"""The aggregator's SQLite store: schema, migrations and connection settings.

Only :mod:`edgekm.sync.aggregator` uses this module.  The database runs in WAL
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
  position) and the bucket's points and weights as little-endian bytes.
  ``window = -1`` is the all-time tree; it holds the windows up to
  ``models.folded_through``, and the all-time aggregate is its union with
  the trees of the later windows.
- ``windows``: per model and window, the exact weight and frame count.
- ``nonces``: (device, nonce, request timestamp), expired after twice the
  allowed clock skew.
"""

import sqlite3
import threading

SCHEMA_VERSION = 1
ALL_TIME = -1

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

#: MIGRATIONS[v] upgrades a database from version v to v + 1 (v = 0: empty file)
MIGRATIONS = {0: _V1}

DURABILITY = {"full": "FULL", "normal": "NORMAL"}


class SchemaError(RuntimeError):
    """The database was written by a newer edgekm, or is not an edgekm database."""


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


def migrate(conn):
    """Bring the schema to :data:`SCHEMA_VERSION`, one transaction per step."""
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = _version(conn)
            if version > SCHEMA_VERSION:
                raise SchemaError(
                    f"the database has schema version {version}; this edgekm reads up to "
                    f"{SCHEMA_VERSION}. Upgrade edgekm.")
            if version == SCHEMA_VERSION:
                conn.execute("COMMIT")
                return version
            for statement in MIGRATIONS[version].split(";"):
                if statement.strip():
                    conn.execute(statement)
            if version == 0:
                conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
                conn.execute("INSERT INTO schema_version VALUES (?)", (version + 1,))
            else:
                conn.execute("UPDATE schema_version SET version = ?", (version + 1,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def _version(conn):
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "schema_version" not in tables:
        if tables:
            raise SchemaError("the database is not an edgekm aggregator database "
                              f"(it has tables {sorted(tables)[:5]}).")
        return 0
    row = conn.execute("SELECT version FROM schema_version").fetchone()
    if row is None:
        raise SchemaError("the schema_version table is empty.")
    return int(row[0])


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
