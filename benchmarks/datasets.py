"""Data sets for the edgekm benchmark.

- The three real data sets of ``shared/data`` (Power, KDD Cup 99 "Intrusion",
  Shuttle): read once from the gzip CSV and cached as ``.npy`` files under
  ``benchmarks/results/cache/`` (gitignored).  Every loader returns a
  C-contiguous float32 array in file order; :func:`shuffled` permutes it with a
  fixed seed.
- :func:`drift_stream`: a drifting Gaussian-mixture stream in the spirit of
  MOA's RBF generator with moving centroids.  Its order is the point, so it is
  never shuffled.
- :func:`gaussian_mixture_chunks`: a long, stationary 10-d mixture, generated
  chunk by chunk into preallocated buffers (for the 10**7-point memory run).

Only NumPy and the standard library are used.
"""

import gzip
import os
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CACHE = HERE / "results" / "cache"

#: Where the real data sets live (override with EDGEKM_BENCH_DATA).
DATA_DIR = Path(os.environ.get("EDGEKM_BENCH_DATA",
                               HERE.parent.parent / "shared" / "data"))
if not DATA_DIR.is_dir():  # the layout of the project's machines
    DATA_DIR = Path("/work/shared/data")

#: name -> (file, rows, columns, description)
REAL = {
    "power": ("power.csv.gz", 2_049_258, 7,
              "Individual household electric power consumption (UCI), 7 numeric columns"),
    "kdd99": ("kddcup99_10pct.csv.gz", 494_021, 34,
              "KDD Cup 1999 10% subset (\"Intrusion\"), 34 numeric attributes"),
    "shuttle": ("shuttle.csv.gz", 49_097, 9,
                "Statlog (Shuttle), ODDS variant, 9 sensor attributes"),
}

SHUFFLE_SEED = 0


def load_real(name):
    """Return the whole data set ``name`` as float32 (rows, cols), in file order."""
    fname, rows, cols, _ = REAL[name]
    src = DATA_DIR / fname
    CACHE.mkdir(parents=True, exist_ok=True)
    cached = CACHE / f"{name}-{src.stat().st_size}.npy"
    if cached.exists():
        X = np.load(cached)
    else:
        with gzip.open(src, "rt", encoding="utf-8") as f:
            X = np.loadtxt(f, delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)
        X = np.ascontiguousarray(X, dtype=np.float32)
        tmp = cached.with_suffix(".tmp.npy")
        np.save(tmp, X)
        os.replace(tmp, cached)
    if X.shape != (rows, cols):
        raise RuntimeError(f"{src}: expected shape {(rows, cols)}, got {X.shape}")
    if not np.isfinite(X).all():
        raise RuntimeError(f"{src}: non-finite values")
    return X


def shuffled(X, seed=SHUFFLE_SEED):
    """A copy of X with its rows permuted by ``default_rng(seed)``."""
    return np.ascontiguousarray(X[np.random.default_rng(seed).permutation(X.shape[0])])


def _fold(u):
    """Reflect real coordinates into [0, 1] (a triangle wave of period 2)."""
    r = np.mod(u, 2.0)
    return np.where(r > 1.0, 2.0 - r, r)


DRIFT_DEFAULTS = dict(n=200_000, d=68, k_true=25, speed=2.5e-6, seed=7)


def drift_stream(n=DRIFT_DEFAULTS["n"], d=DRIFT_DEFAULTS["d"], k_true=DRIFT_DEFAULTS["k_true"],
                 speed=DRIFT_DEFAULTS["speed"], seed=DRIFT_DEFAULTS["seed"]):
    """A drifting RBF-style stream, float32 (n, d), in stream order.

    ``k_true`` centroids start uniformly in the unit cube [0, 1]^d.  Each has a
    weight (uniform in [0.2, 1], normalised), a spread sigma (uniform in
    [0.02, 0.08]) and a direction (a random unit vector).  Point t (0-based)
    picks a centroid with probability proportional to its weight; the
    centroid's position at time t is its start moved by ``speed * t`` along its
    direction, reflected at the faces of the cube; the point is that position
    plus N(0, sigma^2 I).  With the defaults every centroid travels 0.5 (half a
    cube side) over the stream, at a constant speed.

    Returns
    -------
    X : ndarray of shape (n, d), float32
    info : dict
        The generator's parameters, for the report.
    """
    rng = np.random.default_rng(seed)
    start = rng.uniform(0.0, 1.0, size=(k_true, d))
    weight = rng.uniform(0.2, 1.0, size=k_true)
    weight /= weight.sum()
    sigma = rng.uniform(0.02, 0.08, size=k_true)
    direction = rng.normal(size=(k_true, d))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    X = np.empty((n, d), dtype=np.float32)
    chunk = 8192
    for lo in range(0, n, chunk):
        hi = min(lo + chunk, n)
        t = np.arange(lo, hi, dtype=np.float64)
        which = rng.choice(k_true, size=hi - lo, p=weight)
        centre = _fold(start[which] + (speed * t)[:, None] * direction[which])
        X[lo:hi] = centre + sigma[which, None] * rng.normal(size=(hi - lo, d))
    info = dict(n=n, d=d, k_true=k_true, speed_per_point=speed, seed=seed,
                distance_travelled=speed * (n - 1),
                sigma_range=[0.02, 0.08], weight_range=[0.2, 1.0])
    return X, info


def gaussian_mixture_chunks(n_total, d=10, k_true=10, chunk=65_536, seed=11):
    """Yield float32 chunks (<= ``chunk`` rows) of a stationary Gaussian mixture.

    Centres are uniform in [-10, 10]^d, spreads 1.  The chunks reuse two
    preallocated buffers, so the generator itself keeps memory flat; a yielded
    chunk is only valid until the next one is requested.
    """
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-10.0, 10.0, size=(k_true, d)).astype(np.float32)
    buf = np.empty((chunk, d), dtype=np.float32)
    scratch = np.empty_like(buf)
    labels = np.empty(chunk, dtype=np.intp)
    done = 0
    while done < n_total:
        m = min(chunk, n_total - done)
        rng.standard_normal(dtype=np.float32, out=buf[:m])
        labels[:m] = rng.integers(0, k_true, size=m)
        np.take(centres, labels[:m], axis=0, out=scratch[:m])
        buf[:m] += scratch[:m]
        yield buf[:m]
        done += m
