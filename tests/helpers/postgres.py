"""The tests' PostgreSQL (:mod:`tools._pg`), and a connection to either backend."""

import sqlite3

from edgekm.exceptions import StorageIntegrityError
from tools._pg import PostgresServer as Server, why_not

__all__ = ["REFUSED", "Server", "why_not", "connect"]

#: what a write refused by a constraint or trigger raises, on either backend
REFUSED = (sqlite3.DatabaseError, StorageIntegrityError)


def connect(url):
    """A connection to an aggregator's store, either backend, with ``?`` placeholders
    (for tests that look at the rows)."""
    from edgekm.sync.cloud.postgres import PgConnection, is_postgres_url

    return PgConnection(url) if is_postgres_url(url) else sqlite3.connect(url)
