"""The rollout of centroid versions: canary, promote, abort, rollback, pins and pulls.

Every change is one SQLite transaction on the aggregator's single writer
connection, and so is every pull (authenticate, resolve, record what was
served): a pull never sees half a rollback.  Every change is written to
``version_events``.
"""

from edgekm._validation import validate_params
from edgekm.exceptions import RolloutError, UnknownDeviceError

from edgekm.sync.wire.frame import check_id

from .database import require_model
from .versions import (check_actor, check_version_id, in_cohort, push_active, record_event,
                       rollout_row, set_rollout, set_status, status_of)

__all__ = ["Rollout", "abort_in", "promote_in"]


def _check_percent(percent):
    validate_params({"percent": percent})
    return float(percent)


def promote_in(conn, mid, version, now, actor, **detail):
    """Inside a transaction: make ``version`` active (the previous active retired, the
    canary cleared); ``detail`` goes into the promotion's event."""
    status = status_of(conn, mid, version)
    if status == "active":
        raise RolloutError(f"version {version} is already active.")
    active, canary, _ = rollout_row(conn, mid)
    if active is not None:
        set_status(conn, mid, active, "retired", now, actor, "promote", replaced_by=version)
    if canary is not None and canary != version:
        set_status(conn, mid, canary, "candidate", now, actor, "promote", canary_cleared=True)
    set_status(conn, mid, version, "active", now, actor, "promote", previous=active, **detail)
    push_active(conn, mid, version, now)
    set_rollout(conn, mid, version, None, 0.0, now)
    conn.execute("DELETE FROM canary_gates WHERE model_id = ?", (mid,))
    return {"active": version, "retired": active}


def abort_in(conn, mid, now, actor, **detail):
    """Inside a transaction: withdraw the canary (back to candidate; the active stays);
    ``detail`` goes into the abort's event."""
    active, canary, percent = rollout_row(conn, mid)
    set_status(conn, mid, canary, "candidate", now, actor, "abort", percent=percent, **detail)
    set_rollout(conn, mid, active, None, 0.0, now)
    conn.execute("DELETE FROM canary_gates WHERE model_id = ?", (mid,))
    return {"aborted": canary, "active": active}


class Rollout:
    """Which version each device is served (see the module docstring).

    Examples
    --------
    >>> import os, tempfile
    >>> from edgekm.sync import Aggregator
    >>> agg = Aggregator(os.path.join(tempfile.mkdtemp(), "a.db"))
    >>> agg.add_model("m", 2)
    >>> agg.rollout.rollout_state("m")["active"] is None
    True
    >>> agg.close()
    """

    def __init__(self, db, versions, *, clock):
        self.db = db
        self.versions = versions
        self.clock = clock

    def rollout_state(self, model):
        """:meth:`Aggregator.rollout_state <edgekm.sync.cloud.aggregator.Aggregator.rollout_state>`."""
        with self.db.snapshot() as conn:
            mid = require_model(conn, model)["model_id"]
            active, canary, percent = rollout_row(conn, mid)
            history = [r[0] for r in conn.execute(
                "SELECT version FROM active_history WHERE model_id = ? ORDER BY position",
                (mid,))]
            pins = dict(conn.execute("SELECT device_id, version FROM pins WHERE model_id = ? "
                                     "ORDER BY device_id", (mid,)).fetchall())
        return {"active": active, "canary": canary,
                "canary_percent": percent if canary is not None else 0.0,
                "history": history, "pins": pins}

    def canary(self, model, version, percent, *, actor="api", auto_abort=False,
               auto_promote_after=None):
        """:meth:`Aggregator.canary <edgekm.sync.cloud.aggregator.Aggregator.canary>`."""
        version = check_version_id(version)
        percent = _check_percent(percent)
        check_actor(actor)
        auto_promote_after = validate_params(
            {"auto_promote_after": auto_promote_after})["auto_promote_after"]
        now = float(self.clock())

        def work(conn):
            mid = require_model(conn, model)["model_id"]
            status = status_of(conn, mid, version)
            active, canary, old_percent = rollout_row(conn, mid)
            if canary is not None and canary != version:
                raise RolloutError(f"version {canary} is already the canary; promote it or "
                                   "roll back first (one canary at a time).")
            if status == "active":
                raise RolloutError(f"version {version} is the active version.")
            gated = bool(auto_abort) or auto_promote_after is not None
            set_status(conn, mid, version, "canary", now, actor, "canary",
                             percent=percent,
                             previous_percent=old_percent if canary is not None else None,
                             **({"auto_abort": bool(auto_abort),
                                 "auto_promote_after": auto_promote_after} if gated else {}))
            set_rollout(conn, mid, active, version, percent, now)
            if canary != version:       # a new canary: its cohorts start empty
                conn.execute("DELETE FROM canary_cohorts WHERE model_id = ? AND version = ?",
                             (mid, version))
            conn.execute("DELETE FROM canary_gates WHERE model_id = ?", (mid,))
            if gated:
                conn.execute("INSERT INTO canary_gates VALUES (?, ?, ?, ?, ?)",
                             (mid, version, int(bool(auto_abort)), auto_promote_after, now))
            return {"version": version, "status": "canary", "percent": percent,
                    "auto_abort": bool(auto_abort), "auto_promote_after": auto_promote_after}
        return self.db.transaction(work)

    def promote(self, model, version, *, actor="api"):
        """:meth:`Aggregator.promote <edgekm.sync.cloud.aggregator.Aggregator.promote>`."""
        version = check_version_id(version)
        check_actor(actor)
        now = float(self.clock())

        def work(conn):
            mid = require_model(conn, model)["model_id"]
            return promote_in(conn, mid, version, now, actor)
        return self.db.transaction(work)

    def abort_canary(self, model, *, actor="api"):
        """:meth:`Aggregator.abort_canary <edgekm.sync.cloud.aggregator.Aggregator.abort_canary>`."""
        check_actor(actor)
        now = float(self.clock())

        def work(conn):
            mid = require_model(conn, model)["model_id"]
            if rollout_row(conn, mid)[1] is None:
                raise RolloutError(f"model {model!r} has no canary to abort.")
            return abort_in(conn, mid, now, actor)
        return self.db.transaction(work)

    def rollback(self, model, *, actor="api"):
        """:meth:`Aggregator.rollback <edgekm.sync.cloud.aggregator.Aggregator.rollback>`."""
        check_actor(actor)
        now = float(self.clock())

        def work(conn):
            mid = require_model(conn, model)["model_id"]
            stack = conn.execute("SELECT position, version FROM active_history "
                                 "WHERE model_id = ? ORDER BY position DESC LIMIT 2",
                                 (mid,)).fetchall()
            if len(stack) < 2:
                raise RolloutError(f"model {model!r} has no earlier active version to roll "
                                   "back to.")
            (top, current), (_, previous) = stack
            _, canary, _ = rollout_row(conn, mid)
            set_status(conn, mid, current, "retired", now, actor, "rollback",
                             rolled_back_to=previous)
            if canary is not None and canary not in (current, previous):
                set_status(conn, mid, canary, "candidate", now, actor, "rollback",
                                 canary_cleared=True)
            set_status(conn, mid, previous, "active", now, actor, "rollback",
                             rolled_back_from=current)
            conn.execute("DELETE FROM active_history WHERE model_id = ? AND position = ?",
                         (mid, top))
            set_rollout(conn, mid, previous, None, 0.0, now)
            return {"active": previous, "retired": current}
        return self.db.transaction(work)

    def pin(self, model, device_id, version, *, actor="api"):
        """:meth:`Aggregator.pin <edgekm.sync.cloud.aggregator.Aggregator.pin>`."""
        check_id(device_id, "device_id")
        if version is not None:
            version = check_version_id(version)
        check_actor(actor)
        now = float(self.clock())

        def work(conn):
            mid = require_model(conn, model)["model_id"]
            if conn.execute("SELECT 1 FROM devices WHERE device_id = ?",
                            (device_id,)).fetchone() is None:
                raise UnknownDeviceError(f"no device {device_id!r}.")
            row = conn.execute("SELECT version FROM pins WHERE model_id = ? AND device_id = ?",
                               (mid, device_id)).fetchone()
            previous = None if row is None else row[0]
            if version is None:
                if previous is not None:
                    conn.execute("DELETE FROM pins WHERE model_id = ? AND device_id = ?",
                                 (mid, device_id))
                    record_event(conn, mid, previous, now, actor, "unpin", device=device_id)
            else:
                status = status_of(conn, mid, version)
                conn.execute("INSERT INTO pins VALUES (?, ?, ?, ?) ON CONFLICT "
                             "(model_id, device_id) DO UPDATE SET version = excluded.version, "
                             "since = excluded.since", (mid, device_id, version, now))
                record_event(conn, mid, version, now, actor, "pin", status, status,
                            device=device_id, previous=previous)
            return {"device": device_id, "version": version, "previous": previous}
        return self.db.transaction(work)

    def version_for(self, model, device_id):
        """:meth:`Aggregator.version_for <edgekm.sync.cloud.aggregator.Aggregator.version_for>`."""
        now = float(self.clock())
        return self.db.transaction(lambda conn: self.resolve(conn, model, device_id, now))

    def resolve(self, conn, model, device_id, now):
        mid = require_model(conn, model)["model_id"]
        flags = {"pinned": False, "canary": False, "rollback": False, "digest": None,
                 "body": None}
        pin = conn.execute("SELECT version FROM pins WHERE model_id = ? AND device_id = ?",
                           (mid, device_id)).fetchone()
        active, canary, percent = rollout_row(conn, mid)
        if pin is not None:
            version, flags["pinned"] = pin[0], True
        elif canary is not None and in_cohort(model, device_id, percent):
            version, flags["canary"] = canary, True
        else:
            version = active
        if version is None:
            return None, flags
        served = conn.execute("SELECT version FROM served WHERE model_id = ? AND device_id = ?",
                              (mid, device_id)).fetchone()
        flags["rollback"] = served is not None and version < served[0]
        if served is None or served[0] != version:
            conn.execute("INSERT INTO served VALUES (?, ?, ?, ?) ON CONFLICT "
                         "(model_id, device_id) DO UPDATE SET version = excluded.version, "
                         "at = excluded.at", (mid, device_id, version, now))
        cv, body, digest = self.versions.load(conn, mid, version)
        flags["digest"], flags["body"] = digest, body
        return cv, flags
