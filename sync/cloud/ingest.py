"""Ingest: authenticate signed uploads, deduplicate them and merge frames into the trees.

**Accepting a frame** is one SQLite transaction (``BEGIN IMMEDIATE`` ...
``COMMIT``) that ends before :meth:`Ingest.accept` returns: the frame is
validated, deduplicated on ``(model, device, boot, seq)`` by the sha256 of its
body, checked against the weight cap, merged into the model's coreset trees,
and recorded.  :meth:`Ingest.accept_signed` does the same, plus
authentication, for a batch of requests in one transaction (group commit;
each request has its own savepoint, so one rejection never undoes another).
Telemetry summaries and pulls go through it too.
"""

import hashlib
import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from edgekm.coreset import Coreset
from edgekm.exceptions import (ConflictError, DeviceWeightCapError, DimensionError, EdgekmError,
                               ForbiddenError, FrameOverCapError, FrameTooLargeError,
                               UnknownModelError)

from edgekm.sync.wire import auth
from edgekm.sync.wire.auth import AuthError
from edgekm.sync.wire.frame import FrameError, decode_frame, seqsum
from edgekm.sync.wire.telemetry import TelemetryError

from .._sqlite import to_sql_u64
from .database import ALL_TIME, INTEGRITY_ERRORS, in_ranges, model_row
from .telemetry import check_sender
from .trees import SeedCounter

__all__ = ["Ingest", "Upload", "Pull"]


@dataclass(frozen=True)
class Upload:
    """One signed frame upload, as :meth:`Aggregator.accept_signed` takes it.

    ``headers`` maps the lower-case header names of :mod:`edgekm.sync.wire.auth`
    to their values; ``path`` is the request path exactly as signed.
    """

    model: str
    method: str
    path: str
    body: bytes
    headers: Mapping[str, str]


@dataclass(frozen=True)
class Pull:
    """A signed pull of centroids (``GET .../centroids?device=ID``), for :meth:`Aggregator.accept_signed`.

    ``path`` is the path as signed, query string included; ``device`` the
    ``device`` query parameter (None: the signing device).
    """

    model: str
    path: str
    headers: Mapping[str, str]
    device: object = None


@dataclass(frozen=True)
class Prepared:
    """An :class:`Upload` with its body decoded, and the body's sha256.

    ``kind`` is "frame" (``decoded``: (Frame, digest) or the FrameError),
    "telemetry" ((TelemetrySummary, digest) or the TelemetryError) or "pull"
    (``decoded``: the requested device id or None).
    """

    upload: Upload
    decoded: object
    kind: str = "frame"


class Ingest:
    """The write path of devices: frames, telemetry summaries and pulls.

    Examples
    --------
    >>> import os, tempfile
    >>> from edgekm.sync import Aggregator
    >>> agg = Aggregator(os.path.join(tempfile.mkdtemp(), "a.db"))
    >>> agg.ingest.prepare(Pull("m", "/v1/models/m/centroids", {})).kind
    'pull'
    >>> agg.close()
    """

    def __init__(self, db, registry, trees, telemetry, rollout, *, clock, coreset_size,
                 window_seconds, auto_create_models, retain_windows, max_frame_bytes,
                 max_points, max_features, max_skew):
        self.db = db
        self.registry = registry
        self.trees = trees
        self.telemetry = telemetry
        self.rollout = rollout
        self.clock = clock
        self.coreset_size = coreset_size
        self.window_seconds = window_seconds
        self.auto_create_models = auto_create_models
        self.retain_windows = retain_windows
        self.max_frame_bytes = max_frame_bytes
        self.max_points = max_points
        self.max_features = max_features
        self.max_skew = max_skew
        self._next_nonce_purge = 0.0

    def authenticate(self, method, path, body, headers):
        """:meth:`Aggregator.authenticate <edgekm.sync.cloud.aggregator.Aggregator.authenticate>`."""
        now = float(self.clock())
        return self.db.transaction(lambda conn: self._authenticate(conn, method, path, body,
                                                                 headers, now))

    def _authenticate(self, conn, method, path, body, headers, now):
        device_id = headers.get(auth.H_DEVICE) if hasattr(headers, "get") else None
        if not isinstance(device_id, str) or not device_id:
            raise AuthError(f"missing header {auth.H_DEVICE}")
        row = conn.execute("SELECT key_hex, revoked FROM devices WHERE device_id = ?",
                           (device_id,)).fetchone()
        if row is None:
            raise AuthError("unknown device")
        key_hex, revoked = row
        _, timestamp, nonce = auth.verify(key_hex, method, path, body, headers, now=now,
                                          max_skew=self.max_skew)
        # Only a correctly signed request learns that its device is revoked.
        if revoked is not None:
            raise ForbiddenError(f"device {device_id!r} is revoked")
        if now >= self._next_nonce_purge:
            conn.execute("DELETE FROM nonces WHERE timestamp < ?", (now - 2 * self.max_skew,))
            self._next_nonce_purge = now + 10.0
        try:
            conn.execute("INSERT INTO nonces (device_id, nonce, timestamp) VALUES (?, ?, ?)",
                         (device_id, nonce, timestamp))
        except INTEGRITY_ERRORS:
            raise AuthError("nonce already used") from None
        return device_id

    def decode(self, body):
        if isinstance(body, (bytes, bytearray, memoryview)) and len(body) > self.max_frame_bytes:
            raise FrameTooLargeError(f"frame of {len(body)} bytes exceeds max_frame_bytes="
                                     f"{self.max_frame_bytes}.")
        return decode_frame(body, max_frame_bytes=self.max_frame_bytes,
                            max_points=self.max_points, max_features=self.max_features)

    def accept(self, model, device_id, body):
        """:meth:`Aggregator.accept <edgekm.sync.cloud.aggregator.Aggregator.accept>`."""
        frame = self.decode(body)
        digest = hashlib.sha256(body).digest()
        now = float(self.clock())

        def work(conn):
            row = conn.execute("SELECT revoked FROM devices WHERE device_id = ?",
                               (device_id,)).fetchone()
            if row is None:
                raise ForbiddenError(f"unknown device {device_id!r}")
            if row[0] is not None:
                raise ForbiddenError(f"device {device_id!r} is revoked")
            return self._accept(conn, model, device_id, frame, digest, now)
        return self.db.transaction(work)

    def accept_signed(self, uploads):
        """:meth:`Aggregator.accept_signed <edgekm.sync.cloud.aggregator.Aggregator.accept_signed>`."""
        # CPU work that needs no database runs before the write lock is taken.
        uploads = [up if isinstance(up, Prepared) else self.prepare(up) for up in uploads]
        prepared = [(up.kind, up.decoded) for up in uploads]
        uploads = [up.upload for up in uploads]
        now = float(self.clock())

        def work(conn):
            results = []
            for up, item in zip(uploads, prepared):
                results.append(self._accept_one_signed(conn, up, item, now))
            return results
        try:
            return self.db.transaction(work)
        except EdgekmError:
            raise
        except Exception:
            if len(uploads) == 1:
                raise
        # An unexpected failure (a bug or a database error) aborted the whole
        # batch: retry each upload alone, so that only the culprit fails.
        results = []
        for up, item in zip(uploads, prepared):
            try:
                results.append(self.db.transaction(
                    lambda conn, up=up, item=item: self._accept_one_signed(conn, up, item, now)))
            except Exception as exc:
                results.append(exc)
        return results

    def prepare(self, upload):
        """:meth:`Aggregator.prepare <edgekm.sync.cloud.aggregator.Aggregator.prepare>`."""
        if isinstance(upload, Pull):
            return Prepared(Upload(upload.model, "GET", upload.path, b"", upload.headers),
                            upload.device, "pull")
        if upload.path.split("?", 1)[0].endswith("/telemetry"):
            try:
                decoded = (self.telemetry.decode(upload.body),
                           hashlib.sha256(upload.body).digest())
            except (TelemetryError, FrameTooLargeError) as exc:
                decoded = exc
            return Prepared(upload, decoded, "telemetry")
        try:
            decoded = (self.decode(upload.body), hashlib.sha256(upload.body).digest())
        except FrameError as exc:
            decoded = exc
        return Prepared(upload, decoded)

    def _accept_one_signed(self, conn, up, item, now):
        kind, item = item
        conn.execute("SAVEPOINT upload")
        try:
            device_id = self._authenticate(conn, up.method, up.path, up.body, up.headers, now)
        except EdgekmError as exc:
            conn.execute("ROLLBACK TO upload")
            conn.execute("RELEASE upload")
            return exc
        conn.execute("RELEASE upload")
        if isinstance(item, (FrameError, TelemetryError)):
            return item
        conn.execute("SAVEPOINT upload")
        try:
            if kind == "pull":
                if item is not None and item != device_id:
                    raise ForbiddenError(f"device {device_id!r} may not pull for {item!r:.80}")
                version, flags = self.rollout.resolve(conn, up.model, device_id, now)
                result = {"version": version, "flags": flags}
            elif kind == "telemetry":
                summary, digest = item
                result = self.telemetry.accept_decoded(conn, up.model, device_id, summary, digest, now)
            else:
                frame, digest = item
                result = self._accept(conn, up.model, device_id, frame, digest, now)
        except EdgekmError as exc:
            self.trees.cached.clear()
            conn.execute("ROLLBACK TO upload")
            conn.execute("RELEASE upload")
            return exc
        except BaseException:
            self.trees.cached.clear()
            conn.execute("ROLLBACK TO upload")
            conn.execute("RELEASE upload")
            raise
        conn.execute("RELEASE upload")
        return result

    def _accept(self, conn, model, device_id, frame, digest, now):
        """Inside a transaction: check, deduplicate, merge and record one decoded frame."""
        check_sender("frame", frame, model, device_id)
        row = model_row(conn, model)
        if row is None:
            if not self.auto_create_models:
                raise UnknownModelError(f"no model {model!r} (auto-creation is off)")
            row = self.registry.create_model(conn, model, frame.n_features,
                                     frame.points.dtype.newbyteorder("<").str,
                                     self.window_seconds)
        if frame.n_features != row["n_features"]:
            raise DimensionError(f"the frame has {frame.n_features} features; model {model!r} "
                                 f"has {row['n_features']}")
        mid = row["model_id"]
        key = (mid, device_id, to_sql_u64(frame.boot), frame.seq)
        frame_id = [model, device_id, frame.boot, frame.seq]
        seen = conn.execute("SELECT digest, weight, clipped FROM frames WHERE model_id = ? AND "
                            "device_id = ? AND boot = ? AND seq = ?", key).fetchone()
        if seen is not None:
            if bytes(seen[0]) != digest:
                raise ConflictError(f"frame {frame_id} was accepted before with a different "
                                    "body")
            result = {"status": "duplicate", "frame_id": frame_id, "weight": seen[1],
                      "total_weight": row["total_weight"]}
            if seen[2] > 0:
                result["clipped_weight"] = seen[2]
            return result
        if in_ranges(conn, "frame", key):
            # collapsed by compaction: accepted once, body digest no longer kept
            return {"status": "duplicate", "frame_id": frame_id, "weight": None,
                    "total_weight": row["total_weight"], "collapsed": True}

        window = max(0, math.floor(now / row["window_seconds"]))
        weight = frame.total_weight
        weights, spread = frame.weights, frame.spread
        clipped = 0.0
        cap, policy = self.registry.cap(row)
        if cap is not None:
            used = conn.execute("SELECT weight FROM device_windows WHERE model_id = ? AND "
                                "device_id = ? AND window = ?",
                                (mid, device_id, window)).fetchone()
            used = 0.0 if used is None else used[0]
            if used + weight > cap:
                if policy == "reject":
                    if weight > cap:
                        raise FrameOverCapError(
                            f"frame {frame_id} has weight {weight!r}, over the cap of {cap!r} "
                            "per device and window")
                    end = (window + 1) * row["window_seconds"]
                    raise DeviceWeightCapError(
                        f"device {device_id!r} has merged {used!r} of its cap of {cap!r} in "
                        f"this window; frame {frame_id} (weight {weight!r}) fits after it ends",
                        retry_after=max(1, math.ceil(end - now)))
                room = max(0.0, cap - used)
                weights = frame.weights * (room / weight)
                spread = frame.spread * (room / weight)     # a weighted sum: scales alike
                if room <= 0 or not (weights > 0).all():
                    weights = None          # nothing left to merge
                    merged = 0.0
                else:
                    merged = seqsum(weights)
                clipped = weight - merged
                weight = merged
        next_seed = SeedCounter(row)

        trees = self.trees.of(row)
        folded = row["folded_through"]
        if weights is not None:
            dtype = np.dtype(row["dtype"])
            points = frame.points.astype(dtype.newbyteorder("="), copy=False)
            bucket = Coreset(points, weights, level=frame.level, spread=spread)
            if len(bucket) > self.coreset_size:
                bucket = bucket.merge(size=self.coreset_size, random_state=next_seed())
            if folded is not None and window <= folded:
                # the clock stepped back into a folded window: it goes to both trees
                trees.push(conn, ALL_TIME, bucket, 0, next_seed)
            elif folded is None or folded < window - 1:
                self.trees.fold(conn, trees, mid, folded, window, next_seed)
                folded = window - 1
            trees.push(conn, window, bucket, 0, next_seed)

        conn.execute("INSERT INTO frames (model_id, device_id, boot, seq, digest, weight, "
                     "n_points, span_first, span_last, level, created, received, window, "
                     "clipped) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     key + (digest, weight, len(frame.weights), frame.span[0], frame.span[1],
                            frame.level, frame.created, now, window, clipped))
        conn.execute("INSERT INTO device_windows VALUES (?, ?, ?, ?, 1, ?) ON CONFLICT "
                     "(model_id, device_id, window) DO UPDATE SET weight = device_windows.weight + ?, "
                     "n_frames = device_windows.n_frames + 1, "
                     "clipped = device_windows.clipped + ?",
                     (mid, device_id, window, weight, clipped, weight, clipped))
        total = row["total_weight"] + weight
        conn.execute("UPDATE models SET total_weight = ?, n_frames = n_frames + 1, "
                     "n_reduces = ?, folded_through = ?, clipped_weight = clipped_weight + ? "
                     "WHERE model_id = ?",
                     (total, next_seed.count, folded, clipped, mid))
        trees.stamp = (row["n_frames"] + 1, next_seed.count)
        updated = conn.execute("UPDATE windows SET total_weight = total_weight + ?, "
                               "n_frames = n_frames + 1, last_received = ? "
                               "WHERE model_id = ? AND window = ?", (weight, now, mid, window))
        if updated.rowcount == 0:
            conn.execute("INSERT INTO windows VALUES (?, ?, ?, 1, ?, ?)",
                         (mid, window, weight, now, now))
            if self.retain_windows is not None:
                self.trees.expire(conn, mid, window - self.retain_windows + 1)
        result = {"status": "accepted", "frame_id": frame_id, "weight": weight,
                  "total_weight": total}
        if clipped > 0:
            result["clipped_weight"] = clipped
        return result

