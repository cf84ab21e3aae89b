"""Plain helpers shared by the tests (pytest fixtures live in ``tests/conftest.py``).

``tests/`` is on the import path through the ``pythonpath`` setting in pyproject.toml,
so a test imports these as ``from helpers.fakes import FakeClock``.
"""

from pathlib import Path

#: The repository root, and the data folders the tests read.
ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"
PROTOCOL = ROOT / "sync" / "PROTOCOL.md"
