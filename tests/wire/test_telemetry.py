"""Telemetry summaries on the wire: the golden v1 and v2 bodies, and beyond_p99's checks."""

import hashlib
import json
from pathlib import Path

import msgpack
import numpy as np
import pytest

from edgekm.exceptions import TelemetryError
from edgekm.sync.wire.telemetry import TELEMETRY_SCHEMA, decode_telemetry, encode_telemetry

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "telemetry"
EXPECTED = json.loads((GOLDEN / "expected.json").read_text())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_golden_summaries_decode(name):
    data = (GOLDEN / name).read_bytes()
    want = EXPECTED[name]
    assert len(data) == want["body_bytes"]
    assert hashlib.sha256(data).hexdigest() == want["body_sha256"]
    s = decode_telemetry(data)
    assert s.counts.tolist() == want["counts"] and s.n_points == want["n_points"]
    assert s.drift_score == want["drift_score"]
    if want["beyond_p99"] is None:
        assert s.beyond_p99 is None
    else:
        assert s.beyond_p99.tolist() == want["beyond_p99"]


@pytest.mark.parametrize("v", [1, 2])
def test_golden_summaries_re_encode_to_their_bytes(v):
    data = (GOLDEN / f"summary_v{v}.msgpack").read_bytes()
    again = encode_telemetry(decode_telemetry(data))
    assert msgpack.unpackb(again)["v"] == v
    assert again == data


def test_the_encoder_writes_v2_when_the_summary_has_beyond_p99():
    s = decode_telemetry((GOLDEN / "summary_v2.msgpack").read_bytes())
    assert s.beyond_p99 is not None and TELEMETRY_SCHEMA == 2
    assert msgpack.unpackb(encode_telemetry(s))["v"] == TELEMETRY_SCHEMA


def _body(**changes):
    b = msgpack.unpackb((GOLDEN / "summary_v2.msgpack").read_bytes())
    b.update(changes)
    return msgpack.packb({k: v for k, v in b.items() if v is not None}, use_bin_type=True)


@pytest.mark.parametrize("changes, match", [
    ({"beyond_p99": None}, "exactly the keys"),                       # v2 without the key
    ({"v": 1}, "exactly the keys"),                                   # v1 with it
    ({"v": 3}, "exactly the keys|unknown telemetry schema"),
    ({"beyond_p99": np.zeros(2).tobytes()}, "beyond_p99"),            # wrong length
    ({"beyond_p99": np.array([41.0, 0, 0]).tobytes()}, "at most each cluster"),
    ({"beyond_p99": np.array([-1.0, 0, 0]).tobytes()}, "beyond_p99 must be"),
    ({"beyond_p99": np.array([np.nan, 0, 0]).tobytes()}, "NaN"),
])
def test_bad_beyond_p99(changes, match):
    with pytest.raises(TelemetryError, match=match):
        decode_telemetry(_body(**changes))


def test_beyond_p99_at_the_count_passes():
    s = decode_telemetry(_body(beyond_p99=np.array([40.0, 50.0, 10.0]).tobytes()))
    assert s.beyond_p99.tolist() == [40.0, 50.0, 10.0]
