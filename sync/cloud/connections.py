"""What both backends of the aggregator's store share: the per-thread read connections,
the writer's lock and the rollback hooks, and reading the schema version.

:class:`~edgekm.sync.cloud.database.Database` (SQLite) and
:class:`~edgekm.sync.cloud.postgres.PgDatabase` (PostgreSQL) are the two
:class:`Connections`; the services see only their common interface: ``transaction``,
``snapshot``, ``reader``, ``check``, ``close``, ``lock`` and ``on_rollback``.
"""

import contextlib
import threading
import zlib

from edgekm.exceptions import SchemaError, UnavailableError


class Connections:
    """The bookkeeping of one writer (serialised by ``lock``) and one read connection per
    reading thread; a backend gives ``_open_reader()`` and may refuse a stale connection
    in ``_usable(conn)``.

    ``on_rollback`` holds callables run whenever a write transaction fails (the services
    drop their in-memory mirrors there).

    Examples
    --------
    >>> store = Connections("unused", "full")
    >>> with store.exclusive("publish_policies") as mine:
    ...     with store.exclusive("publish_policies") as again:
    ...         mine, again
    (True, False)
    """

    def __init__(self, path, durability):
        self.path = str(path)
        self.durability = durability
        self.lock = threading.RLock()           # serialises the write connection
        self.on_rollback = []
        self._local = threading.local()         # one read connection per thread
        self._readers = []
        self._readers_lock = threading.Lock()
        self.closed = False
        self._leases = {}
        self._leases_lock = threading.Lock()

    @contextlib.contextmanager
    def exclusive(self, name):
        """Yields True to the one holder of the lease ``name`` (a periodic job that must run
        once, not once per replica), False at once to anyone else meanwhile.  Here the lease
        is this process's; PostgreSQL's is the whole cluster's."""
        with self._leases_lock:
            lease = self._leases.setdefault(name, threading.Lock())
        mine = lease.acquire(blocking=False)
        try:
            yield mine
        finally:
            if mine:
                lease.release()

    def _usable(self, conn):
        return True

    def check_open(self):
        if self.closed:
            raise UnavailableError("the aggregator is closed.")

    def reader(self):
        """This thread's read-only connection."""
        self.check_open()
        conn = getattr(self._local, "conn", None)
        if conn is None or not self._usable(conn):
            conn = self._open_reader()
            with self._readers_lock:
                if self.closed:
                    conn.close()
                    raise UnavailableError("the aggregator is closed.")
                self._readers.append(conn)
            self._local.conn = conn
        return conn

    def _close_readers(self):
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()

    def _run_rollback_hooks(self):
        for hook in self.on_rollback:
            hook()


def lease_key(name):
    """The 64-bit advisory lock key of a lease name."""
    return 0x6564_6b6d_0000_0000 | zlib.crc32(name.encode())


def schema_version(conn, tables):
    """The schema version of a store whose tables are ``tables`` (0: an empty store)."""
    if "schema_version" not in tables:
        if tables:
            raise SchemaError("the database is not an edgekm aggregator database "
                              f"(it has tables {sorted(tables)[:5]}).")
        return 0
    row = conn.execute("SELECT version FROM schema_version").fetchone()
    if row is None:
        raise SchemaError("the schema_version table is empty.")
    return int(row[0])
