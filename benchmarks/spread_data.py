"""Data sets of the spread benchmarks (``calibration.py``, ``accuracy.py``).

Every set is standardised per column (zero mean, unit variance; constant
columns are dropped), because the raw columns of KDD99 and Shuttle differ by
many orders of magnitude and a few would otherwise be the whole cost.  Each is
shuffled with a fixed seed (streams are stationary).

- ``power``, ``kdd99``, ``shuttle``: the real sets of ``shared/data``;
- ``digits``: scikit-learn's bundled digits (1,797 x 64);
- ``kdd99-poly``: the high-dimensional set built from what is on disk: the 34
  standardised KDD99 attributes and all their pairwise products (degree-2
  polynomial features, 34 + 595 = 629 columns), standardised again.  fetch_*
  data sets need the network, which this machine does not have.
- ``blobs``: 8 Gaussian blobs in d = 10 (unit variance, centres uniform in
  [-10, 10]^10), 1.5 M points.
"""

import numpy as np

from datasets import load_real


def _standardise(X):
    X = np.asarray(X, dtype=np.float64)
    sd = X.std(axis=0)
    X = (X[:, sd > 0] - X.mean(axis=0)[sd > 0]) / sd[sd > 0]
    return X


def load(name, max_rows=None, seed=0):
    """(X float32 C-contiguous, description) of one data set, shuffled."""
    rng = np.random.default_rng(seed)
    if name in ("power", "kdd99", "shuttle"):
        X = _standardise(load_real(name))
        desc = f"{name}, standardised"
    elif name == "digits":
        from sklearn.datasets import load_digits
        X = _standardise(load_digits().data)
        desc = "sklearn digits, standardised"
    elif name == "kdd99-poly":
        base = load_real("kdd99")
        base = base[rng.permutation(len(base))[:max_rows or len(base)]]
        Z = _standardise(base)
        i, j = np.triu_indices(Z.shape[1])
        X = _standardise(np.concatenate([Z, Z[:, i] * Z[:, j]], axis=1))
        desc = f"KDD99 degree-2 polynomial features ({X.shape[1]} columns), standardised"
    elif name == "blobs":
        centres = rng.uniform(-10, 10, size=(8, 10))
        n = 1_500_000
        X = centres[rng.integers(0, 8, n)] + rng.normal(size=(n, 10))
        desc = "8 Gaussian blobs, d = 10, unit variance"
    else:
        raise ValueError(name)
    X = X[rng.permutation(len(X))]
    if max_rows is not None and len(X) > max_rows:
        X = X[:max_rows]
        desc += f", first {max_rows:,} rows after shuffling"
    return np.ascontiguousarray(X, dtype=np.float32), desc
