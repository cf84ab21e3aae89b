"""The :class:`Coreset` value type: weighted points that summarise a stream."""

import numpy as np

from . import _backend
from ._defaults import DEFAULT_MAX_ITER
from ._validation import check_array, check_sample_weight, resolve_seed, validate_params


def _frozen(array):
    array = np.array(array, copy=True, order="C")
    array.setflags(write=False)
    return array


def _check_spread(spread, n_points):
    """The spread as a float64 array of shape (n_points,), finite and >= 0."""
    if spread is None:
        return np.zeros(n_points)
    s = np.asarray(spread)
    if s.dtype.kind not in "biuf":
        raise ValueError(f"spread must be numeric; got dtype {s.dtype}.")
    s = s.astype(np.float64)
    if s.shape != (n_points,):
        raise ValueError(f"spread must have shape ({n_points},); got {s.shape}.")
    if not np.isfinite(s).all():
        raise ValueError("spread contains NaN or infinity.")
    if (s < 0).any():
        raise ValueError("spread must be >= 0.")
    return s


class Coreset:
    """An immutable weighted point set: a (k, eps)-coreset of the data it summarises.

    Each point stands for a group of data points: it is their weighted mean,
    its weight is their total weight, and its *spread* is their sum of squared
    distances to it (0 for a raw point).  The cost of the data against any
    centres is then the coreset's cost plus its total spread, up to how the
    groups split between centres (``docs/internals.md``).

    Parameters
    ----------
    points : array-like of shape (n_points, n_features)
        Representative points (float32 or float64; other numbers become float64).
    weights : array-like of shape (n_points,), default=None
        Positive finite weights; ones when None.
    level : int, default=0
        Coreset level (docs/algorithms.md §0): the number of reduce steps the
        oldest data went through.  0 means raw points.
    spread : array-like of shape (n_points,), default=None
        Finite values >= 0: each point's within-group sum of squared
        distances (weighted).  Zeros when None.

    Attributes
    ----------
    points : ndarray of shape (n_points, n_features), read-only
    weights : ndarray of shape (n_points,), float64, read-only
    spread : ndarray of shape (n_points,), float64, read-only
    total_spread : float
        Sequential sum of ``spread``.
    total_weight : float
        Sequential sum of ``weights``: the weight of the data summarised
        (exact for integer weights below 2**53).
    level : int

    Examples
    --------
    >>> import numpy as np
    >>> from edgekm import Coreset
    >>> a = Coreset(np.array([[0.0, 0.0], [1.0, 1.0]]), [2.0, 3.0])
    >>> b = Coreset(np.array([[10.0, 10.0]]), [5.0])
    >>> merged = Coreset.merge(a, b)
    >>> merged.total_weight, len(merged), merged.level
    (10.0, 3, 0)
    >>> centers, sizes, cost = merged.fit_centers(2, random_state=0)
    >>> sorted(sizes.tolist())
    [5.0, 5.0]
    """

    __slots__ = ("_points", "_weights", "_spread", "_total_weight", "_level")

    def __init__(self, points, weights=None, *, level=0, spread=None):
        if hasattr(points, "toarray") or hasattr(points, "tocsr"):
            raise TypeError("Coreset does not accept sparse points; convert them with .toarray().")
        raw = np.asarray(points)
        dtype = raw.dtype if raw.dtype in (np.float32, np.float64) else np.float64
        X = check_array(raw, dtype, name="points", estimator="Coreset")
        w = check_sample_weight(weights, X.shape[0], name="weights")
        if not isinstance(level, (int, np.integer)) or isinstance(level, bool) or level < 0:
            raise ValueError(f"level must be an int >= 0; got {level!r}.")
        s = _check_spread(spread, X.shape[0])
        self._points = _frozen(X)
        self._weights = _frozen(w)
        self._spread = _frozen(s)
        self._total_weight = float(np.cumsum(w)[-1])
        self._level = int(level)

    @classmethod
    def _trusted(cls, points, weights, level, spread=None):
        """Wrap arrays that an engine produced (already valid)."""
        self = object.__new__(cls)
        self._points = _frozen(points)
        self._weights = _frozen(weights)
        self._spread = _frozen(np.zeros(len(weights)) if spread is None else spread)
        self._total_weight = float(np.cumsum(weights)[-1]) if len(weights) else 0.0
        self._level = int(level)
        return self

    points = property(lambda self: self._points)
    weights = property(lambda self: self._weights)
    spread = property(lambda self: self._spread)
    total_spread = property(
        lambda self: float(np.cumsum(self._spread)[-1]) if len(self._spread) else 0.0)
    total_weight = property(lambda self: self._total_weight)
    level = property(lambda self: self._level)
    n_features = property(lambda self: self._points.shape[1])
    dtype = property(lambda self: self._points.dtype)

    def __len__(self):
        return self._points.shape[0]

    def __repr__(self):
        return (f"Coreset(n_points={len(self)}, n_features={self.n_features}, "
                f"total_weight={self._total_weight!r}, level={self._level}, "
                f"dtype={self.dtype.name})")

    def __eq__(self, other):
        if not isinstance(other, Coreset):
            return NotImplemented
        return (self._level == other._level and self.dtype == other.dtype
                and np.array_equal(self._points, other._points)
                and np.array_equal(self._weights, other._weights)
                and np.array_equal(self._spread, other._spread))

    def __hash__(self):
        # + 0.0 maps -0.0 to 0.0, so that equal coresets (array_equal) hash alike
        return hash((self._level, self.dtype.str, self._points.shape,
                     (self._points + 0.0).tobytes(), (self._weights + 0.0).tobytes(),
                     (self._spread + 0.0).tobytes()))

    def __reduce__(self):
        return (Coreset._trusted, (self._points, self._weights, self._level, self._spread))

    def __setattr__(self, name, value):
        if hasattr(self, "_level"):
            raise AttributeError("Coreset is immutable")
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        raise AttributeError("Coreset is immutable")

    # -------------------------------------------------------------- algebra
    def merge(self, *others, size=None, random_state=None):
        """Union of coresets (Observation 1), reduced to ``size`` points if larger.

        Call it as ``Coreset.merge(a, b, c)`` or ``a.merge(b, c)``.  The union of
        coresets of disjoint data sets is a coreset of their union; the weights
        are kept exactly, and so are the spreads (concatenated).  When ``size``
        is given and the union is larger, the StreamKM++ coreset tree reduces
        it (raising the level by one): each leaf becomes its weighted mean,
        carrying ``sum(spread_i + w_i * ||x_i - mean||²)``.

        Parameters
        ----------
        *others : Coreset
        size : int or None, default=None
        random_state : None, int, RandomState or Generator

        Returns
        -------
        Coreset
        """
        parts = (self,) + others
        for c in parts:
            if not isinstance(c, Coreset):
                raise TypeError(f"merge takes Coreset objects; got {type(c).__name__}.")
            if c.n_features != self.n_features:
                raise ValueError(
                    f"cannot merge coresets with {self.n_features} and {c.n_features} features.")
        validate_params({"size": size})
        dtype = np.result_type(*[c.dtype for c in parts])
        X = np.concatenate([c._points for c in parts]).astype(dtype, copy=False)
        w = np.concatenate([c._weights for c in parts])
        s = np.concatenate([c._spread for c in parts])
        level = max(c._level for c in parts)
        if size is not None and len(w) > size:
            X, w, s = _backend.ops.reduce(np.ascontiguousarray(X), w, int(size),
                                          resolve_seed(random_state), s)
            level += 1
        return Coreset._trusted(X, w, level, s)

    def cost(self, centers):
        """Cost of the data the coreset stands for against ``centers`` (n_clusters, n_features).

        The weighted k-means cost of the points plus their total spread: the
        exact cost of the data when every group lies in one centre's cell, and
        an upper bound otherwise (up to rounding).  For raw points it is the
        plain k-means cost.
        """
        C = check_array(centers, np.float64, n_features=self.n_features, name="centers",
                        estimator="Coreset")
        return float(_backend.ops.cost(self._points, self._weights, C)) + self.total_spread

    def fit_centers(self, n_clusters, *, n_init=10, max_iter=DEFAULT_MAX_ITER, random_state=None):
        """Weighted k-means++ seeding and Lloyd, best of ``n_init`` restarts.

        Returns
        -------
        centers : ndarray of shape (n_clusters, n_features)
        cluster_weights : ndarray of shape (n_clusters,)
        cost : float
            The weighted cost of the coreset against ``centers`` plus its total
            spread (:meth:`cost`).  The spread does not move the centres.
        """
        validate_params({"n_clusters": n_clusters, "n_init": n_init, "max_iter": max_iter,
                         "random_state": random_state})
        if len(self) < n_clusters:
            raise ValueError(
                f"n_samples={len(self)} should be >= n_clusters={n_clusters}.")
        centers, weights, cost = _backend.ops.solve(
            self._points, self._weights, int(n_clusters), int(n_init), int(max_iter),
            resolve_seed(random_state))
        return centers, weights, float(cost) + self.total_spread


class CoresetTree:
    """An r-way merge-and-reduce tree of :class:`Coreset` buckets (a carry in base r).

    Level ``l`` holds at most ``merge_degree - 1`` buckets.  :meth:`push` adds a
    bucket at a level; when that level would reach ``merge_degree`` buckets, its
    buckets and the new one are merged into one coreset of at most
    ``coreset_size`` points (``Coreset.merge(*held, bucket, size=coreset_size,
    random_state=next_seed())``, Observation 1) and carried to the next level,
    which may carry on in turn.  A tree over N pushes holds at most
    ``(r - 1) * (log_r(N) + 1)`` buckets.

    This is the aggregator's tree (one per time window, one for all time, one
    compacted); it persists each change through the ``on_write`` and
    ``on_clear`` callbacks of :meth:`push`.  The device engine (Cython) runs
    the same carry on raw points in its fixed memory; the device outbox's pair
    merge and the Dask tree reduce with :meth:`Coreset.merge` directly.

    Parameters
    ----------
    coreset_size : int
        m, the most points of a merged bucket.
    merge_degree : int, default=2
        r, the buckets of a level that are merged into one bucket of the next.
    levels : list of list of Coreset or None, default=None
        The initial buckets, by level then position (the tree takes the lists).

    Examples
    --------
    >>> import numpy as np
    >>> from edgekm import Coreset
    >>> from edgekm.coreset import CoresetTree
    >>> tree = CoresetTree(coreset_size=4, merge_degree=2)
    >>> for i in range(3):
    ...     tree.push(Coreset(np.full((3, 2), float(i)), np.ones(3)), next_seed=lambda: 0)
    >>> [len(level) for level in tree.levels]
    [1, 1]
    >>> float(sum(b.total_weight for _, b in tree.buckets()))
    9.0
    """

    def __init__(self, coreset_size, merge_degree=2, levels=None):
        self.coreset_size = coreset_size
        self.merge_degree = merge_degree
        self.levels = [] if levels is None else levels

    def buckets(self):
        """``(level, bucket)`` of every bucket, level by level, in position order."""
        return [(level, b) for level, held in enumerate(self.levels) for b in held]

    def push(self, bucket, level=0, *, next_seed, on_write=None, on_clear=None):
        """Add ``bucket`` at ``level`` and carry the merges up.

        ``next_seed()`` gives the ``random_state`` of each merge, in order;
        ``on_write(level, position, bucket)`` is called for the bucket stored and
        ``on_clear(level)`` for each level merged away, in the order they happen.
        """
        levels = self.levels
        while True:
            while len(levels) <= level:
                levels.append([])
            held = levels[level]
            if len(held) + 1 < self.merge_degree:
                if on_write is not None:
                    on_write(level, len(held), bucket)
                held.append(bucket)
                return
            bucket = Coreset.merge(*held, bucket, size=self.coreset_size,
                                   random_state=next_seed())
            if on_clear is not None:
                on_clear(level)
            held.clear()
            level += 1
