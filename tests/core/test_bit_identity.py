"""The compiled core gives the same bytes on every architecture.

``tests/golden/bit_identity.json`` holds SHA-256 digests of the compiled core's outputs on a
fixed workload (``tools/bit_identity.py``), computed on x86_64.  Here they are recomputed on
the CPU that runs the tests: ``tools/aarch64.sh`` runs this file on aarch64 under qemu.
"""

import json
import platform

import pytest

from edgekm import _backend
from tools.bit_identity import GOLDEN, compute


@pytest.mark.skipif(_backend.NAME != "cython", reason="the compiled core is not in use")
def test_compiled_outputs_match_the_x86_64_digests():
    expected = json.loads(GOLDEN.read_text())
    got = compute()
    mismatched = sorted(key for key in expected if got.get(key) != expected[key])
    assert not mismatched, f"{platform.machine()}: {mismatched}"
    assert got.keys() == expected.keys()
