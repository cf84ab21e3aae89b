"""Centroid versions for the device-side tests (assignment, filter, pull)."""

import numpy as np

from tools.versions import make_version

__all__ = ["blobs", "make_version"]


def blobs(n, k=5, d=4, seed=0, shift=0.0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=10.0, size=(k, d))
    labels = rng.integers(0, k, n)
    X = centers[labels] + rng.normal(size=(n, d)) + shift
    return X.astype(dtype), centers
