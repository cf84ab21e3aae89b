"""Wire format v2 (and v1): coreset frames as msgpack maps (see ``sync/PROTOCOL.md``).

v2 adds one key to v1, ``spread``: per point, the weighted sum of squared distances of the
data it stands for to the point (its leaf's within-group cost), so that the aggregator
keeps what each coreset point summarises, not only where and how heavy it is.  Decoders
accept both versions (a v1 frame has spread 0 everywhere); :func:`encode_frame` writes v2
when it is given a spread and v1 otherwise.

Device side and aggregator side share this module; it needs only numpy and
msgpack.  :func:`decode_frame` treats its input as hostile: it checks the
size before decoding, bounds every msgpack length, and validates the schema
(known keys only, matching shapes, finite values, weights > 0, a total that
matches the weights, a checksum).  Every failure raises :class:`FrameError`.
"""

import zlib
from dataclasses import dataclass

import msgpack
import numpy as np

from edgekm.exceptions import EdgekmError, FrameError

from ._codec import (DTYPES, ID_PATTERN, MAX_FEATURES, MAX_ID_CHARS, Codec, accepts, is_int,
                     pack_array)
from ._codec import check_id as _check_id
from ._codec import show as _show

SCHEMA_VERSION = 2
#: every frame version a decoder accepts
SCHEMA_VERSIONS = (1, 2)
KIND_CORESET = "coreset"

#: limits on untrusted input (one naming pattern; each is tested at the limit and limit + 1)
MAX_FRAME_BYTES = 8 * 1024 * 1024
MAX_POINTS = 65536
MAX_LEVEL = 1024
MAX_TOTAL_WEIGHT = 2.0 ** 53          # weights stay exact integers in float64 below this
#: entries a frame's map may have when unpacked: more than any version's keys, so that a
#: later version's frame is refused for its ``v`` and an extra key as an unknown key, not
#: for the map's length (PROTOCOL.md §2.7, §4)
MAX_MAP_ENTRIES = 32

WEIGHT_DTYPE = np.dtype("<f8")

#: every key of a v1 coreset frame, with its msgpack type
FIELDS_V1 = {
    "v": int, "kind": str, "model": str, "device": str, "boot": int, "seq": int,
    "span": list, "n": int, "d": int, "dtype": str, "points": bytes, "weights": bytes,
    "total": float, "level": int, "created": float, "crc32": int,
}
#: every key of a v2 coreset frame: v1's, with ``spread`` after ``weights``
FIELDS = {}
for _key, _typ in FIELDS_V1.items():
    FIELDS[_key] = _typ
    if _key == "weights":
        FIELDS["spread"] = bytes
FIELDS_BY_VERSION = {1: FIELDS_V1, 2: FIELDS}


@dataclass(frozen=True)
class Frame:
    """A decoded, validated coreset frame.

    ``points`` (n, d), ``weights`` (n,) and ``spread`` (n,) are read-only arrays in native
    byte order; ``spread`` is zeros for a v1 frame.  ``frame_id`` is the deduplication key
    ``(model, device, boot, seq)``; ``version`` is the frame's schema version.
    """

    model: str
    device: str
    boot: int
    seq: int
    span: tuple
    points: np.ndarray
    weights: np.ndarray
    total_weight: float
    level: int
    created: float
    spread: np.ndarray = None
    version: int = SCHEMA_VERSION

    @property
    def frame_id(self):
        return (self.model, self.device, self.boot, self.seq)

    @property
    def n_features(self):
        return self.points.shape[1]


def seqsum(weights):
    """Sequential float64 sum (the total both ends compute); inf if it overflows."""
    if not len(weights):
        return 0.0
    with np.errstate(over="ignore", invalid="ignore"):
        return float(np.cumsum(weights, dtype=np.float64)[-1])


def check_id(value, what):
    """Model and device ids: 1-64 characters of [A-Za-z0-9._-], not starting with . _ -"""
    return _check_id(value, what, FrameError)


class _FrameCodec(Codec):
    """The coreset frame's codec: its limits and its wording (see :mod:`._codec`)."""

    error = FrameError
    fields = FIELDS
    max_bytes = MAX_FRAME_BYTES
    accepts = (bytes, bytearray, memoryview)

    def type_message(self, data):
        return f"a frame must be bytes; got {type(data).__name__}."

    def size_message(self, n_bytes, max_bytes):
        return f"frame of {n_bytes} bytes exceeds max_frame_bytes={max_bytes}."

    def empty_message(self):
        return "empty frame."

    def msgpack_message(self, exc):
        if isinstance(exc, msgpack.ExtraData):
            return "trailing bytes after the frame."
        if isinstance(exc, msgpack.StackError):
            return "not a valid frame: msgpack nesting is too deep."
        return f"not a valid msgpack frame: {type(exc).__name__}: {exc}"[:300]

    def check_keys(self, body):
        if not isinstance(body, dict):
            raise FrameError(f"a frame must be a msgpack map; got {type(body).__name__}.")
        if "v" in body and body["v"] not in SCHEMA_VERSIONS:
            raise FrameError(
                f"unknown schema version {_show(body['v'])}; this side speaks "
                f"{' and '.join(f'v{v}' for v in SCHEMA_VERSIONS)}.")
        # without a valid v, the table the keys present point to
        fields = FIELDS_BY_VERSION.get(body.get("v"), FIELDS if "spread" in body else FIELDS_V1)
        # strict_map_key admits str and bytes keys; a bytes key is an unknown key
        unknown = sorted((k for k in body if not (isinstance(k, str) and k in fields)), key=repr)
        if unknown:
            raise FrameError(f"unknown keys [{', '.join(_show(k) for k in unknown[:5])}].")
        missing = [k for k in fields if k not in body]
        if missing:
            raise FrameError(f"missing keys {missing!r}.")

    def check_types(self, body):
        for key, typ in FIELDS_BY_VERSION[body["v"]].items():
            if not accepts(body[key], typ):
                raise FrameError(self.field_type_message(key, typ, body[key]))

    def field_type_message(self, key, typ, value):
        return f"'{key}' must be {typ.__name__}; got {type(value).__name__}."

    def array_size_message(self, key, n_bytes, dtype, shape, need):
        if key == "weights":
            return f"'weights' has {n_bytes} bytes; {shape[0]} float64 weights need {need}."
        if key == "spread":
            return f"'spread' has {n_bytes} bytes; {shape[0]} float64 values need {need}."
        return (f"'points' has {n_bytes} bytes; shape {shape} of {dtype.str} needs {need}.")


_CODEC = _FrameCodec()


def encode_frame(*, model, device, boot, seq, span, points, weights, level, created,
                 spread=None):
    """Encode one coreset frame; returns the msgpack body (bytes).

    ``points`` (n, d) float32/float64, ``weights`` (n,) and ``spread`` (n,) are
    validated with the same rules as :func:`decode_frame`, so a device never
    produces a frame the aggregator would reject.  With ``spread`` the frame is v2;
    without it, v1 (the bytes a v1 encoder wrote).
    """
    points = np.asarray(points)
    dtype = points.dtype.newbyteorder("<")
    code = dtype.str
    if code not in DTYPES:
        raise FrameError(f"points must be float32 or float64; got {points.dtype}.")
    p = np.ascontiguousarray(points, dtype=dtype)
    w = np.ascontiguousarray(weights, dtype=WEIGHT_DTYPE)
    pb, wb = pack_array(p, code), pack_array(w, WEIGHT_DTYPE)
    body = {
        "v": 1 if spread is None else 2,
        "kind": KIND_CORESET,
        "model": model,
        "device": device,
        "boot": int(boot),
        "seq": int(seq),
        "span": [int(span[0]), int(span[1])],
        "n": int(p.shape[0]) if p.ndim == 2 else -1,
        "d": int(p.shape[1]) if p.ndim == 2 else -1,
        "dtype": code,
        "points": pb,
        "weights": wb,
        "total": seqsum(w),
        "level": int(level),
        "created": float(created),
        "crc32": zlib.crc32(wb, zlib.crc32(pb)),
    }
    if spread is not None:
        sb = pack_array(spread, WEIGHT_DTYPE)
        body = {key: body[key] if key != "spread" else sb for key in FIELDS}
        body["crc32"] = zlib.crc32(sb, zlib.crc32(wb, zlib.crc32(pb)))
    data = _CODEC.pack(body)
    decode_frame(data)          # one validator for both ends
    return data


def _unpack(data, max_frame_bytes):
    return _CODEC.unpack(data, max_frame_bytes, map_len=MAX_MAP_ENTRIES)


def _int(body, key, lo, hi):
    value = body[key]
    if not (is_int(value) and lo <= value <= hi):
        raise FrameError(f"'{key}' must be an int in [{lo}, {hi}]; got {_show(value)}.")
    return value


def decode_frame(data, *, max_frame_bytes=MAX_FRAME_BYTES, max_points=MAX_POINTS,
                 max_features=MAX_FEATURES):
    """Decode and validate a v1 or v2 coreset frame; raises :class:`FrameError`."""
    body = _CODEC.check_fields(_unpack(data, max_frame_bytes))
    if body["kind"] != KIND_CORESET:
        raise FrameError(f"unknown frame kind {_show(body['kind'])}.")
    model = check_id(body["model"], "model")
    device = check_id(body["device"], "device")
    boot = _int(body, "boot", 0, 2**64 - 1)
    seq = _int(body, "seq", 0, 2**63 - 1)
    n = _int(body, "n", 1, max_points)
    d = _int(body, "d", 1, max_features)
    level = _int(body, "level", 0, MAX_LEVEL)
    crc = _int(body, "crc32", 0, 2**32 - 1)
    span = body["span"]
    if not (len(span) == 2 and all(is_int(s) for s in span)
            and 0 <= span[0] <= span[1] < 2**63):
        raise FrameError(
            f"'span' must be [first, last] with 0 <= first <= last; got {_show(span)}.")
    dtype = DTYPES.get(body["dtype"])
    if dtype is None:
        raise FrameError(f"'dtype' must be one of {sorted(DTYPES)}; got {_show(body['dtype'])}.")
    pb, wb = body["points"], body["weights"]
    points = _CODEC.unpack_array(pb, "points", dtype, (n, d))
    weights = _CODEC.unpack_array(wb, "weights", WEIGHT_DTYPE, (n,))
    version = body["v"]
    if version == 1:
        spread = np.zeros(n)
        if zlib.crc32(wb, zlib.crc32(pb)) != crc:
            raise FrameError("payload checksum (crc32) does not match the points and weights.")
    else:
        sb = body["spread"]
        spread = _CODEC.unpack_array(sb, "spread", WEIGHT_DTYPE, (n,))
        if zlib.crc32(sb, zlib.crc32(wb, zlib.crc32(pb))) != crc:
            raise FrameError(
                "payload checksum (crc32) does not match the points, weights and spread.")
    if not np.isfinite(points).all():
        row = int(np.flatnonzero(~np.isfinite(points).all(axis=1))[0])
        raise FrameError(f"'points' contains NaN or infinity (first bad row {row}).")
    bad = ~(np.isfinite(weights) & (weights > 0))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise FrameError(f"weights must be finite and > 0; row {row} has {float(weights[row])!r}.")
    bad = ~(np.isfinite(spread) & (spread >= 0))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise FrameError(f"spread must be finite and >= 0; row {row} has {float(spread[row])!r}.")
    total = float(body["total"])
    actual = seqsum(weights)
    if not (np.isfinite(total) and 0 < total <= MAX_TOTAL_WEIGHT):
        raise FrameError(f"'total' must be finite, > 0 and <= 2**53; got {total!r}.")
    if abs(actual - total) > 1e-9 * max(total, 1.0):
        raise FrameError(f"'total' is {total!r} but the weights sum to {actual!r}.")
    created = float(body["created"])
    if not (np.isfinite(created) and 0 <= created < 2.0**40):
        raise FrameError(f"'created' must be a Unix time in seconds; got {created!r}.")
    points.setflags(write=False)
    weights.setflags(write=False)
    spread.setflags(write=False)
    return Frame(model=model, device=device, boot=boot, seq=seq, span=(span[0], span[1]),
                 points=points, weights=weights, total_weight=actual, level=level,
                 created=created, spread=spread, version=version)
