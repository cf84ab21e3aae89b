"""SQLite helpers that the device's outbox and the aggregator's database share.

Standard library only, so the device may import it.  SQLite integers are signed 64-bit,
while boot ids are unsigned 64-bit: :func:`to_sql_u64` and :func:`from_sql_u64` map between
the two (two's complement), and :func:`transaction` is the one ``BEGIN ... COMMIT`` (or
``ROLLBACK`` on any exception) both sides use.
"""

from contextlib import contextmanager

__all__ = ["to_sql_u64", "from_sql_u64", "transaction"]


def to_sql_u64(value):
    """A uint64 as the int64 SQLite stores (two's complement)."""
    return value - (1 << 64) if value >= (1 << 63) else value


def from_sql_u64(value):
    """The uint64 that :func:`to_sql_u64` stored."""
    return value + (1 << 64) if value < 0 else value


@contextmanager
def transaction(conn, mode="IMMEDIATE"):
    """``BEGIN mode`` ... ``COMMIT`` on ``conn``; ``ROLLBACK`` and re-raise on any exception."""
    conn.execute(f"BEGIN {mode}")
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
