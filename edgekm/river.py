"""The river adapter: :class:`StreamingKMeans` as a river clusterer.

A river user puts it in a pipeline like any river clusterer::

    from river import preprocessing
    from edgekm.river import StreamingKMeans
    model = preprocessing.StandardScaler() | StreamingKMeans(n_clusters=3, seed=0)

Importing this module imports river (``pip install edgekm[river]``);
``import edgekm`` never does.  The adapter runs the fixed-memory
:class:`edgekm.StreamingKMeans` underneath, which maps a dict's keys to columns
(the keys of the first dict, sorted) and has a fixed dimension: a dict with a
new key or without one of the first dict's keys raises ``ValueError``.
"""

import numpy as np
from river import base

from . import _defaults
from .exceptions import NotFittedError
from .streaming import StreamingKMeans as _StreamingKMeans

__all__ = ["StreamingKMeans"]


class StreamingKMeans(base.Clusterer):
    """Streaming k-means in fixed memory, with fast queries, for river.

    The river face of :class:`edgekm.StreamingKMeans`: the same parameters
    (``seed`` is its ``random_state``, river's name), dicts of features in, a
    cluster number out.  The columns are the keys of the first dict, in sorted
    order, so the order a dict was built in does not matter.

    Parameters
    ----------
    n_clusters : int, default=8
    algorithm : {"ct", "cc", "rcc", "onlinecc", "sequential"}, default="cc"
    coreset_size : int or None, default=None
        Bucket size m; ``40 * n_clusters`` when None.
    merge_degree : int, default=2
    nesting_depth : int, default=3
    switch_threshold : float, default=1.2
    n_init : int, default=10
    max_iter : int, default=20
    max_levels : int or None, default=None
    dtype : {numpy.float32, numpy.float64}, default=numpy.float32
    seed : int or None, default=None
        Seeds the model's own generator: the same seed and stream give the
        same clusters on every platform.

    The parameters are stored as given and validated by the first
    :meth:`learn_one`; :class:`edgekm.StreamingKMeans` documents each one.

    Attributes
    ----------
    model_ : edgekm.StreamingKMeans or None
        The estimator underneath, created by the first :meth:`learn_one`
        (``model_.cluster_centers_``, ``model_.coreset()``, ...).

    Notes
    -----
    Before it has seen ``n_clusters`` points the model has no centres, and
    :meth:`predict_one` answers 0, as river expects inference to work from the
    first event.  The dimension is fixed when the structure is allocated, so
    river's checks of emerging and disappearing features are skipped
    (:meth:`_unit_test_skips`).

    Examples
    --------
    >>> import random
    >>> from river import preprocessing
    >>> from edgekm.river import StreamingKMeans
    >>> rng = random.Random(0)
    >>> stream = [{"x": c + rng.gauss(0, 0.1), "y": 2 * c + rng.gauss(0, 0.1)}
    ...           for c in rng.choices([0, 5, 10], k=600)]
    >>> model = preprocessing.StandardScaler() | StreamingKMeans(n_clusters=3, seed=0)
    >>> for x in stream:
    ...     model.learn_one(x)
    >>> labels = {c: model.predict_one({"x": c, "y": 2 * c}) for c in (0, 5, 10)}
    >>> len(set(labels.values()))
    3
    >>> kmeans = model["StreamingKMeans"]
    >>> sorted(kmeans.centers[labels[10]])
    ['x', 'y']
    """

    def __init__(self, n_clusters: int = 8, algorithm: str = "cc", coreset_size: int | None = None,
                 merge_degree: int = 2, nesting_depth: int = _defaults.DEFAULT_NESTING_DEPTH,
                 switch_threshold: float = _defaults.DEFAULT_SWITCH_THRESHOLD,
                 n_init: int = _defaults.DEFAULT_N_INIT, max_iter: int = _defaults.DEFAULT_MAX_ITER,
                 max_levels: int | None = None, dtype: type = np.float32,
                 seed: int | None = None):
        # stored as given (river's clone reads them back by name); validated on first use
        for name, value in list(locals().items()):
            if name != "self":
                setattr(self, name, value)
        self.model_ = None

    def _model(self):
        """The estimator underneath, created from the current parameters on first use."""
        if self.model_ is None:
            params = self._get_params()
            params["random_state"] = params.pop("seed")
            self.model_ = _StreamingKMeans(**params)
        return self.model_

    def learn_one(self, x, w=1.0):
        """Add one point, a dict of features (``w``: its weight, > 0)."""
        self._model().learn_one(x, w)

    def predict_one(self, x):
        """The cluster number of a dict of features (0 before the model has centres)."""
        try:
            return self._model().predict_one(x)
        except NotFittedError:
            return 0

    def learn_many(self, X):
        """Add the rows of a pandas DataFrame, columns taken by name."""
        self._model().learn_many(X)

    def predict_many(self, X):
        """The cluster numbers of the rows of a pandas DataFrame, as a Series."""
        try:
            return self._model().predict_many(X)
        except NotFittedError:
            import pandas
            return pandas.Series(0, index=X.index, dtype=np.int32)

    @property
    def centers(self):
        """The centres, as river's clusterers give them: {cluster: {feature: value}}."""
        model = self._model()
        keys = model._feature_keys or range(model.n_features_in_)
        return {i: dict(zip(keys, map(float, row)))
                for i, row in enumerate(model.cluster_centers_)}

    @classmethod
    def _unit_test_params(cls):
        yield {"n_clusters": 3, "seed": 42}
        yield {"n_clusters": 2, "algorithm": "onlinecc", "dtype": np.float64, "seed": 7}

    def _unit_test_skips(self):
        # A fixed-dimension structure, allocated once for the first point's features,
        # cannot take emerging features nor answer without some: these checks feed
        # dicts with keys added or removed, which learn_one refuses by design.
        return {"check_emerging_features", "check_disappearing_features",
                "check_radically_disappearing_features"}
