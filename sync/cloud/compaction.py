"""Compaction: bound the database by merging old windows and collapsing old dedup rows."""

import math

from .database import COMPACTED, model_row
from .trees import SeedCounter

__all__ = ["Compaction"]


class Compaction:
    """:meth:`compact` (see :meth:`Aggregator.compact
    <edgekm.sync.cloud.aggregator.Aggregator.compact>`).

    Examples
    --------
    >>> import os, tempfile
    >>> from edgekm.sync import Aggregator
    >>> agg = Aggregator(os.path.join(tempfile.mkdtemp(), "a.db"))
    >>> agg.compaction.compact(now=0.0)["windows_compacted"]
    0
    >>> agg.close()
    """

    def __init__(self, db, trees, *, clock, compact_windows, dedup_seconds):
        self.db = db
        self.trees = trees
        self.clock = clock
        self.compact_windows = compact_windows
        self.dedup_seconds = dedup_seconds

    def compact(self, now=None):
        """Compact at ``now`` (None: ``clock()``); returns the stats dict."""
        now = float(self.clock()) if now is None else float(now)

        def work(conn):
            stats = {"windows_compacted": 0, "frames_collapsed": 0, "telemetry_collapsed": 0,
                     "anomalies_deleted": 0,
                     "buckets_before": conn.execute("SELECT count(*) FROM buckets").fetchone()[0]}
            if self.compact_windows is not None:
                names = [r[0] for r in conn.execute("SELECT name FROM models ORDER BY model_id")]
                for name in names:
                    stats["windows_compacted"] += self._compact_model(
                        conn, model_row(conn, name), now)
            if self.dedup_seconds is not None:
                cutoff = now - self.dedup_seconds
                stats["frames_collapsed"] = collapse(conn, "frame", cutoff)
                stats["telemetry_collapsed"] = collapse(conn, "telemetry", cutoff)
                stats["anomalies_deleted"] = conn.execute(
                    "DELETE FROM anomalies WHERE received < ?", (cutoff,)).rowcount
            stats["buckets_after"] = conn.execute("SELECT count(*) FROM buckets").fetchone()[0]
            stats["ranges"] = conn.execute("SELECT count(*) FROM seq_ranges").fetchone()[0]
            return stats
        return self.db.transaction(work)

    def _compact_model(self, conn, row, now):
        mid = row["model_id"]
        folded = row["folded_through"]
        if folded is None:
            return 0
        limit = min(folded, math.floor(now / row["window_seconds"]) - self.compact_windows)
        old = [r[0] for r in conn.execute(
            "SELECT window FROM windows WHERE model_id = ? AND window >= 0 AND window <= ? "
            "ORDER BY window", (mid, limit))]
        if not old:
            return 0
        next_seed = SeedCounter(row)
        trees = self.trees.mirror(mid)         # a private mirror; the cache is dropped below
        for window in old:
            trees.move(conn, window, COMPACTED, next_seed)
        marks = ",".join("?" * len(old))
        conn.execute(f"DELETE FROM buckets WHERE model_id = ? AND window IN ({marks})",
                     (mid, *old))
        conn.execute(
            "INSERT INTO windows SELECT model_id, ?, sum(total_weight), sum(n_frames), "
            f"min(first_received), max(last_received) FROM windows WHERE model_id = ? AND "
            f"window IN ({marks}) GROUP BY model_id ON CONFLICT (model_id, window) DO UPDATE SET "
            "total_weight = windows.total_weight + excluded.total_weight, "
            "n_frames = windows.n_frames + excluded.n_frames, "
            "first_received = min(windows.first_received, excluded.first_received), "
            "last_received = max(windows.last_received, excluded.last_received)",
            (COMPACTED, mid, *old))
        conn.execute(f"DELETE FROM windows WHERE model_id = ? AND window IN ({marks})",
                     (mid, *old))
        conn.execute(
            "INSERT INTO device_windows SELECT model_id, device_id, ?, sum(weight), "
            f"sum(n_frames), sum(clipped) FROM device_windows WHERE model_id = ? AND "
            f"window IN ({marks}) GROUP BY model_id, device_id ON CONFLICT (model_id, device_id, "
            "window) DO UPDATE SET weight = device_windows.weight + excluded.weight, "
            "n_frames = device_windows.n_frames + excluded.n_frames, "
            "clipped = device_windows.clipped + excluded.clipped",
            (COMPACTED, mid, *old))
        conn.execute(f"DELETE FROM device_windows WHERE model_id = ? AND window IN ({marks})",
                     (mid, *old))
        through = max(old) if row["compacted_through"] is None \
            else max(old[-1], row["compacted_through"])
        conn.execute("UPDATE models SET n_reduces = ?, compacted_through = ? WHERE model_id = ?",
                     (next_seed.count, through, mid))
        self.trees.cached.pop(mid, None)
        return len(old)



def collapse(conn, kind, cutoff):
    """Collapse the dedup rows of ``kind`` received before ``cutoff`` into seq runs."""
    table, weight = ("frames", "weight") if kind == "frame" else ("telemetry", "0.0")
    keep = set()
    if kind == "frame":     # the newest frame row of each (model, device) stays
        keep = set(conn.execute(
            "SELECT f.model_id, f.device_id, f.boot, f.seq FROM frames f JOIN "
            "(SELECT model_id, device_id, max(received) AS r FROM frames GROUP BY model_id, "
            "device_id) m ON f.model_id = m.model_id AND f.device_id = m.device_id AND "
            "f.received = m.r").fetchall())
    groups = {}
    for mid, device, boot, seq, w in conn.execute(
            f"SELECT model_id, device_id, boot, seq, {weight} FROM {table} WHERE received < ? "
            "ORDER BY model_id, device_id, boot, seq", (cutoff,)):
        if (mid, device, boot, seq) not in keep:
            groups.setdefault((mid, device, boot), []).append((seq, seq, 1, w))
    collapsed = 0
    for (mid, device, boot), items in groups.items():
        runs = [tuple(r) for r in conn.execute(
            "SELECT seq_lo, seq_hi, n_items, weight FROM seq_ranges WHERE kind = ? AND "
            "model_id = ? AND device_id = ? AND boot = ?", (kind, mid, device, boot))]
        merged = []
        for lo, hi, n, w in sorted(runs + items):
            if merged and lo == merged[-1][1] + 1:
                plo, _, pn, pw = merged[-1]
                merged[-1] = (plo, hi, pn + n, pw + w)
            else:
                merged.append((lo, hi, n, w))
        conn.execute("DELETE FROM seq_ranges WHERE kind = ? AND model_id = ? AND device_id = ? "
                     "AND boot = ?", (kind, mid, device, boot))
        conn.executemany("INSERT INTO seq_ranges VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         [(kind, mid, device, boot, *m) for m in merged])
        conn.executemany(f"DELETE FROM {table} WHERE model_id = ? AND device_id = ? AND "
                         "boot = ? AND seq = ?", [(mid, device, boot, i[0]) for i in items])
        collapsed += len(items)
    return collapsed


