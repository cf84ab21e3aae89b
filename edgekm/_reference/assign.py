"""Reference of ``cython_src/_assign.pyx`` in NumPy: the test oracle and the fallback.

The same arithmetic as the compiled kernel: the squared distance of each
(point, centre) pair accumulates features into partial sum ``j % 4`` in
increasing ``j``, in float64, and is ``(s0 + s1) + (s2 + s3)``; the argmin
keeps the lowest label on ties (``ops._assign``).  The anomaly score is
``s / q99[c]`` when ``q99[c] > 0``, else ``0.0`` when ``s == 0`` and
``+inf`` otherwise.  Inputs are assumed valid.
"""

import math

import numpy as np

from .ops import _assign


def anomaly_scores(sqdist, q99_of_label):
    """Vectorised anomaly score of squared distances against their clusters' p99."""
    sqdist = np.asarray(sqdist, dtype=np.float64)
    q = np.asarray(q99_of_label, dtype=np.float64)
    out = np.where(sqdist == 0, 0.0, np.inf)
    pos = q > 0
    np.divide(sqdist, q, out=out, where=pos)
    return out


def anomaly_score_wrapper(s, q99):
    """The score of one squared distance."""
    if q99 > 0:
        return s / q99
    return 0.0 if s == 0 else math.inf


class AssignKernel:
    """Same interface as the compiled ``AssignKernel``."""

    def __init__(self, centers, q99, version, f32):
        self.centers = np.array(centers, dtype=np.float64)
        self.q99 = np.array(q99, dtype=np.float64)
        self.n_clusters, self.n_features = self.centers.shape
        self.version = int(version)
        self.f32 = bool(f32)
        self._dtype = np.dtype(np.float32 if f32 else np.float64)

    def assign_into(self, X, labels, sqdist, scores):
        if X.shape[0] == 0:
            return
        lab, dist = _assign(X, self.centers)
        labels[:] = lab
        sqdist[:] = dist
        scores[:] = anomaly_scores(dist, self.q99[lab])

    def assign_one(self, x):
        if not (isinstance(x, np.ndarray) and x.ndim == 1 and x.shape[0] == self.n_features
                and x.flags.c_contiguous and x.dtype == self._dtype
                and x.dtype.isnative):
            return None
        if not np.isfinite(x).all():
            raise ValueError("Input x contains NaN or infinity.")
        lab, dist = _assign(x.reshape(1, -1), self.centers)
        c, s = int(lab[0]), float(dist[0])
        return (c, s, anomaly_score_wrapper(s, float(self.q99[c])), self.version)
