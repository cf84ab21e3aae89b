"""``StreamingKMeans``: the scikit-learn-style estimator over the fixed-memory engines."""

import inspect
import sys
from collections.abc import Mapping

import numpy as np

from . import _backend, _defaults
from ._validation import (Options, check_array, check_feature_names, check_params,
                          check_sample_weight, dict_keys_in_order, feature_names,
                          resolve_seed, validate_params)
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
    feature_names_in_ : ndarray of shape (n_features_in_,), object
        The column names of the DataFrame (or the keys of the first dict, sorted)
        that started the model; only when they are all strings.  Later data
        must have the same names (:meth:`predict` and :meth:`partial_fit` also
        the same order, as in scikit-learn).
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
        first = getattr(self, "_engine", None) is None
        names = self._names_of(X, reset=first)
        X, w, origin = self._validated(X, sample_weight, first=False)
        if first:
            self._engine, _ = self._new_engine(X.shape[1])
            self.n_features_in_ = X.shape[1]
            self._set_names(names)
            self._origin = origin
        self._engine.partial_fit(X, w)
        return self

    def fit(self, X, y=None, sample_weight=None):
        """Forget everything, stream X through the model, and answer a query.

        Raises ``ValueError`` when X has fewer rows than ``n_clusters``.
        """
        names = self._names_of(X, reset=True)
        raw = X
        X, w, origin = self._validated(X, sample_weight, first=True)
        if X.shape[0] < self.n_clusters:
            raise ValueError(
                f"n_samples={X.shape[0]} should be >= n_clusters={self.n_clusters}.")
        engine, _ = self._new_engine(X.shape[1])
        engine.partial_fit(X, w)
        self._engine = engine
        self.n_features_in_ = X.shape[1]
        self._set_names(names)
        self._origin = origin                  # the order partial_fit sets them in
        # with an origin, the labels of the float64 rows (as predict gives them)
        self.labels_ = self._labels(X) if origin is None else self.predict(raw)
        return self

    def fit_predict(self, X, y=None, sample_weight=None):
        """Fit, then return the label of each row of X."""
        return self.fit(X, sample_weight=sample_weight).labels_

    def learn_one(self, x, w=1.0):
        """Add one point: a 1-D array of ``n_features`` values, or a dict (river's API).

        After the first call it allocates nothing when ``x`` is a C-contiguous
        ndarray of the model dtype: the engine checks it in C.  Anything else
        is validated and converted first.  An array is positional, whatever
        names the model has.  A dict maps its keys to columns: a model that
        has names (``feature_names_in_``, from a DataFrame or an earlier
        dict) takes them in that order, and a model that has seen no data
        takes the keys of the first dict in sorted order, so that the columns
        do not depend on the order a dict was built in.  A dict with a new
        key or without one of the model's keys raises ``ValueError``: the
        dimension is fixed.  Raises ``ValueError`` on NaN/inf, a wrong length
        or a weight that is not > 0, leaving the model unchanged.
        """
        try:
            if self._origin is None and self._engine.learn_one(x, w):
                return
        except AttributeError:      # no data yet: the engine is created on the slow path
            pass
        self._learn_one_slow(x, w)

    def _learn_one_slow(self, x, w):
        keys, x = self._row_of(x, "learn_one")
        X, w_arr, origin = self._validated(x.reshape(1, -1), [w], first=False)
        if getattr(self, "_engine", None) is None:
            self._engine, _ = self._new_engine(X.shape[1])
            self.n_features_in_ = X.shape[1]
            self._set_names(keys)
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
        self._names_of(X, reset=False)
        X = check_array(X, engine.dtype if self._origin is None else np.float64,
                        n_features=self.n_features_in_)
        if self._origin is not None:
            X = np.ascontiguousarray(X - np.asarray(self._origin))  # float64, at any offset
        centers = np.ascontiguousarray(engine.query()[0], dtype=np.float64)
        return X, centers

    def _labels(self, X):
        """Labels of a validated X."""
        centers = np.ascontiguousarray(self._fitted_engine().query()[0], dtype=np.float64)
        return _backend.ops.assign(X, centers)[0]

    def predict(self, X):
        """Index of the nearest centre for each row of X (int32)."""
        X, centers = self._check_query_input(X)
        return _backend.ops.assign(X, centers)[0]

    def transform(self, X):
        """Euclidean distance from each row of X to each centre.

        Returns
        -------
        ndarray of shape (n_samples, n_clusters), float64, or a DataFrame with
        columns :meth:`get_feature_names_out` under :meth:`set_output`.
        """
        X_in = X
        X, centers = self._check_query_input(X)
        return self._wrap_output(np.sqrt(_backend.ops.pairwise_sqdist(X, centers)), X_in)

    def fit_transform(self, X, y=None, sample_weight=None):
        return self.fit(X, sample_weight=sample_weight).transform(X)

    def score(self, X, y=None, sample_weight=None):
        """Opposite of the weighted k-means cost of X against the centres."""
        X, centers = self._check_query_input(X)
        w = check_sample_weight(sample_weight, X.shape[0])
        return -float(_backend.ops.cost(X, w, centers))

    def score_samples(self, X):
        """Opposite of the squared distance from each row of X to its nearest centre.

        Returns
        -------
        ndarray of shape (n_samples,), float64
            Higher is closer; :meth:`score` is their (weighted) sum.
        """
        X, centers = self._check_query_input(X)
        return -_backend.ops.assign(X, centers)[1]

    # ------------------------------------------------------------ named features
    def _names_of(self, X, reset):
        """X's feature names when they reset the model's, else check them and return None."""
        if reset:
            return feature_names(X)
        check_feature_names(getattr(self, "feature_names_in_", None), X)
        return None

    def _set_names(self, names):
        """Record the column order (a DataFrame's names, a first dict's keys, or None)."""
        self._feature_keys = None if names is None else tuple(names)
        if names is not None and all(isinstance(name, str) for name in self._feature_keys):
            self.feature_names_in_ = np.asarray(self._feature_keys, dtype=object)
        else:
            self.__dict__.pop("feature_names_in_", None)

    def _row_of(self, x, method):
        """(keys, 1-D array) of one point: a dict in column order, or an array (keys None)."""
        if isinstance(x, Mapping):
            keys = getattr(self, "_feature_keys", None)
            if keys is None and getattr(self, "_engine", None) is not None:
                raise ValueError(
                    f"{method} got a dict, but this StreamingKMeans was fitted without "
                    f"feature names; pass a 1-D array of its {self.n_features_in_} features.")
            keys = dict_keys_in_order(x, keys)
            return keys, np.asarray([x[key] for key in keys])
        x = np.asarray(x)
        if x.ndim != 1:
            raise ValueError(f"{method} expects a 1-D array or a dict; got shape {x.shape}.")
        return None, x

    def _by_name(self, X):
        """X with its columns in the model's order when both have names."""
        names, keys = feature_names(X), getattr(self, "_feature_keys", None)
        if names is None or keys is None or tuple(names) == keys:
            return X
        dict_keys_in_order(dict.fromkeys(names), keys, name="X")   # new or missing columns
        return X[list(keys)]

    def predict_one(self, x):
        """Label of one point, an int: a 1-D array, or a dict mapped as in :meth:`learn_one`."""
        engine = self._fitted_engine()
        _, x = self._row_of(x, "predict_one")
        return int(self._labels(check_array(x.reshape(1, -1), engine.dtype,
                                            n_features=self.n_features_in_))[0])

    def learn_many(self, X):
        """Add a batch (river's mini-batch API): :meth:`partial_fit` with columns by name.

        Unlike :meth:`partial_fit`, which refuses a DataFrame whose columns are
        in another order (as scikit-learn does), the columns of ``X`` are taken
        by name; new or missing columns raise ``ValueError``.
        """
        self.partial_fit(self._by_name(X))

    def predict_many(self, X):
        """Labels of a batch, columns by name as in :meth:`learn_many`.

        Returns
        -------
        pandas.Series of shape (n_samples,) with the index of ``X`` when ``X`` is a
        pandas DataFrame, else ndarray of shape (n_samples,), int32.
        """
        labels = self.predict(self._by_name(X))
        pd = sys.modules.get("pandas")
        if pd is not None and isinstance(X, pd.DataFrame):
            return pd.Series(labels, index=X.index)
        return labels

    # ------------------------------------------------------------ output names and containers
    def get_feature_names_out(self, input_features=None):
        """Names of the columns of :meth:`transform`: ``streamingkmeans0``, ``streamingkmeans1``, ...

        Parameters
        ----------
        input_features : array-like of str or None, default=None
            Only checked: it must match ``feature_names_in_`` (or have
            ``n_features_in_`` entries).

        Returns
        -------
        ndarray of shape (n_clusters,), object
        """
        self._fitted_engine()
        if input_features is not None:
            given = np.asarray(input_features, dtype=object)
            fitted = getattr(self, "feature_names_in_", None)
            if fitted is not None and not np.array_equal(fitted, given):
                raise ValueError("input_features is not equal to feature_names_in_")
            if len(given) != self.n_features_in_:
                raise ValueError("input_features should have length equal to number of "
                                 f"features ({self.n_features_in_}), got {len(given)}")
        prefix = type(self).__name__.lower()
        return np.asarray([f"{prefix}{i}" for i in range(self._engine_clusters)], dtype=object)

    def set_output(self, *, transform=None):
        """Choose the container :meth:`transform` returns, as scikit-learn's ``set_output``.

        Parameters
        ----------
        transform : {"default", "pandas", "polars"} or None, default=None
            ``"default"``: an ndarray; ``"pandas"`` or ``"polars"``: a DataFrame
            with columns :meth:`get_feature_names_out` (and the index of a pandas
            input); None leaves the choice unchanged.  Without a choice,
            scikit-learn's global ``transform_output`` applies when scikit-learn
            is loaded.

        Returns
        -------
        self
        """
        if transform is not None:
            validate_params({"transform": transform},
                            {"transform": Options(("default", "pandas", "polars"))})
            # scikit-learn's attribute: its clone() copies it
            self._sklearn_output_config = {**getattr(self, "_sklearn_output_config", {}),
                                           "transform": transform}
        return self

    def _wrap_output(self, Z, X):
        """Z in the container chosen by :meth:`set_output` (X gives a pandas index)."""
        container = getattr(self, "_sklearn_output_config", {}).get("transform")
        if container is None:
            sklearn = sys.modules.get("sklearn")
            container = "default" if sklearn is None else sklearn.get_config()["transform_output"]
        if container == "default":
            return Z
        columns = self.get_feature_names_out()
        if container == "polars":
            import polars
            return polars.DataFrame(Z, schema=columns.tolist(), orient="row")
        import pandas
        index = X.index if isinstance(X, (pandas.DataFrame, pandas.Series)) else None
        return pandas.DataFrame(Z, index=index, columns=columns)
