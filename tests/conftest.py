"""Fixtures shared across the test rooms.  Plain helpers are in ``tests/helpers/``."""

import pytest

from helpers import postgres
from helpers.fakes import FakeClock


@pytest.fixture
def clock():
    """A :class:`~helpers.fakes.FakeClock` at its default start (10**6 s)."""
    return FakeClock()


@pytest.fixture(scope="session")
def postgres_server():
    """One PostgreSQL server for the session (skips, with the reason, where none can run)."""
    reason = postgres.why_not()
    if reason is not None:
        pytest.skip(f"no PostgreSQL: {reason}")
    server = postgres.Server()
    yield server
    server.close()


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request):
    """The aggregator's store, once per backend."""
    return request.param


@pytest.fixture
def new_db(backend, tmp_path, request):
    """A factory of fresh, empty stores of ``backend``: a SQLite path or a PostgreSQL URL."""
    if backend == "postgres":
        server = request.getfixturevalue("postgres_server")
        return lambda name="agg": server.new_database()
    return lambda name="agg": str(tmp_path / f"{name}.db")


@pytest.fixture
def sqlite_only(backend):
    """Skips the test on PostgreSQL (it checks something only SQLite has)."""
    if backend != "sqlite":
        pytest.skip("checks SQLite's file, pragmas or migrations from SQLite files")
