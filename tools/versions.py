"""A decoded centroid version built from data, for the tests and the assignment benchmark."""

import numpy as np

from edgekm._reference.ops import _assign
from edgekm.sync.wire.version import CentroidVersion, decode_version, encode_version


def make_version(X, centers, *, model="m", version=1, parent=None, dtype=None, created=1.0e9):
    """A decoded version whose weights and per-cluster quantiles come from assigning X."""
    centers = np.asarray(centers, dtype=dtype or np.asarray(centers).dtype)
    lab, d = _assign(np.asarray(X), centers.astype(np.float64))
    k = centers.shape[0]
    w = np.bincount(lab, minlength=k).astype(np.float64)
    q = np.zeros((k, 3))
    for c in range(k):
        if w[c]:
            q[c] = np.quantile(d[lab == c], [0.5, 0.95, 0.99], method="inverted_cdf")
    v = CentroidVersion(model=model, version=version, parent=parent, created=created,
                        centers=centers, cluster_weights=w, quantiles=q,
                        training_weight=float(w.sum()), cost=float(d.sum()))
    body, _ = encode_version(v)
    return decode_version(body)
