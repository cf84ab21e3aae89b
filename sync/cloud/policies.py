"""Auto-publish policies: publish a model's centres on a timer, on new weight or on drift."""

import logging

from edgekm._validation import validate_params
from edgekm.exceptions import EdgekmError, NotFittedError

from .database import require_model
from .versions import check_actor, record_event

__all__ = ["PublishPolicies"]

logger = logging.getLogger("edgekm.sync.cloud.versions")


def _optional_positive(name, value):
    validate_params({name: value})
    return None if value is None else float(value)



def _unfittable(exc):
    """True for the errors of data that cannot be fitted: no data (NotFittedError), or
    fewer points than clusters (a plain ValueError, not an edgekm error)."""
    return isinstance(exc, NotFittedError) or not isinstance(exc, EdgekmError)


class PublishPolicies:
    """The ``publish_policies`` table and its evaluation.

    Examples
    --------
    >>> import os, tempfile
    >>> from edgekm.sync import Aggregator
    >>> agg = Aggregator(os.path.join(tempfile.mkdtemp(), "a.db"))
    >>> agg.add_model("m", 2)
    >>> agg.policies.publish_policy("m") is None
    True
    >>> agg.close()
    """

    def __init__(self, db, versions, *, clock):
        self.db = db
        self.versions = versions
        self.clock = clock

    def set_publish_policy(self, model, every_seconds=None, every_weight=None,
                           drift_threshold=None, *, n_clusters=None, windows=None, n_init=10,
                           random_state=0, actor="api"):
        """:meth:`Aggregator.set_publish_policy <edgekm.sync.cloud.aggregator.Aggregator.set_publish_policy>`."""
        every_seconds = _optional_positive("every_seconds", every_seconds)
        every_weight = _optional_positive("every_weight", every_weight)
        drift_threshold = _optional_positive("drift_threshold", drift_threshold)
        windows = validate_params({"windows": windows})["windows"]
        check_actor(actor)
        now = float(self.clock())

        def work(conn):
            mid = require_model(conn, model)["model_id"]
            if every_seconds is None and every_weight is None and drift_threshold is None:
                conn.execute("DELETE FROM publish_policies WHERE model_id = ?", (mid,))
                record_event(conn, mid, None, now, actor, "policy", removed=True)
                return None
            k = n_clusters
            if k is None:
                row = conn.execute("SELECT k FROM versions WHERE model_id = ? ORDER BY version "
                                   "DESC LIMIT 1", (mid,)).fetchone()
                if row is None:
                    raise ValueError("n_clusters is required while the model has no version.")
                k = row[0]
            k = validate_params({"n_clusters": k})["n_clusters"]
            values = (every_seconds, every_weight, drift_threshold, int(k), windows,
                      int(n_init), random_state, now)
            conn.execute("INSERT INTO publish_policies VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                         "ON CONFLICT (model_id) DO UPDATE SET "
                         "every_seconds = excluded.every_seconds, "
                         "every_weight = excluded.every_weight, "
                         "drift_threshold = excluded.drift_threshold, "
                         "n_clusters = excluded.n_clusters, windows = excluded.windows, "
                         "n_init = excluded.n_init, random_state = excluded.random_state, "
                         "since = excluded.since", (mid,) + values)
            policy = dict(zip(("every_seconds", "every_weight", "drift_threshold",
                               "n_clusters", "windows", "n_init", "random_state", "since"),
                              values))
            record_event(conn, mid, None, now, actor, "policy", **policy)
            return policy
        return self.db.transaction(work)

    def publish_policy(self, model):
        """The model's auto-publish policy as a dict, or None."""
        conn = self.db.reader()
        mid = require_model(conn, model)["model_id"]
        row = conn.execute("SELECT every_seconds, every_weight, drift_threshold, n_clusters, "
                           "windows, n_init, random_state, since FROM publish_policies "
                           "WHERE model_id = ?", (mid,)).fetchone()
        if row is None:
            return None
        return dict(zip(("every_seconds", "every_weight", "drift_threshold", "n_clusters",
                         "windows", "n_init", "random_state", "since"), row))

    def due_publications(self, now=None):
        """:meth:`Aggregator.due_publications <edgekm.sync.cloud.aggregator.Aggregator.due_publications>`."""
        now = float(self.clock()) if now is None else float(now)
        with self.db.snapshot() as conn:
            due = []
            for (name, mid, total, every_s, every_w, thr, k, windows, n_init, seed,
                 since) in conn.execute(
                    "SELECT m.name, m.model_id, m.total_weight, p.every_seconds, "
                    "p.every_weight, p.drift_threshold, p.n_clusters, p.windows, p.n_init, "
                    "p.random_state, p.since FROM publish_policies p JOIN models m "
                    "ON m.model_id = p.model_id ORDER BY m.name").fetchall():
                last = conn.execute("SELECT created, model_weight FROM versions WHERE "
                                    "model_id = ? ORDER BY version DESC LIMIT 1",
                                    (mid,)).fetchone()
                last_time, last_weight = (since, 0.0) if last is None else last
                new_weight = total - last_weight
                if new_weight <= 0:
                    continue
                reason = None
                if every_s is not None and now - last_time >= every_s:
                    reason = f"every_seconds: {now - last_time:.0f} s since the last version"
                elif every_w is not None and new_weight >= every_w:
                    reason = f"every_weight: {new_weight:g} new weight"
                elif thr is not None:
                    mean = conn.execute("SELECT avg(drift_score) FROM device_drift WHERE "
                                        "model_id = ? AND received > ?",
                                        (mid, last_time)).fetchone()[0]
                    if mean is not None and mean >= thr:
                        reason = f"drift: mean device drift score {mean:.3g} >= {thr:g}"
                if reason is not None:
                    due.append((name, reason, {"n_clusters": k, "windows": windows,
                                               "n_init": n_init, "random_state": seed}))
        return due

    def run_publish_policies(self, now=None):
        """:meth:`Aggregator.run_publish_policies <edgekm.sync.cloud.aggregator.Aggregator.run_publish_policies>`."""
        with self.db.exclusive("publish_policies") as mine:
            return self._run_publish_policies(now) if mine else []

    def _run_publish_policies(self, now):
        published = []
        for model, reason, params in self.due_publications(now):
            try:
                v = self.versions.publish(model, params["n_clusters"], params["windows"],
                                 n_init=params["n_init"], random_state=params["random_state"],
                                 actor="policy", reason=reason)
            except (NotFittedError, ValueError) as exc:
                if not _unfittable(exc):
                    raise
                logger.warning("auto-publish of %s skipped: %s", model, exc)
                continue
            published.append((model, v, reason))
        return published
