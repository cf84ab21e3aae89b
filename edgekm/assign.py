"""Offline assignment of points to a published centroid version.

:class:`Assigner` wraps one :class:`edgekm.sync.wire.version.CentroidVersion`:
for each point it gives the nearest centre (label), the squared distance,
the anomaly score and the version id, in the compiled kernel
(``cython_src/_assign.pyx``, GIL released) or its NumPy twin
(``edgekm/_reference/assign.py``), chosen by ``edgekm._backend``.

Anomaly score: for a point with label ``c`` and squared distance ``s``,
``s / q99[c]`` where ``q99[c]`` is the version's 99th percentile of the
squared distance in cluster ``c``; when ``q99[c] == 0`` the score is 0.0 if
``s == 0`` and ``+inf`` otherwise.  A score above 1 lies beyond that
cluster's 99th percentile.  Versions published by edgekm now put a positive floor
under every quantile (:func:`edgekm.solve.cluster_statistics`), so ``q99[c] == 0``
only comes from older versions or hand-made ones; :class:`edgekm.EdgeFilter` counts
such infinite scores instead of forwarding them.
"""

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np

from . import _backend
from ._validation import check_array, validate_params

__all__ = ["Assigner", "AssignResult"]

#: below this many points a batch runs in one thread (a thread hand-off costs ~50 µs)
MIN_POINTS_PER_THREAD = 16384

_POOL = None
_POOL_LOCK = threading.Lock()


def _pool(n_threads):
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL._max_workers < n_threads:
            _POOL = ThreadPoolExecutor(max_workers=n_threads, thread_name_prefix="edgekm-assign")
        return _POOL


def _cpu_count():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class AssignResult(NamedTuple):
    """Result of :meth:`Assigner.assign`.

    Attributes
    ----------
    labels : ndarray of shape (n_samples,), int32
    distances : ndarray of shape (n_samples,), float64
        Squared Euclidean distance to the assigned centre.
    scores : ndarray of shape (n_samples,), float64
        Anomaly score (see :mod:`edgekm.assign`).
    version : int
        The centroid version the labels refer to.
    """

    labels: np.ndarray
    distances: np.ndarray
    scores: np.ndarray
    version: int


class Assigner:
    """Assign points to the centres of one centroid version.

    Parameters
    ----------
    version : CentroidVersion
        A decoded version (:func:`edgekm.sync.wire.version.decode_version`).  Points
        must have its ``n_features``; they are converted to its dtype.
    n_threads : int or None, default=None
        Threads for large batches (each thread takes a contiguous slice; the
        results do not depend on it).  None: the CPUs this process may use.

    Examples
    --------
    >>> import numpy as np
    >>> from edgekm.sync.wire.version import CentroidVersion
    >>> v = CentroidVersion(model="demo", version=3, parent=None, created=0.0,
    ...                     centers=np.array([[0.0, 0.0], [10.0, 0.0]]),
    ...                     cluster_weights=np.array([5.0, 5.0]),
    ...                     quantiles=np.array([[0.5, 1.0, 2.0], [0.5, 1.0, 2.0]]),
    ...                     training_weight=10.0, cost=5.0)
    >>> result = Assigner(v).assign([[1.0, 0.0], [9.0, 3.0]])
    >>> result.labels.tolist(), result.distances.tolist(), result.scores.tolist()
    ([0, 1], [1.0, 10.0], [0.5, 5.0])
    >>> Assigner(v).assign_one(np.array([10.0, 1.0]))
    (1, 1.0, 0.5, 3)
    """

    def __init__(self, version, *, n_threads=None):
        centers = getattr(version, "centers", None)
        quantiles = getattr(version, "quantiles", None)
        if centers is None or quantiles is None or not hasattr(version, "version"):
            raise TypeError("Assigner takes a CentroidVersion (edgekm.sync.wire.version); got "
                            f"{type(version).__name__}.")
        centers = np.asarray(centers)
        if centers.ndim != 2 or centers.dtype not in (np.float32, np.float64):
            raise ValueError("the version's centres must be a float32 or float64 (k, d) array.")
        quantiles = np.asarray(quantiles, dtype=np.float64)
        if quantiles.shape != (centers.shape[0], 3):
            raise ValueError(f"the version's quantiles must have shape ({centers.shape[0]}, 3).")
        n_threads = validate_params({"n_threads": n_threads})["n_threads"]
        self.version = version
        self.n_threads = n_threads
        self.dtype = centers.dtype.type
        self.n_clusters, self.n_features = centers.shape
        self.version_id = int(version.version)
        self._kernel = _backend.assign.AssignKernel(
            np.ascontiguousarray(centers, dtype=np.float64),
            np.ascontiguousarray(quantiles[:, 2]), self.version_id,
            centers.dtype == np.float32)

    def __repr__(self):
        return (f"Assigner(model={getattr(self.version, 'model', None)!r}, "
                f"version={self.version_id}, k={self.n_clusters}, d={self.n_features})")

    def assign(self, X):
        """Labels, squared distances and anomaly scores of the rows of X.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        AssignResult
        """
        X = check_array(X, self.dtype, n_features=self.n_features, estimator="Assigner",
                        min_samples=0)
        n = X.shape[0]
        labels = np.empty(n, dtype=np.int32)
        dist = np.empty(n, dtype=np.float64)
        scores = np.empty(n, dtype=np.float64)
        n_threads = self.n_threads if self.n_threads is not None else _cpu_count()
        n_threads = max(1, min(n_threads, n // MIN_POINTS_PER_THREAD))
        if n_threads == 1:
            self._kernel.assign_into(X, labels, dist, scores)
        else:
            bounds = np.linspace(0, n, n_threads + 1).astype(np.intp)
            jobs = [_pool(n_threads).submit(self._kernel.assign_into, X[a:b], labels[a:b],
                                            dist[a:b], scores[a:b])
                    for a, b in zip(bounds[:-1], bounds[1:])]
            for job in jobs:
                job.result()
        return AssignResult(labels, dist, scores, self.version_id)

    def assign_one(self, x):
        """``(label, squared distance, score, version)`` of one point.

        A C-contiguous 1-D ndarray of the version's dtype is checked and
        assigned in the compiled kernel without any allocation beyond the
        returned tuple; anything else is validated and converted first.
        """
        out = self._kernel.assign_one(x)
        if out is not None:
            return out
        raw = np.asarray(x) if not (hasattr(x, "toarray") or hasattr(x, "tocsr")) else x
        if getattr(raw, "ndim", None) != 1:
            raise ValueError(f"assign_one takes one point, a 1-D array of {self.n_features} "
                             f"numbers; got shape {getattr(raw, 'shape', None)}.")
        X = check_array(raw.reshape(1, -1), self.dtype, n_features=self.n_features,
                        name="x", estimator="Assigner")
        return self._kernel.assign_one(X[0])
