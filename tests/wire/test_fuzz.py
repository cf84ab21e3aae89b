"""Hostile bytes: the frame, telemetry and version decoders raise only their documented error.

Hypothesis half of the fuzzing (CI installs no atheris): random bytes,
mutations of the seed corpus, and structured maps with the checksum or the
digest made right (``tools.fuzz_frame.fix_up``).  Every file of
``tests/fuzz_corpus/`` (seeds, and crashers that ``tools/fuzz_frame.py``
writes) is replayed under a memory cap.  Anything but ``FrameError``,
``TelemetryError`` or ``VersionError`` propagates and fails the test.
"""

import glob
import os
import tracemalloc
import zlib

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tools.fuzz_frame import CORPUS, TARGETS, decoders, fix_up

DECODERS = decoders()
#: most bytes one decode may allocate (Python and NumPy allocations, tracemalloc)
MEMORY_CAP = 64 * 1024 * 1024


def _read(path):
    with open(path, "rb") as fh:
        return fh.read()


SEEDS = {t: [_read(p) for p in sorted(glob.glob(os.path.join(CORPUS, t, "*")))]
         for t in TARGETS}
FAST = settings(max_examples=700, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])


def decode(target, data):
    """Decode ``data`` as it is and fixed up; the documented error is the only one caught."""
    decode_fn, documented = DECODERS[target]
    results = []
    for candidate in (data, fix_up(target, data)):
        if candidate is None:
            continue
        try:
            results.append(decode_fn(candidate))
        except documented as exc:
            assert str(exc)                    # an error says why
            results.append(None)
    return results


def test_seed_corpus_is_there_and_valid():
    for target in TARGETS:
        assert SEEDS[target], target
    # every golden frame is a seed, and the seeds decode (they are valid inputs)
    golden = glob.glob(os.path.join(os.path.dirname(CORPUS), "golden", "*.msgpack"))
    assert len(SEEDS["frame"]) == len(golden)
    for target in TARGETS:
        for data in SEEDS[target]:
            assert decode(target, data)[0] is not None or target == "version"


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(CORPUS, "**", "*"),
                                                  recursive=True)))
def test_corpus_replay_under_a_memory_cap(path):
    if os.path.isdir(path):
        return
    with open(path, "rb") as fh:
        data = fh.read()
    tracemalloc.start()
    try:
        for target in TARGETS:                 # a crasher of one decoder is fed to all three
            decode(target, data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_CAP, (path, peak)


@pytest.mark.parametrize("target", TARGETS)
@FAST
@given(data=st.binary(max_size=512))
def test_random_bytes(target, data):
    decode(target, data)


@st.composite
def mutated(draw, target):
    data = bytearray(draw(st.sampled_from(SEEDS[target])))
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["flip", "set", "cut", "insert", "delete"]))
        i = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[i] = draw(st.sampled_from([0x00, 0x7f, 0x80, 0xc0, 0xc1, 0xcf, 0xd3, 0xdc,
                                            0xde, 0xdf, 0xff, draw(st.integers(0, 255))]))
        elif op == "cut":
            del data[i:]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=9))
        elif op == "delete":
            del data[i:i + draw(st.integers(1, 16))]
    return bytes(data)


@pytest.mark.parametrize("target", TARGETS)
@FAST
@given(st.data())
def test_mutated_seeds(target, data):
    decode(target, data.draw(mutated(target)))


_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1),
                     st.floats(), st.text(max_size=70), st.binary(max_size=64))
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                       max_leaves=8)


@pytest.mark.parametrize("target", TARGETS)
@FAST
@given(st.data())
def test_structured_maps(target, data):
    """A valid seed with some fields replaced by any msgpack value, or removed."""
    seed = data.draw(st.sampled_from(SEEDS[target]))
    body = msgpack.unpackb(seed, raw=False)
    if target == "version" and set(body) == {"digest", "payload"}:
        body = msgpack.unpackb(body["payload"], raw=False)
    for key in data.draw(st.lists(st.sampled_from(sorted(body)), min_size=1, max_size=4)):
        if data.draw(st.booleans()):
            body[key] = data.draw(_values)
        else:
            body.pop(key, None)
    if data.draw(st.booleans()):
        body[data.draw(st.text(max_size=8))] = data.draw(_values)
    if target == "frame" and isinstance(body.get("points"), bytes) and \
            isinstance(body.get("weights"), bytes):
        body["crc32"] = zlib.crc32(body["weights"], zlib.crc32(body["points"]))
    decode(target, msgpack.packb(body, use_bin_type=True))


def test_a_non_documented_error_fails_loudly(monkeypatch):
    """The harness does not swallow other exceptions (no bare except)."""
    def broken(data):
        raise KeyError("a bug")
    monkeypatch.setitem(DECODERS, "frame", (broken, DECODERS["frame"][1]))
    with pytest.raises(KeyError):
        decode("frame", b"\x80")
