"""``StreamingKMeans``: the scikit-learn-style estimator over the fixed-memory engines."""

import inspect

import numpy as np

from . import _backend, _defaults
from ._validation import check_array, check_params, check_sample_weight, resolve_seed
from .coreset import Coreset
from .exceptions import NotFittedError


class StreamingKMeans:
    """Streaming k-means in fixed memory, with fast queries.

    Points are summarised by a coreset structure that is allocated once, the
    first time data arrives, and never grows.  A query (reading
    :attr:`cluster_centers_`) runs weighted k-means++ and Lloyd on the
    structure's coreset.  The algorithms come from Zhang, Tangwongsan and
    Tirthapura, "Streaming k-Means Clustering with Fast Queries":

    - ``"ct"``: the r-way coreset tree (StreamKM++ when ``merge_degree=2``);
      a query solves on the union of all its buckets.
    - ``"cc"``: the coreset cache: a query reuses a cached coreset of the
      prefix and reduces at most ``merge_degree`` buckets.
    - ``"rcc"``: the recursive coreset cache, ``nesting_depth`` tiers with
      merge degrees r, r**2, r**4, ...
    - ``"onlinecc"``: sequential k-means between queries, falling back to a
      CC query when the running upper bound on the cost (Lemma 10) exceeds
      ``switch_threshold`` times the cost at the last fallback.
    - ``"sequential"``: MacQueen's sequential k-means, the baseline (no
      quality guarantee).

    **Fixed memory.** The structure holds at most ``merge_degree ** max_levels``
    base buckets of ``coreset_size`` points in its levels.  A longer stream
    keeps working in the same memory: the top level absorbs the overflow by
    merging into one bucket that stays at the top level.  Weight is still
    kept exactly, but the oldest data is re-summarised at every absorption,
    so its coreset level grows by one per ``(r - 1) r**(max_levels - 1)`` new
    buckets and the O(log k) approximation guarantee no longer holds for
    fixed epsilon (``stats()["absorptions"]`` counts them).  The default
    ``max_levels`` holds 2**24 buckets.

    Parameters
    ----------
    n_clusters : int, default=8
    algorithm : {"ct", "cc", "rcc", "onlinecc", "sequential"}, default="cc"
    coreset_size : int or None, default=None
        Bucket size m; ``40 * n_clusters`` when None.  The paper uses 20 k;
        40 k measured within 2% of batch k-means where 20 k was up to 6% above.
    merge_degree : int, default=2
        r, the number of buckets merged at once (the innermost tier for RCC).
    nesting_depth : int, default=3
        Number of RCC tiers; their merge degrees are r, r**2, r**4 (2, 4, 16).
    switch_threshold : float, default=1.2
        OnlineCC's alpha.
    n_init : int, default=10
        k-means++ restarts per query (the best run is kept).
    max_iter : int, default=20
        Lloyd iterations per restart.
    max_levels : int or None, default=None
        Levels of the outermost tree; None holds 2**24 base buckets.
    dtype : {numpy.float32, numpy.float64}, default=numpy.float32
        Storage type of points and centres.  Weights are always float64.
        When the first batch of a float32 model arrives in float64, the model
        stores every point relative to an origin fixed then (the first row,
        kept in float64), so that clusters far from zero keep float32's
        relative precision: 0.5 apart at an offset of 1e7 still separate.
        Predictions subtract the same origin in float64; ``cluster_centers_``
        and :meth:`coreset` add it back and are rounded to the dtype.
    random_state : None, int, RandomState or Generator, default=None
        Seeds the model's own generator (xoshiro256**), so that the same seed,
        stream and queries give bit-identical results on every platform.

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters, n_features)
        The answer to a query; cached until new data arrives.
    inertia_ : float
        Cost estimate of the stream against ``cluster_centers_``: the
        solver's cost on the coreset plus the spread its points carry
        (CT/CC/RCC), or the running estimate EstCost (OnlineCC, sequential).
        Each coreset point is the mean of the data its leaf stands for and
        carries that data's sum of squared distances, so the figure is the
        cost of the data when every leaf lies in one centre's cell, and
        otherwise an upper bound (up to rounding), no longer biased low.
        For sequential k-means and OnlineCC, EstCost is an upper bound
        (Lemma 10): OnlineCC's restarts at each fallback from that same
        coreset cost plus spread (``docs/internals.md``).
    labels_ : ndarray of shape (n_samples,)
        Labels of the data passed to :meth:`fit`.
    n_features_in_ : int
    n_iter_ : int
        Lloyd iterations of the solve behind ``cluster_centers_`` (for OnlineCC,
        of its last fallback; 1 for sequential k-means, one online pass).
    n_seen_ : float
        Total weight seen.
    memory_bytes : int
        Bytes of every buffer the model owns; fixed after the first batch.

    Examples
    --------
    >>> import numpy as np
    >>> from edgekm import StreamingKMeans
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(c, 0.1, size=(500, 2)) for c in (0, 5, 10)])
    >>> model = StreamingKMeans(n_clusters=3, random_state=0)
    >>> for batch in np.array_split(rng.permutation(X), 10):
    ...     _ = model.partial_fit(batch)
    >>> sorted(np.round(model.cluster_centers_[:, 0]).astype(int).tolist())
    [0, 5, 10]
    >>> model.n_seen_
    1500.0
    """

    #: the float64 origin (a tuple, one value per feature) the engine's points
    #: are relative to; None: none
    _origin = None

    def __init__(self, n_clusters=8, *, algorithm="cc", coreset_size=None, merge_degree=2,
                 nesting_depth=_defaults.DEFAULT_NESTING_DEPTH,
                 switch_threshold=_defaults.DEFAULT_SWITCH_THRESHOLD,
                 n_init=_defaults.DEFAULT_N_INIT, max_iter=_defaults.DEFAULT_MAX_ITER,
                 max_levels=None, dtype=np.float32, random_state=None):
        self.n_clusters = n_clusters
        self.algorithm = algorithm
        self.coreset_size = coreset_size
        self.merge_degree = merge_degree
        self.nesting_depth = nesting_depth
        self.switch_threshold = switch_threshold
        self.n_init = n_init
        self.max_iter = max_iter
        self.max_levels = max_levels
        self.dtype = dtype
        self.random_state = random_state

    # ------------------------------------------------------------ params
    @classmethod
    def _param_names(cls):
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self"]

    def get_params(self, deep=True):
        """Constructor parameters, as given."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params):
        """Set constructor parameters; they take effect at the next fit."""
        valid = self._param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"Invalid parameter {name!r} for StreamingKMeans; "
                                 f"valid parameters are {valid}.")
            setattr(self, name, value)
        return self

    def __repr__(self):
        defaults = StreamingKMeans().get_params()
        changed = [f"{k}={v!r}" for k, v in self.get_params().items()
                   if v is not defaults[k] and v != defaults[k]]
        return f"StreamingKMeans({', '.join(changed)})"

    def __sklearn_tags__(self):
        from sklearn.utils import InputTags, Tags, TargetTags, TransformerTags
        return Tags(
            estimator_type="clusterer",
            target_tags=TargetTags(required=False),
            transformer_tags=TransformerTags(preserves_dtype=["float64"]),
            input_tags=InputTags(sparse=False),
            non_deterministic=False,
        )

    def __sklearn_is_fitted__(self):
        engine = getattr(self, "_engine", None)
        return engine is not None and engine.n_points >= self._engine_clusters

    # ------------------------------------------------------------ learning
    def _new_engine(self, n_features):
        cfg = check_params(self.get_params())
        seed = resolve_seed(self.random_state)
        # the live engine keeps its own k: set_params takes effect at the next fit
        self._engine_clusters = int(self.n_clusters)
        return _backend.Engine(cfg["kind"], n_features, self.n_clusters, cfg["coreset_size"],
                               cfg["merge_degrees"], cfg["max_levels"], cfg["n_init"],
                               cfg["max_iter"], cfg["switch_threshold"], cfg["dtype"], seed), cfg

    def _validated(self, X, sample_weight, first):
        """Validate a batch (and, on the first call, the parameters) before any change.

        Returns the batch as the engine stores it (relative to the origin, in
        the model dtype), its weights, and the origin (fixed by a first batch).
        """
        engine = getattr(self, "_engine", None)
        if first or engine is None:
            dtype = np.dtype(check_params(self.get_params())["dtype"])
            origin, n_features = None, None
            if dtype == np.float32 and getattr(X, "dtype", None) == np.float64:
                X = check_array(X, np.float64)
                origin = self._origin_of(X)
        else:
            dtype, origin, n_features = np.dtype(engine.dtype), self._origin, self.n_features_in_
            if origin is not None:
                X = check_array(X, np.float64, n_features=n_features)
        if origin is not None:
            X = X - np.asarray(origin)      # float64; the check below names an overflow
        X = check_array(X, dtype, n_features=n_features)
        return X, check_sample_weight(sample_weight, X.shape[0]), origin

    @staticmethod
    def _origin_of(X):
        """The origin of float64 data for a float32 model: its first row, as a
        float32 value kept in float64 (None when that row overflows float32)."""
        row = X[0]
        if not (np.abs(row) <= np.finfo(np.float32).max).all():
            return None
        # a tuple of floats: pickles the same before and after a round trip
        return tuple(row.astype(np.float32).astype(np.float64).tolist())

    def partial_fit(self, X, y=None, sample_weight=None):
        """Add a batch of points to the stream.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : ignored
        sample_weight : array-like of shape (n_samples,), default=None
            Positive finite weights (ones when None).

        Returns
        -------
        self

        A rejected batch (bad shape, NaN/inf, bad weights) raises ``ValueError``
        and leaves the model exactly as it was.
        """
        X, w, origin = self._validated(X, sample_weight, first=False)
        if getattr(self, "_engine", None) is None:
            self._engine, _ = self._new_engine(X.shape[1])
            self.n_features_in_ = X.shape[1]
            self._origin = origin
        self._engine.partial_fit(X, w)
        return self

    def fit(self, X, y=None, sample_weight=None):
        """Forget everything, stream X through the model, and answer a query.

        Raises ``ValueError`` when X has fewer rows than ``n_clusters``.
        """
        raw = X
        X, w, origin = self._validated(X, sample_weight, first=True)
        if X.shape[0] < self.n_clusters:
            raise ValueError(
                f"n_samples={X.shape[0]} should be >= n_clusters={self.n_clusters}.")
        engine, _ = self._new_engine(X.shape[1])
        engine.partial_fit(X, w)
        self._engine = engine
        self.n_features_in_ = X.shape[1]
        self._origin = origin                  # the order partial_fit sets them in
        self.labels_ = self.predict(X if origin is None else raw)
        return self

    def fit_predict(self, X, y=None, sample_weight=None):
        """Fit, then return the label of each row of X."""
        return self.fit(X, sample_weight=sample_weight).labels_

    def learn_one(self, x, w=1.0):
        """Add one point (1-D array of ``n_features``); the fast path.

        After the first call it allocates nothing when ``x`` is a C-contiguous
        ndarray of the model dtype: the engine checks it in C.  Anything else
        is validated and converted first.  Raises ``ValueError`` on NaN/inf,
        a wrong length or a weight that is not > 0, leaving the model
        unchanged.
        """
        try:
            if self._origin is None and self._engine.learn_one(x, w):
                return
        except AttributeError:      # no data yet: the engine is created on the slow path
            pass
        self._learn_one_slow(x, w)

    def _learn_one_slow(self, x, w):
        x = np.asarray(x)
        if x.ndim != 1:
            raise ValueError(f"learn_one expects a 1-D array; got shape {x.shape}.")
        X, w_arr, origin = self._validated(x.reshape(1, -1), [w], first=False)
        if getattr(self, "_engine", None) is None:
            self._engine, _ = self._new_engine(X.shape[1])
            self.n_features_in_ = X.shape[1]
            self._origin = origin
        if not self._engine.learn_one(X[0], float(w_arr[0])):
            raise AssertionError("a validated point was refused")  # pragma: no cover

    # ------------------------------------------------------------ queries
    def _fitted_engine(self):
        engine = getattr(self, "_engine", None)
        if engine is None or engine.n_points < self._engine_clusters:
            seen = 0 if engine is None else engine.n_points
            k = self.n_clusters if engine is None else self._engine_clusters
            raise NotFittedError(
                f"This StreamingKMeans instance has seen {seen} point(s); it needs at least "
                f"n_clusters={k} before it can answer. Call fit or partial_fit.")
        return engine

    @property
    def cluster_centers_(self):
        centers = self._fitted_engine().query()[0]
        if self._origin is None:
            return centers
        return (centers + np.asarray(self._origin)).astype(centers.dtype)

    @property
    def inertia_(self):
        return float(self._fitted_engine().query()[1])

    @property
    def n_iter_(self):
        """Lloyd iterations of the solve behind :attr:`cluster_centers_`; 1 for
        sequential k-means, whose answer is one online pass."""
        engine = self._fitted_engine()
        engine.query()
        return 1 if engine.kind == "sequential" else int(engine.n_iter)

    @property
    def n_seen_(self):
        engine = getattr(self, "_engine", None)
        if engine is None:
            raise NotFittedError("This StreamingKMeans instance has not seen any data yet.")
        return float(engine.n_seen)

    @property
    def memory_bytes(self):
        engine = getattr(self, "_engine", None)
        return 0 if engine is None else int(engine.memory_bytes)

    def stats(self):
        """Diagnostics: buckets, capacity, max coreset level, absorptions, cache hits."""
        engine = getattr(self, "_engine", None)
        return {} if engine is None else engine.stats()

    def coreset(self):
        """The weighted summary a query solves on, as an immutable :class:`Coreset`."""
        engine = getattr(self, "_engine", None)
        if engine is None or engine.n_points == 0:
            raise NotFittedError("This StreamingKMeans instance has not seen any data yet.")
        points, weights, spread, level = engine.coreset()
        if self._origin is not None:
            points = (points + np.asarray(self._origin)).astype(points.dtype)
        return Coreset._trusted(points, weights, level, spread)

    def _check_query_input(self, X):
        engine = self._fitted_engine()
        X = check_array(X, engine.dtype if self._origin is None else np.float64,
                        n_features=self.n_features_in_)
        if self._origin is not None:
            X = np.ascontiguousarray(X - np.asarray(self._origin))  # float64, at any offset
        centers = np.ascontiguousarray(engine.query()[0], dtype=np.float64)
        return X, centers

    def predict(self, X):
        """Index of the nearest centre for each row of X (int32)."""
        X, centers = self._check_query_input(X)
        return _backend.ops.assign(X, centers)[0]

    def transform(self, X):
        """Euclidean distance from each row of X to each centre, float64 (n_samples, n_clusters)."""
        X, centers = self._check_query_input(X)
        return np.sqrt(_backend.ops.pairwise_sqdist(X, centers))

    def fit_transform(self, X, y=None, sample_weight=None):
        return self.fit(X, sample_weight=sample_weight).transform(X)

    def score(self, X, y=None, sample_weight=None):
        """Opposite of the weighted k-means cost of X against the centres."""
        X, centers = self._check_query_input(X)
        w = check_sample_weight(sample_weight, X.shape[0])
        return -float(_backend.ops.cost(X, w, centers))
