"""A throw-away PostgreSQL server in a temporary folder, for the tests and the harnesses.

:class:`PostgresServer` runs ``initdb`` and ``pg_ctl`` (on PATH on the CI machines) on a
Unix socket only, with ``fsync=off`` (a test server); as root it runs them as the
``postgres`` user, since ``initdb`` refuses root.  :func:`why_not` says why no server can
start here.
"""

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile


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


class PostgresServer:
    """One PostgreSQL server in a temporary folder; :meth:`new_database` gives each test its
    own database (a URL)."""

    def __init__(self, port=55432, *, fsync=False):
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
        self._options = (f"-k {self.socket} -p {self.port} -c listen_addresses='' "
                         f"-c fsync={'on' if fsync else 'off'} -c max_connections=200")
        self._run(["initdb", "-D", self.data, "-A", "trust", "-U", "edgekm", "--no-sync"])
        self.start()

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
                   "-o", self._options, "start"])

    def close(self):
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _quote(arg):
    return "'" + arg.replace("'", "'\\''") + "'"


