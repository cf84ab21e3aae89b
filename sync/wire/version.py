"""Centroid versions on the wire (v1): what the aggregator publishes and devices pull.

A version is immutable. On the wire it is a msgpack map ``{"digest": hex,
"payload": bin}`` where ``payload`` is the msgpack-encoded version map and
``digest`` is the SHA-256 of ``payload``: a device checks the digest over the
exact bytes it received before decoding anything, and the digest doubles as
the HTTP ETag.  Device-side: numpy and msgpack only.  See ``sync/PROTOCOL.md``.
"""

import hashlib
from dataclasses import dataclass, field

import numpy as np

from edgekm._defaults import QUANTILES
from edgekm.exceptions import EdgekmError, VersionError

from ._codec import DTYPES, ID_PATTERN, MAX_FEATURES, Codec, is_int, pack_array

VERSION_SCHEMA = 1
KIND_CENTROIDS = "centroids"
MAX_VERSION_BYTES = 16 * 1024 * 1024
MAX_CLUSTERS = 4096

_FIELDS = {
    "v": int, "kind": str, "model": str, "version": int, "parent": (int, type(None)),
    "created": (float, int), "k": int, "d": int, "dtype": str, "centers": bytes,
    "cluster_weights": bytes, "quantiles": bytes, "training_weight": (float, int),
    "cost": (float, int), "shift": (float, int, type(None)), "windows": (int, type(None)),
    "new_clusters": list, "vanished_clusters": list,
}


@dataclass(frozen=True, eq=False)
class CentroidVersion:
    """One published set of centroids.

    Attributes
    ----------
    model : str
    version : int
        Monotonic per model, starting at 1.
    parent : int or None
        The version these labels were matched to (stable labels), if any.
    created : float
        Unix seconds (aggregator clock).
    centers : ndarray of shape (k, d), read-only
    cluster_weights : ndarray of shape (k,), float64
        Training weight assigned to each cluster.
    quantiles : ndarray of shape (k, 3), float64
        Per-cluster weighted p50/p95/p99 of the squared distance of the
        aggregate's points to their centre: the anomaly thresholds.
    training_weight, cost : float
        Weight of the aggregate it was fitted on, and its cost there.
    shift : float or None
        Largest Euclidean distance between matched centres (a centre and the
        parent's centre it was matched to; None without a parent).
    windows : int or None
        The number of time windows fitted on (None: all time).
    new_clusters, vanished_clusters : tuple of int
        Labels with no counterpart in the parent, and parent labels that lost
        their counterpart.
    digest : str
        SHA-256 (hex) of the encoded payload.
    """

    model: str
    version: int
    parent: object
    created: float
    centers: np.ndarray
    cluster_weights: np.ndarray
    quantiles: np.ndarray
    training_weight: float
    cost: float
    shift: object = None
    windows: object = None
    new_clusters: tuple = field(default_factory=tuple)
    vanished_clusters: tuple = field(default_factory=tuple)
    digest: str = ""

    @property
    def n_clusters(self):
        return self.centers.shape[0]

    @property
    def n_features(self):
        return self.centers.shape[1]


def _payload(v):
    centers = np.ascontiguousarray(v.centers)
    code = centers.dtype.newbyteorder("<").str
    if code not in DTYPES:
        raise VersionError(f"centers must be float32 or float64; got {centers.dtype}.")
    k, d = centers.shape
    return {
        "v": VERSION_SCHEMA, "kind": KIND_CENTROIDS, "model": v.model, "version": int(v.version),
        "parent": None if v.parent is None else int(v.parent), "created": float(v.created),
        "k": int(k), "d": int(d), "dtype": code,
        "centers": pack_array(centers, code),
        "cluster_weights": pack_array(v.cluster_weights, "<f8"),
        "quantiles": pack_array(v.quantiles, "<f8"),
        "training_weight": float(v.training_weight), "cost": float(v.cost),
        "shift": None if v.shift is None else float(v.shift),
        "windows": None if v.windows is None else int(v.windows),
        "new_clusters": [int(c) for c in v.new_clusters],
        "vanished_clusters": [int(c) for c in v.vanished_clusters],
    }


def encode_version(v):
    """Encode a :class:`CentroidVersion`; returns ``(body bytes, digest hex)``."""
    payload = _CODEC.pack(_payload(v))
    digest = hashlib.sha256(payload).hexdigest()
    body = _CODEC.pack({"digest": digest, "payload": payload})
    decode_version(body)            # one validator for both ends
    return body, digest


class _VersionCodec(Codec):
    """The centroid version's codec (the document and the payload inside it)."""

    error = VersionError
    fields = _FIELDS
    max_bytes = MAX_VERSION_BYTES
    unpack_limits = {"max_str_len": 1024, "max_array_len": MAX_CLUSTERS}

    def __init__(self, what="version payload"):
        self.what = what

    def type_message(self, data):
        return f"{self.what} must be bytes; got {type(data).__name__}."

    def size_message(self, n_bytes, max_bytes):
        return f"{self.what} of {n_bytes} bytes exceeds {max_bytes}."

    def msgpack_message(self, exc):
        return f"{self.what} is not valid msgpack ({type(exc).__name__})."

    def keys_message(self, body):
        keys = sorted(map(repr, body)) if isinstance(body, dict) else type(body).__name__
        return f"version payload keys must be {sorted(_FIELDS)}; got {keys}."

    def array_size_message(self, key, n_bytes, dtype, shape, need):
        return f"'{key}' has {n_bytes} bytes; expected {need}."


_CODEC = _VersionCodec()
_DOCUMENT = _VersionCodec("version document")


def decode_version(data, *, expected_digest=None, max_bytes=MAX_VERSION_BYTES):
    """Check the digest, then decode and validate; returns a :class:`CentroidVersion`.

    ``expected_digest`` (e.g. the ETag) must match too when given.  Raises
    :class:`VersionError`.
    """
    outer = _DOCUMENT.unpack(data, max_bytes)
    if not (isinstance(outer, dict) and set(outer) == {"digest", "payload"}
            and isinstance(outer["digest"], str) and isinstance(outer["payload"], bytes)):
        raise VersionError("a version document is a map {'digest': str, 'payload': bin}.")
    payload, digest = outer["payload"], outer["digest"]
    actual = hashlib.sha256(payload).hexdigest()
    if actual != digest:
        raise VersionError("digest mismatch: the payload does not hash to the stated digest.")
    if expected_digest is not None and expected_digest != digest:
        raise VersionError("digest mismatch: the document is not the one expected.")
    b = _CODEC.check_fields(_CODEC.unpack(payload, max_bytes))
    if b["v"] != VERSION_SCHEMA or b["kind"] != KIND_CENTROIDS:
        raise VersionError(f"unknown version schema {b['v']!r}/{b['kind']!r:.20}.")
    if not ID_PATTERN.match(b["model"]):
        raise VersionError("bad model id.")
    k, d = b["k"], b["d"]
    if not (1 <= k <= MAX_CLUSTERS and 1 <= d <= MAX_FEATURES and b["version"] >= 1):
        raise VersionError(f"k={k}, d={d} or version={b['version']} out of range.")
    if b["parent"] is not None and not (1 <= b["parent"] < b["version"]):
        raise VersionError("the parent must be an earlier version.")
    dtype = DTYPES.get(b["dtype"])
    if dtype is None:
        raise VersionError(f"dtype must be one of {sorted(DTYPES)}.")
    centers = _CODEC.unpack_array(b["centers"], "centers", dtype, (k, d))
    weights = _CODEC.unpack_array(b["cluster_weights"], "cluster_weights", "<f8", (k,))
    quantiles = _CODEC.unpack_array(b["quantiles"], "quantiles", "<f8", (k, 3))
    if not (np.isfinite(centers).all() and np.isfinite(weights).all() and (weights >= 0).all()
            and np.isfinite(quantiles).all() and (quantiles >= 0).all()
            and (np.diff(quantiles, axis=1) >= 0).all()):
        raise VersionError("centres, weights and quantiles must be finite, weights and "
                           "quantiles >= 0, and quantiles non-decreasing (p50 <= p95 <= p99).")
    for key in ("new_clusters", "vanished_clusters"):
        if not all(is_int(c) and 0 <= c < max(k, 4096)
                   for c in b[key]):
            raise VersionError(f"'{key}' must list cluster labels.")
    for arr in (centers, weights, quantiles):
        arr.setflags(write=False)
    return CentroidVersion(
        model=b["model"], version=b["version"], parent=b["parent"], created=float(b["created"]),
        centers=centers, cluster_weights=weights, quantiles=quantiles,
        training_weight=float(b["training_weight"]), cost=float(b["cost"]),
        shift=None if b["shift"] is None else float(b["shift"]), windows=b["windows"],
        new_clusters=tuple(b["new_clusters"]), vanished_clusters=tuple(b["vanished_clusters"]),
        digest=digest)
