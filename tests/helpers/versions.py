"""Centroid versions for the device-side tests (assignment, filter, pull)."""

import numpy as np

from edgekm._reference.ops import _assign
from edgekm.sync.wire.version import CentroidVersion, decode_version, encode_version


def make_version(X, centers, *, model="m", version=1, parent=None, dtype=None):
    """A decoded version whose weights and quantiles come from assigning X."""
    centers = np.asarray(centers, dtype=dtype or np.asarray(centers).dtype)
    lab, d = _assign(np.asarray(X), centers.astype(np.float64))
    k = centers.shape[0]
    w = np.bincount(lab, minlength=k).astype(np.float64)
    q = np.zeros((k, 3))
    for c in range(k):
        if w[c]:
            q[c] = np.quantile(d[lab == c], [0.5, 0.95, 0.99], method="inverted_cdf")
    v = CentroidVersion(model=model, version=version, parent=parent, created=1.0e9,
                        centers=centers, cluster_weights=w, quantiles=q,
                        training_weight=float(w.sum()), cost=float(d.sum()))
    body, _ = encode_version(v)
    return decode_version(body)


def blobs(n, k=5, d=4, seed=0, shift=0.0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=10.0, size=(k, d))
    labels = rng.integers(0, k, n)
    X = centers[labels] + rng.normal(size=(n, d)) + shift
    return X.astype(dtype), centers
