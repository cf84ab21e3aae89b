"""Devices and models: registration, revocation, weight caps and the per-model queries."""

import hashlib
import math
import numbers
import secrets

import numpy as np

from edgekm._validation import Interval, Options, validate_params
from edgekm.exceptions import DeviceExistsError, UnknownDeviceError, UnknownModelError

from edgekm.sync.wire import auth
from edgekm.sync.wire.frame import DTYPES, check_id

from .database import COMPACTED, INTEGRITY_ERRORS, model_row, require_model

__all__ = ["Registry", "WEIGHT_CAP_POLICIES", "check_positive_int", "check_cap"]

#: what the aggregator does with a frame that would take its device over the weight cap
WEIGHT_CAP_POLICIES = ("reject", "clip")


_POSITIVE_INT = Interval(numbers.Integral, 1, None)


def check_positive_int(name, value):
    """``value`` as an int >= 1 (ValueError otherwise)."""
    return validate_params({name: value}, {name: _POSITIVE_INT})[name]


def check_cap(value):
    """A device weight cap: None or a finite number > 0, as a float."""
    validate_params({"max_device_weight": value})
    return None if value is None else float(value)


class Registry:
    """The devices and models tables (see :class:`~edgekm.sync.cloud.aggregator.Aggregator`
    for each method's contract).

    Examples
    --------
    >>> import os, tempfile
    >>> from edgekm.sync.cloud.database import Database
    >>> db = Database(os.path.join(tempfile.mkdtemp(), "a.db"), checkpoint_interval=None)
    >>> reg = Registry(db, clock=lambda: 0.0, max_features=64, window_seconds=3600.0)
    >>> reg.add_model("m", 3)
    >>> reg.model_info("m")["n_features"]
    3
    >>> db.close()
    """

    def __init__(self, db, *, clock, max_features, window_seconds, random_state=None,
                 max_device_weight=None, weight_cap_policy="reject"):
        self.db = db
        self.clock = clock
        self.max_features = max_features
        self.window_seconds = window_seconds
        self.random_state = random_state
        self.max_device_weight = max_device_weight
        self.weight_cap_policy = weight_cap_policy

    # ------------------------------------------------------------ devices
    def add_device(self, device_id):
        check_id(device_id, "device_id")
        key = auth.new_key()

        def work(conn):
            try:
                conn.execute("INSERT INTO devices (device_id, key_hex, created) VALUES (?, ?, ?)",
                             (device_id, key, float(self.clock())))
            except INTEGRITY_ERRORS:
                raise DeviceExistsError(f"device {device_id!r} already exists.") from None
        self.db.transaction(work)
        return key

    def rotate_device_key(self, device_id):
        key = auth.new_key()

        def work(conn):
            row = conn.execute("SELECT revoked FROM devices WHERE device_id = ?",
                               (device_id,)).fetchone()
            if row is None:
                raise UnknownDeviceError(f"no device {device_id!r}.")
            if row[0] is not None:
                raise DeviceExistsError(f"device {device_id!r} is revoked; a revoked id "
                                        "keeps no key (register the device under a new id).")
            conn.execute("UPDATE devices SET key_hex = ? WHERE device_id = ?", (key, device_id))
        self.db.transaction(work)
        return key

    def revoke_device(self, device_id):
        def work(conn):
            row = conn.execute("SELECT revoked FROM devices WHERE device_id = ?",
                               (device_id,)).fetchone()
            if row is None:
                raise UnknownDeviceError(f"no device {device_id!r}.")
            if row[0] is None:
                conn.execute("UPDATE devices SET revoked = ? WHERE device_id = ?",
                             (float(self.clock()), device_id))
        self.db.transaction(work)

    def list_devices(self):
        rows = self.db.reader().execute(
            "SELECT d.device_id, d.created, d.revoked, "
            "(SELECT count(*) FROM frames f WHERE f.device_id = d.device_id) + "
            "(SELECT coalesce(sum(n_items), 0) FROM seq_ranges r WHERE r.kind = 'frame' "
            "AND r.device_id = d.device_id), "
            "(SELECT max(received) FROM frames f WHERE f.device_id = d.device_id) "
            "FROM devices d ORDER BY d.device_id").fetchall()
        return [{"device_id": r[0], "created": r[1], "revoked": r[2], "frames": r[3],
                 "last_received": r[4]} for r in rows]

    # ------------------------------------------------------------ models
    def add_model(self, model, n_features, *, dtype="float32", window_seconds=None,
                  max_device_weight=None, weight_cap_policy=None):
        cap = check_cap(max_device_weight)
        validate_params({"weight_cap_policy": weight_cap_policy},
                        {"weight_cap_policy": [None, Options(WEIGHT_CAP_POLICIES)]})
        check_id(model, "model")
        n_features = check_positive_int("n_features", n_features)
        if n_features > self.max_features:
            raise ValueError(f"n_features={n_features} exceeds max_features={self.max_features}.")
        code = np.dtype(dtype).newbyteorder("<").str
        if code not in DTYPES:
            raise ValueError(f"dtype must be float32 or float64; got {dtype!r}.")
        seconds = self.window_seconds if window_seconds is None else float(window_seconds)
        if not (math.isfinite(seconds) and seconds > 0):
            raise ValueError(f"window_seconds must be a number > 0; got {window_seconds!r}.")

        def work(conn):
            row = model_row(conn, model)
            if row is not None:
                if row["n_features"] != n_features:
                    raise ValueError(f"model {model!r} exists with n_features="
                                     f"{row['n_features']}, not {n_features}.")
            else:
                row = self.create_model(conn, model, n_features, code, seconds)
            if cap is not None or weight_cap_policy is not None:
                conn.execute("UPDATE models SET max_device_weight = ?, weight_cap_policy = ? "
                             "WHERE model_id = ?", (cap, weight_cap_policy, row["model_id"]))
        self.db.transaction(work)

    def create_model(self, conn, model, n_features, code, window_seconds):
        """Inside a transaction: insert a model row (with its seed) and return it."""
        if self.random_state is None:
            seed = secrets.randbits(63)
        else:
            digest = hashlib.sha256(f"edgekm-model:{self.random_state}:{model}".encode()).digest()
            seed = int.from_bytes(digest[:8], "little") >> 1
        conn.execute("INSERT INTO models (name, n_features, dtype, window_seconds, created, seed) "
                     "VALUES (?, ?, ?, ?, ?, ?)",
                     (model, n_features, code, window_seconds, float(self.clock()), seed))
        return model_row(conn, model)

    def cap(self, row):
        """The (cap, policy) of a model row: its own, else the aggregator's."""
        cap = row["max_device_weight"]
        if cap is None:
            cap = self.max_device_weight
        return cap, row["weight_cap_policy"] or self.weight_cap_policy

    def list_models(self):
        names = [r[0] for r in self.db.reader().execute("SELECT name FROM models ORDER BY name")]
        return [self.model_info(name, with_windows=False) for name in names]

    def model_info(self, model, *, with_windows=True):
        with self.db.snapshot() as conn:          # one snapshot for every query below
            row = require_model(conn, model)
            mid = row["model_id"]
            devices = conn.execute("SELECT count(DISTINCT device_id) FROM frames "
                                   "WHERE model_id = ?", (mid,)).fetchone()[0]
            buckets = conn.execute("SELECT count(*) FROM buckets WHERE model_id = ?",
                                   (mid,)).fetchone()[0]
            cap, policy = self.cap(row)
            compacted = conn.execute("SELECT total_weight, n_frames FROM windows WHERE "
                                     "model_id = ? AND window = ?", (mid, COMPACTED)).fetchone()
            info = {"model": model, "n_features": row["n_features"],
                    "dtype": np.dtype(row["dtype"]).name,
                    "window_seconds": row["window_seconds"],
                    "total_weight": row["total_weight"], "frames": row["n_frames"],
                    "devices": devices, "buckets": buckets,
                    "weight_cap": {"max_device_weight": cap, "policy": policy,
                                   "clipped_weight": row["clipped_weight"]},
                    "compacted": {"through": row["compacted_through"],
                                  "total_weight": compacted[0] if compacted else 0.0,
                                  "frames": compacted[1] if compacted else 0}}
            if with_windows:
                ws = row["window_seconds"]
                info["windows"] = [
                    {"window": w, "start": w * ws, "end": (w + 1) * ws, "total_weight": tw,
                     "frames": nf}
                    for w, tw, nf in conn.execute(
                        "SELECT window, total_weight, n_frames FROM windows WHERE model_id = ? "
                        "AND window >= 0 ORDER BY window", (mid,))]
        return info

    # ------------------------------------------------------------ queries
    def total_weight(self, model):
        row = self.db.reader().execute("SELECT total_weight FROM models WHERE name = ?",
                                       (model,)).fetchone()
        if row is None:
            raise UnknownModelError(f"no model {model!r}.")
        return float(row[0])

    def current_window(self, model):
        row = require_model(self.db.reader(), model)
        return math.floor(float(self.clock()) / row["window_seconds"])

    def frame_count(self, model=None):
        conn = self.db.reader()
        if model is None:
            return conn.execute("SELECT coalesce(sum(n_frames), 0) FROM models").fetchone()[0]
        return require_model(conn, model)["n_frames"]

    def bucket_count(self, model, window=None):
        conn = self.db.reader()
        mid = require_model(conn, model)["model_id"]
        if window is None:
            return conn.execute("SELECT count(*) FROM buckets WHERE model_id = ?",
                                (mid,)).fetchone()[0]
        return conn.execute("SELECT count(*) FROM buckets WHERE model_id = ? AND window = ?",
                            (mid, window)).fetchone()[0]
