"""The coreset trees of every model, stored as bucket rows and mirrored in memory.

Each model keeps r-way :class:`~edgekm.coreset.CoresetTree` trees of buckets of
at most ``coreset_size`` weighted points: one per time window, one for all
time (``window = -1``) and one compacted (``window = -2``).  The trees are
write-through: every bucket stored or level cleared by a push is written to
the ``buckets`` table in the same transaction.  See
:mod:`edgekm.sync.cloud.aggregator` for how windows are folded into the
all-time tree.
"""

import hashlib
import math

import numpy as np

from edgekm.coreset import Coreset, CoresetTree
from edgekm.exceptions import NotFittedError

from .database import ALL_TIME, require_model

__all__ = ["Trees", "ModelTrees", "reduce_seed", "SeedCounter"]


def reduce_seed(seed, counter):
    """The seed of reduce number ``counter`` of a model of seed ``seed``."""
    digest = hashlib.sha256(f"edgekm-reduce:{seed}:{counter}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


class SeedCounter:
    """The model's persisted reduce counter: each call gives the next reduce's seed.

    Examples
    --------
    >>> seeds = SeedCounter({"seed": 7, "n_reduces": 0})
    >>> seeds() == reduce_seed(7, 0), seeds.count
    (True, 1)
    """

    def __init__(self, row):
        self.seed = row["seed"]
        self.count = row["n_reduces"]

    def __call__(self):
        self.count += 1
        return reduce_seed(self.seed, self.count - 1)


#: the columns :func:`bucket_coreset` reads, in its order
BUCKET_COLUMNS = "n_points, n_features, dtype, points, weights, spread, coreset_level"


def bucket_coreset(row):
    """A bucket row (:data:`BUCKET_COLUMNS`) as a :class:`Coreset`; a bucket stored before
    schema v4 has no spread (NULL), which is zeros."""
    n, d, code, points, weights, spread, level = row
    X = np.frombuffer(points, dtype=code).reshape(n, d)
    w = np.frombuffer(weights, dtype="<f8")
    s = None if spread is None else np.frombuffer(spread, dtype="<f8")
    return Coreset(X.astype(X.dtype.newbyteorder("="), copy=False), w, level=level, spread=s)


def write_bucket(conn, mid, window, level, position, bucket):
    points = bucket.points
    code = points.dtype.newbyteorder("<").str
    conn.execute(
        "INSERT INTO buckets (model_id, window, level, position, n_points, n_features, "
        "dtype, points, weights, spread, total_weight, coreset_level) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (mid, window, level, position, len(bucket), bucket.n_features, code,
         points.astype(code, copy=False).tobytes(),
         bucket.weights.astype("<f8", copy=False).tobytes(),
         bucket.spread.astype("<f8", copy=False).tobytes(), bucket.total_weight,
         bucket.level))


class ModelTrees:
    """The coreset trees of one model, mirrored in memory (write-through).

    ``stamp`` is the model's (n_frames, n_reduces) that the mirror matches;
    :class:`Trees` rebuilds the mirror when the row says otherwise (another
    process wrote) and drops it on any rollback.

    Examples
    --------
    >>> trees = ModelTrees(1, (0, 0), coreset_size=200, merge_degree=2)
    >>> trees.windows
    []
    """

    MAX_WINDOWS = 3

    def __init__(self, mid, stamp, coreset_size, merge_degree):
        self.mid = mid
        self.stamp = stamp
        self.coreset_size = coreset_size
        self.merge_degree = merge_degree
        self._trees = {}            # window -> CoresetTree

    @property
    def windows(self):
        return list(self._trees)

    def forget(self, window):
        self._trees.pop(window, None)

    def tree(self, conn, window):
        """The window's :class:`CoresetTree` (loaded from the bucket rows once)."""
        tree = self._trees.get(window)
        if tree is None:
            levels = []
            for row in conn.execute(
                    f"SELECT level, {BUCKET_COLUMNS} FROM buckets "
                    "WHERE model_id = ? AND window = ? ORDER BY level, position",
                    (self.mid, window)):
                while len(levels) <= row[0]:
                    levels.append([])
                levels[row[0]].append(bucket_coreset(row[1:]))
            if len(self._trees) >= self.MAX_WINDOWS:
                for old in [w for w in self._trees if w != ALL_TIME][:-1]:
                    del self._trees[old]
            tree = self._trees[window] = CoresetTree(self.coreset_size, self.merge_degree,
                                                      levels)
        return tree

    def push(self, conn, window, bucket, level, next_seed):
        """Add a bucket at ``level`` of one tree and carry merges up, as in base r."""
        mid = self.mid
        self.tree(conn, window).push(
            bucket, level, next_seed=next_seed,
            on_write=lambda lv, pos, b: write_bucket(conn, mid, window, lv, pos, b),
            on_clear=lambda lv: conn.execute(
                "DELETE FROM buckets WHERE model_id = ? AND window = ? AND level = ?",
                (mid, window, lv)))

    def move(self, conn, source, target, next_seed):
        """Push every bucket of the tree of window ``source`` into ``target``, each at its
        own level, then drop ``source`` from the mirror (its rows stay)."""
        for level, bucket in self.tree(conn, source).buckets():
            self.push(conn, target, bucket, level, next_seed)
        self.forget(source)


class Trees:
    """The write-through cache of every model's trees, and the aggregate they hold.

    Examples
    --------
    >>> import os, tempfile
    >>> from edgekm.sync.cloud.database import Database
    >>> db = Database(os.path.join(tempfile.mkdtemp(), "a.db"), checkpoint_interval=None)
    >>> Trees(db, coreset_size=200, merge_degree=2, clock=lambda: 0.0).cached
    {}
    >>> db.close()
    """

    def __init__(self, db, *, coreset_size, merge_degree, clock):
        self.db = db
        self.coreset_size = coreset_size
        self.merge_degree = merge_degree
        self.clock = clock
        self.cached = {}                        # model_id -> ModelTrees (writer only)
        db.on_rollback.append(self.cached.clear)

    def of(self, row):
        """The model's trees, valid for the row's state (inside a write transaction)."""
        stamp = (row["n_frames"], row["n_reduces"])
        trees = self.cached.get(row["model_id"])
        if trees is None or trees.stamp != stamp:
            trees = self.cached[row["model_id"]] = ModelTrees(
                row["model_id"], stamp, self.coreset_size, self.merge_degree)
        return trees

    def mirror(self, mid):
        """A private mirror of a model's trees, outside the cache."""
        return ModelTrees(mid, None, self.coreset_size, self.merge_degree)

    def fold(self, conn, trees, mid, folded, window, next_seed):
        """Add the trees of the windows in (folded, window) to the all-time tree."""
        lo = -1 if folded is None else folded
        for (old,) in conn.execute("SELECT window FROM windows WHERE model_id = ? AND "
                                   "window > ? AND window < ? ORDER BY window",
                                   (mid, lo, window)).fetchall():
            trees.move(conn, old, ALL_TIME, next_seed)

    def expire(self, conn, mid, oldest):
        """Delete the buckets of the windows before ``oldest``."""
        conn.execute("DELETE FROM buckets WHERE model_id = ? AND window >= 0 AND window < ?",
                     (mid, oldest))
        trees = self.cached.get(mid)
        if trees is not None:
            for old in [w for w in trees.windows if 0 <= w < oldest]:
                trees.forget(old)

    def aggregate(self, model, windows=None):
        """The model's aggregate as one :class:`edgekm.Coreset` (see
        :meth:`Aggregator.aggregate <edgekm.sync.cloud.aggregator.Aggregator.aggregate>`)."""
        with self.db.snapshot() as conn:
            row = require_model(conn, model)
            mid = row["model_id"]
            select = f"SELECT {BUCKET_COLUMNS} FROM buckets WHERE model_id = ? "
            if windows is None:
                folded = row["folded_through"]
                rows = conn.execute(
                    select + "AND (window = ? OR window > ?) ORDER BY window, level DESC, "
                    "position", (mid, ALL_TIME, -1 if folded is None else folded)).fetchall()
            else:
                current = math.floor(float(self.clock()) / row["window_seconds"])
                rows = conn.execute(    # never the all-time (-1) or compacted (-2) trees
                    select + "AND window >= 0 AND window > ? AND window <= ? "
                    "ORDER BY window, level DESC, position",
                    (mid, current - windows, current)).fetchall()
        if not rows:
            which = "all time" if windows is None else f"the last {windows} window(s)"
            raise NotFittedError(f"model {model!r} has no data for {which}.")
        parts = [bucket_coreset(r) for r in rows]
        return parts[0].merge(*parts[1:]) if len(parts) > 1 else parts[0]
