"""Wire format v1: coreset frames as msgpack maps (see ``sync/PROTOCOL.md``).

Device side and aggregator side share this module; it needs only numpy and
msgpack.  :func:`decode_frame` treats its input as hostile: it checks the
size before decoding, bounds every msgpack length, and validates the schema
(known keys only, matching shapes, finite values, weights > 0, a total that
matches the weights, a checksum).  Every failure raises :class:`FrameError`.
"""

import re
import zlib
from dataclasses import dataclass

import msgpack
import numpy as np

from edgekm.exceptions import EdgekmError, FrameError

SCHEMA_VERSION = 1
KIND_CORESET = "coreset"

#: limits on untrusted input (one naming pattern; each is tested at the limit and limit + 1)
MAX_FRAME_BYTES = 8 * 1024 * 1024
MAX_POINTS = 65536
MAX_FEATURES = 4096
MAX_LEVEL = 1024
MAX_ID_CHARS = 64
MAX_TOTAL_WEIGHT = 2.0 ** 53          # weights stay exact integers in float64 below this

ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
DTYPES = {"<f4": np.dtype("<f4"), "<f8": np.dtype("<f8")}
WEIGHT_DTYPE = np.dtype("<f8")

#: every key of a v1 coreset frame, with its msgpack type
FIELDS = {
    "v": int, "kind": str, "model": str, "device": str, "boot": int, "seq": int,
    "span": list, "n": int, "d": int, "dtype": str, "points": bytes, "weights": bytes,
    "total": float, "level": int, "created": float, "crc32": int,
}


@dataclass(frozen=True)
class Frame:
    """A decoded, validated coreset frame.

    ``points`` (n, d) and ``weights`` (n,) are read-only arrays in native byte order.
    ``frame_id`` is the deduplication key ``(model, device, boot, seq)``.
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


def _show(value):
    """A short, safe description of an untrusted value (never repr of a container:
    a deeply nested one would overflow the stack)."""
    if isinstance(value, (bool, int, float)) or value is None:
        return repr(value)[:40]
    if isinstance(value, (str, bytes)):
        return repr(value[:40])
    return f"a {type(value).__name__}"


def check_id(value, what):
    """Model and device ids: 1-64 characters of [A-Za-z0-9._-], not starting with . _ -"""
    if not isinstance(value, str) or not ID_PATTERN.match(value):
        raise FrameError(
            f"{what} must be 1-{MAX_ID_CHARS} characters of A-Z a-z 0-9 . _ - and start "
            f"with a letter or digit; got {_show(value)}.")
    return value


def encode_frame(*, model, device, boot, seq, span, points, weights, level, created):
    """Encode one coreset frame; returns the msgpack body (bytes).

    ``points`` (n, d) float32/float64 and ``weights`` (n,) are validated with the
    same rules as :func:`decode_frame`, so a device never produces a frame the
    aggregator would reject.
    """
    points = np.asarray(points)
    dtype = points.dtype.newbyteorder("<")
    code = dtype.str
    if code not in DTYPES:
        raise FrameError(f"points must be float32 or float64; got {points.dtype}.")
    p = np.ascontiguousarray(points, dtype=dtype)
    w = np.ascontiguousarray(weights, dtype=WEIGHT_DTYPE)
    pb, wb = p.tobytes(), w.tobytes()
    body = {
        "v": SCHEMA_VERSION,
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
    data = msgpack.packb(body, use_bin_type=True)
    decode_frame(data)          # one validator for both ends
    return data


def _unpack(data, max_frame_bytes):
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise FrameError(f"a frame must be bytes; got {type(data).__name__}.")
    if isinstance(data, memoryview):
        if data.nbytes > max_frame_bytes:
            raise FrameError(
                f"frame of {data.nbytes} bytes exceeds max_frame_bytes={max_frame_bytes}.")
        data = data.tobytes()     # a view of wider items counts items, not bytes
    if len(data) > max_frame_bytes:
        raise FrameError(f"frame of {len(data)} bytes exceeds max_frame_bytes={max_frame_bytes}.")
    if len(data) == 0:
        raise FrameError("empty frame.")
    try:
        return msgpack.unpackb(
            data, raw=False, strict_map_key=True, use_list=True,
            max_str_len=256, max_bin_len=max_frame_bytes, max_array_len=16,
            max_map_len=len(FIELDS), max_ext_len=0)
    except msgpack.ExtraData:
        raise FrameError("trailing bytes after the frame.") from None
    except msgpack.StackError:
        raise FrameError("not a valid frame: msgpack nesting is too deep.") from None
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as exc:
        raise FrameError(f"not a valid msgpack frame: {type(exc).__name__}: {exc}"[:300]) from None


def _int(body, key, lo, hi):
    value = body[key]
    if not (isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi):
        raise FrameError(f"'{key}' must be an int in [{lo}, {hi}]; got {_show(value)}.")
    return value


def decode_frame(data, *, max_frame_bytes=MAX_FRAME_BYTES, max_points=MAX_POINTS,
                 max_features=MAX_FEATURES):
    """Decode and validate a v1 coreset frame; raises :class:`FrameError`."""
    body = _unpack(data, max_frame_bytes)
    if not isinstance(body, dict):
        raise FrameError(f"a frame must be a msgpack map; got {type(body).__name__}.")
    if "v" in body and body["v"] != SCHEMA_VERSION:
        raise FrameError(
            f"unknown schema version {_show(body['v'])}; this side speaks v{SCHEMA_VERSION}.")
    # strict_map_key admits str and bytes keys; a bytes key is an unknown key
    unknown = sorted((k for k in body if not (isinstance(k, str) and k in FIELDS)), key=repr)
    if unknown:
        raise FrameError(f"unknown keys [{', '.join(_show(k) for k in unknown[:5])}].")
    missing = [k for k in FIELDS if k not in body]
    if missing:
        raise FrameError(f"missing keys {missing!r}.")
    for key, typ in FIELDS.items():
        value = body[key]
        ok = isinstance(value, typ) and not isinstance(value, bool)
        if typ is float:
            ok = isinstance(value, (float, int)) and not isinstance(value, bool)
        if not ok:
            raise FrameError(f"'{key}' must be {typ.__name__}; got {type(value).__name__}.")
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
    if not (len(span) == 2 and all(isinstance(s, int) and not isinstance(s, bool) for s in span)
            and 0 <= span[0] <= span[1] < 2**63):
        raise FrameError(
            f"'span' must be [first, last] with 0 <= first <= last; got {_show(span)}.")
    dtype = DTYPES.get(body["dtype"])
    if dtype is None:
        raise FrameError(f"'dtype' must be one of {sorted(DTYPES)}; got {_show(body['dtype'])}.")
    pb, wb = body["points"], body["weights"]
    if len(pb) != n * d * dtype.itemsize:
        raise FrameError(
            f"'points' has {len(pb)} bytes; shape ({n}, {d}) of {body['dtype']} needs "
            f"{n * d * dtype.itemsize}.")
    if len(wb) != n * WEIGHT_DTYPE.itemsize:
        raise FrameError(f"'weights' has {len(wb)} bytes; {n} float64 weights need {n * 8}.")
    if zlib.crc32(wb, zlib.crc32(pb)) != crc:
        raise FrameError("payload checksum (crc32) does not match the points and weights.")
    points = np.frombuffer(pb, dtype=dtype).reshape(n, d).astype(dtype.newbyteorder("="))
    weights = np.frombuffer(wb, dtype=WEIGHT_DTYPE).astype(np.float64)
    if not np.isfinite(points).all():
        row = int(np.flatnonzero(~np.isfinite(points).all(axis=1))[0])
        raise FrameError(f"'points' contains NaN or infinity (first bad row {row}).")
    bad = ~(np.isfinite(weights) & (weights > 0))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise FrameError(f"weights must be finite and > 0; row {row} has {float(weights[row])!r}.")
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
    return Frame(model=model, device=device, boot=boot, seq=seq, span=(span[0], span[1]),
                 points=points, weights=weights, total_weight=actual, level=level,
                 created=created)
