"""Canaries gated on behaviour: the canary cohort against the control cohort.

A canary started with ``auto_abort`` (or ``auto_promote_after``) has a gate
(``canary_gates``).  Every v2 telemetry summary of the canary version is added to
the *canary* cohort and every one of the active version to the *control* cohort
(``canary_cohorts``): cluster counts, counts beyond p99, sums, sums of squares,
points, and the cost (sum of squared distances to the version's centres, exact
from the sums).  Once both cohorts hold ``min_points``, the canary is **worse**
when any of:

- **tail**: its fraction beyond p99 exceeds the control's by more than
  ``tail_margin`` (absolute), with ``z > z`` (two-proportion deviate of the excess
  over the margin);
- **drift**: the pooled drift test of the canary cohort against the canary
  (:func:`edgekm.drift.drift_test`) reaches 1 while the control's against the active
  version stays below 1;
- **cost**: its cost per point exceeds the control's by more than ``cost_margin``
  (relative).

A worse canary with ``auto_abort`` is withdrawn in the same transaction as the
summary that decided (event ``abort`` by actor ``gate`` with the figures; the
cohort's next pull gets the active version flagged as a rollback).  With
``auto_promote_after = N``, a canary whose cohort has streamed N points with no
regression is promoted (event ``promote`` by ``gate``).  Thresholds have defaults
(:data:`DEFAULTS`) and can be set per model (``canary_policies``).
"""

import math

import numpy as np

from edgekm._validation import validate_params
from edgekm.drift import drift_test

from .database import require_model

__all__ = ["DEFAULTS", "Gate"]

#: the gate's thresholds when a model sets none
DEFAULTS = {"min_points": 2000, "tail_margin": 0.01, "cost_margin": 0.25, "z": 3.0}
_BLOBS = ("counts", "beyond", "sums", "sumsq")


def window_cost(s, centers):
    """Sum of squared distances of a summary's points to ``centers`` (from its sums)."""
    c = np.asarray(centers, dtype=np.float64)
    return float(np.sum(s.sumsq) - 2.0 * np.sum(c * s.sums)
                 + np.sum(np.asarray(s.counts) * np.sum(c * c, axis=1)))


def policy_of(conn, mid):
    """The model's gate thresholds (:data:`DEFAULTS` where it sets none)."""
    row = conn.execute("SELECT min_points, tail_margin, cost_margin, z FROM canary_policies "
                       "WHERE model_id = ?", (mid,)).fetchone()
    out = dict(DEFAULTS)
    if row is not None:
        out.update({k: v for k, v in zip(DEFAULTS, row) if v is not None})
    return out


def _cohort(conn, mid, version, cohort, k, d):
    row = conn.execute("SELECT counts, beyond, sums, sumsq, n_points, cost FROM "
                       "canary_cohorts WHERE model_id = ? AND version = ? AND cohort = ?",
                       (mid, version, cohort)).fetchone()
    if row is None:
        return None
    shapes = ((k,), (k,), (k, d), (k, d))
    arrays = [np.frombuffer(b, dtype="<f8").reshape(sh) for b, sh in zip(row[:4], shapes)]
    return dict(zip(_BLOBS, arrays), n_points=row[4], cost=row[5])


def compare(canary, control, canary_version, active_version, policy):
    """The gate's figures and verdict for two cohorts (dicts of :func:`_cohort`)."""
    n1, n0 = canary["n_points"], control["n_points"]
    figures = {"canary_points": n1, "control_points": n0, "verdict": "waiting",
               "reasons": []}
    if min(n1, n0) < policy["min_points"]:
        return figures
    p1 = float(canary["beyond"].sum()) / max(float(canary["counts"].sum()), 1.0)
    p0 = float(control["beyond"].sum()) / max(float(control["counts"].sum()), 1.0)
    se = math.sqrt(max(p1 * (1 - p1) / n1 + p0 * (1 - p0) / n0, 1e-12))
    z_tail = (p1 - p0 - policy["tail_margin"]) / se
    d1 = drift_test(canary["counts"], canary["beyond"], canary["sums"], canary["sumsq"],
                    canary_version.centers, canary_version.cluster_weights,
                    scale=canary_version.quantiles[:, -1])["drift_score"]
    d0 = drift_test(control["counts"], control["beyond"], control["sums"], control["sumsq"],
                    active_version.centers, active_version.cluster_weights,
                    scale=active_version.quantiles[:, -1])["drift_score"]
    c1, c0 = canary["cost"] / n1, control["cost"] / n0
    cost_ratio = c1 / c0 if c0 > 0 else (1.0 if c1 == 0 else math.inf)
    figures.update(canary_beyond_p99=p1, control_beyond_p99=p0, z_tail=z_tail,
                   canary_drift=d1, control_drift=d0, canary_cost_per_point=c1,
                   control_cost_per_point=c0, cost_ratio=cost_ratio)
    reasons = figures["reasons"]
    if z_tail > policy["z"]:
        reasons.append("tail")
    if d1 >= 1.0 and d0 < 1.0:
        reasons.append("drift")
    if cost_ratio > 1.0 + policy["cost_margin"]:
        reasons.append("cost")
    figures["verdict"] = "worse" if reasons else "no_regression"
    if math.isinf(cost_ratio):
        figures["cost_ratio"] = None
    return figures


class Gate:
    """The canary gate of the module's docstring; ``abort`` and ``promote`` are the
    rollout's in-transaction steps ``(conn, mid, now, actor, **detail)``.

    Examples
    --------
    The thresholds a model uses, the defaults until it sets its own:

    >>> import os, tempfile
    >>> from edgekm.sync import Aggregator
    >>> with Aggregator(os.path.join(tempfile.mkdtemp(), "g.db")) as agg:
    ...     agg.add_model("m", 2)
    ...     before = agg.drift("m")["canary_gate"]["thresholds"]
    ...     after = agg.set_canary_policy("m", min_points=5000, z=4.0)
    >>> before == DEFAULTS, after["min_points"], after["z"], after["cost_margin"]
    (True, 5000, 4.0, 0.25)
    """

    def __init__(self, versions, *, abort, promote):
        self.versions = versions
        self.abort = abort
        self.promote = promote

    def observe(self, conn, mid, s, now, active, canary):
        """Inside the summary's transaction: add it to its cohort and apply the gate.
        Returns the gate's figures when it acted, else None."""
        if canary is None or s.beyond_p99 is None or s.version not in (canary, active):
            return None
        gate = conn.execute("SELECT auto_abort, auto_promote_after FROM canary_gates WHERE "
                            "model_id = ? AND version = ?", (mid, canary)).fetchone()
        if gate is None:
            return None
        cohort = "canary" if s.version == canary else "control"
        cv = self.versions.load(conn, mid, s.version)[0]
        k, d = cv.centers.shape
        if s.sums.shape != (k, d):
            return None
        add = [np.asarray(a, dtype="<f8") for a in (s.counts, s.beyond_p99, s.sums, s.sumsq)]
        old = _cohort(conn, mid, canary, cohort, k, d)
        cost = window_cost(s, cv.centers)
        if old is not None:
            add = [a + old[name] for a, name in zip(add, _BLOBS)]
            cost += old["cost"]
        conn.execute("INSERT INTO canary_cohorts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT "
                     "(model_id, version, cohort) DO UPDATE SET counts = excluded.counts, "
                     "beyond = excluded.beyond, sums = excluded.sums, sumsq = excluded.sumsq, "
                     "n_points = canary_cohorts.n_points + excluded.n_points, cost = excluded.cost",
                     (mid, canary, cohort, *(a.astype("<f8").tobytes() for a in add),
                      s.n_points, cost))
        figures = self.figures(conn, mid, canary, active)
        if figures is None:
            return None
        auto_abort, promote_after = gate
        if figures["verdict"] == "worse" and auto_abort:
            self.abort(conn, mid, now, "gate", gate=figures)
            return figures
        if (figures["verdict"] == "no_regression" and promote_after is not None
                and figures["canary_points"] >= promote_after):
            self.promote(conn, mid, canary, now, "gate", gate=figures)
            return figures
        return None

    def set_policy(self, db, model, **thresholds):
        """Store the model's thresholds (validated; None: the default); returns them all."""
        values = validate_params(thresholds)

        def work(conn):
            mid = require_model(conn, model)["model_id"]
            conn.execute("INSERT INTO canary_policies VALUES (?, ?, ?, ?, ?) ON CONFLICT "
                         "(model_id) DO UPDATE SET min_points = excluded.min_points, "
                         "tail_margin = excluded.tail_margin, "
                         "cost_margin = excluded.cost_margin, z = excluded.z",
                         (mid, *(values[k] for k in DEFAULTS)))
            return policy_of(conn, mid)
        return db.transaction(work)

    def figures(self, conn, mid, canary, active):
        """The gate's current figures for ``canary`` against ``active`` (None without both
        cohorts)."""
        if canary is None or active is None:
            return None
        cv1 = self.versions.load(conn, mid, canary)[0]
        cv0 = self.versions.load(conn, mid, active)[0]
        c1 = _cohort(conn, mid, canary, "canary", *cv1.centers.shape)
        c0 = _cohort(conn, mid, canary, "control", *cv0.centers.shape)
        if c1 is None or c0 is None:
            return None
        return compare(c1, c0, cv1, cv0, policy_of(conn, mid))

    def report(self, conn, mid, canary, active):
        """The gate's part of the drift report: its settings, thresholds and figures."""
        row = None if canary is None else conn.execute(
            "SELECT auto_abort, auto_promote_after, started FROM canary_gates WHERE "
            "model_id = ? AND version = ?", (mid, canary)).fetchone()
        out = {"thresholds": policy_of(conn, mid), "version": canary, "auto_abort": False,
               "auto_promote_after": None, "figures": None}
        if row is not None:
            out.update(auto_abort=bool(row[0]), auto_promote_after=row[1],
                       figures=self.figures(conn, mid, canary, active))
        return out
