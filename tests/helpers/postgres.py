"""A throw-away PostgreSQL server for the tests, and a connection to either backend.

:class:`Server` runs ``initdb`` and ``pg_ctl`` (on PATH on the CI machines) in a temporary
folder, on a Unix socket only; as root it runs them as the ``postgres`` user, since
``initdb`` refuses root.  :func:`why_not` says why no server can start here (the tests
that need one skip with that reason).
"""

import itertools
import os
import pwd
import shutil
import sqlite3
import subprocess
import tempfile

from edgekm.exceptions import StorageIntegrityError

#: what a write refused by a constraint or trigger raises, on either backend
REFUSED = (sqlite3.DatabaseError, StorageIntegrityError)


def why_not():
    """None when a server can be started here, else the reason it cannot."""
    for tool in ("initdb", "pg_ctl"):
        if shutil.which(tool) is None:
            return f"PostgreSQL's {tool} is not on PATH"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'edgekm[postgres]')"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no postgres user for initdb"
    return None


class Server:
    """One PostgreSQL server in a temporary folder; :meth:`new_database` gives each test its
    own database (a URL)."""

    def __init__(self, port=55432):
        self.root = tempfile.mkdtemp(prefix="edgekm-pg-")
        os.chmod(self.root, 0o755)
        self.data = os.path.join(self.root, "data")
        self.socket = self.root
        self.port = port
        self.user = None
        if os.geteuid() == 0:
            self.user = "postgres"
            os.chown(self.root, pwd.getpwnam("postgres").pw_uid, -1)
        self._names = itertools.count()
        self._run(["initdb", "-D", self.data, "-A", "trust", "-U", "edgekm", "--no-sync"])
        self._run(["pg_ctl", "-D", self.data, "-w", "-l", os.path.join(self.root, "log"),
                   "-o", f"-k {self.socket} -p {self.port} -c listen_addresses='' "
                         "-c fsync=off -c max_connections=200", "start"])

    def _run(self, argv):
        if self.user is not None:
            argv = ["su", self.user, "-s", "/bin/sh", "-c", " ".join(_quote(a) for a in argv)]
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def url(self, dbname="postgres"):
        return f"postgresql://edgekm@/{dbname}?host={self.socket}&port={self.port}"

    def new_database(self, prefix="t"):
        import psycopg

        name = f"{prefix}_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self, mode="fast"):
        self._run(["pg_ctl", "-D", self.data, "-w", "-m", mode, "stop"])

    def start(self):
        self._run(["pg_ctl", "-D", self.data, "-w", "-l", os.path.join(self.root, "log"),
                   "-o", f"-k {self.socket} -p {self.port} -c listen_addresses='' "
                         "-c fsync=off -c max_connections=200", "start"])

    def close(self):
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _quote(arg):
    return "'" + arg.replace("'", "'\\''") + "'"


def connect(url):
    """A connection to an aggregator's store, either backend, with ``?`` placeholders
    (for tests that look at the rows)."""
    from edgekm.sync.cloud.postgres import PgConnection, is_postgres_url

    return PgConnection(url) if is_postgres_url(url) else sqlite3.connect(url)
