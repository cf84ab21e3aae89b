"""Fixtures shared across the test rooms.  Plain helpers are in ``tests/helpers/``."""

import pytest

from helpers.fakes import FakeClock


@pytest.fixture
def clock():
    """A :class:`~helpers.fakes.FakeClock` at its default start (10**6 s)."""
    return FakeClock()
