"""A drifting radial-basis-function (RBF) stream, after MOA's RandomRBFGeneratorDrift.

The paper's *Drift* data set was made with the RBF generator of the MOA
framework, whose centres move with a given direction and speed (the paper's
§5; docs/algorithms.md §9).  This module is a seeded, NumPy-only generator of the
same kind, written from that description:

- ``n_centers`` centres start uniformly in the unit cube ``[0, 1]^d``.  Each
  has a weight (uniform in ``[0, 1)``, as in MOA; normalised into the
  probability of being picked), a spread ``std`` (uniform in ``std_range``)
  and a direction of travel (a uniformly random unit vector).
- Sample ``t`` (0-based) picks a centre with probability proportional to the
  weights.  Its position at time ``t`` is its start moved by ``speed * t``
  along its direction, reflected at the faces of the cube: a coordinate that
  would leave ``[0, 1]`` bounces back, as MOA's centres do.  The reflection
  has a closed form (a triangle wave of period 2), so the position at any
  ``t`` is exact and cheap, and :meth:`RBFDriftModel.centers_at` reports the
  true centres at any time.
- The point is that position plus an offset in a uniformly random direction
  whose length is ``|g| * std``, with ``g`` standard normal.  That is MOA's
  RBF point model (the distance to the centre, not each coordinate, is
  Gaussian), so the spread does not grow with the number of features.

Every draw comes from one ``numpy.random.default_rng(seed)``: the same
arguments give the same array, bit for bit, on every platform NumPy
supports.  The output is float32 and C-contiguous.

This is a generator *of the same kind* as the paper's, not its data: the
paper fitted the centres and spreads to the USCensus1990 data, which edgekm
does not ship.
"""

import numbers

import numpy

from .._validation import Interval, validate_params

__all__ = ["RBFDriftModel", "make_rbf_drift", "DEFAULT_SPEED", "DEFAULT_STD_RANGE"]

#: distance a centre travels per sample (units of the cube's side); 1e-5 is 0.5 over 50,000 samples
DEFAULT_SPEED = 1e-5
#: the spread of each centre is drawn uniformly from this interval
DEFAULT_STD_RANGE = (0.02, 0.1)

_CHUNK = 8192


_SPREAD = Interval(numbers.Real, 0, None, finite=True)


def _fold(u):
    """Reflect coordinates into [0, 1] (a triangle wave of period 2)."""
    r = numpy.mod(u, 2.0)
    return numpy.where(r > 1.0, 2.0 - r, r)


class RBFDriftModel:
    """The random parameters of one drifting RBF stream.

    Built by :func:`make_rbf_drift` (``return_model=True``); use it to know
    where the true centres are at any time.

    Attributes
    ----------
    start : ndarray of shape (n_centers, n_features), float64
        Positions at ``t = 0``, in ``[0, 1]``.
    direction : ndarray of shape (n_centers, n_features), float64
        Unit vectors of travel.
    std : ndarray of shape (n_centers,), float64
        Spread of each centre.
    weights : ndarray of shape (n_centers,), float64
        Probabilities of picking each centre (they sum to 1).
    speed : float
        Distance travelled per sample.

    Examples
    --------
    >>> import numpy as np
    >>> from edgekm.datasets import make_rbf_drift
    >>> X, model = make_rbf_drift(10, n_features=2, n_centers=3, speed=0.01, seed=0,
    ...                           return_model=True)
    >>> model
    RBFDriftModel(n_centers=3, n_features=2, speed=0.01)
    >>> moved = np.linalg.norm(model.centers_at(100) - model.centers_at(0), axis=1)
    >>> bool((moved <= 1.0 + 1e-12).all())
    True
    """

    def __init__(self, start, direction, std, weights, speed):
        self.start = start
        self.direction = direction
        self.std = std
        self.weights = weights
        self.speed = float(speed)

    @property
    def n_centers(self):
        return self.start.shape[0]

    @property
    def n_features(self):
        return self.start.shape[1]

    def centers_at(self, t):
        """The true centres after ``t`` samples.

        Parameters
        ----------
        t : float
            Time, in samples (sample ``t`` is drawn around ``centers_at(t)``).

        Returns
        -------
        ndarray of shape (n_centers, n_features), float64
        """
        return _fold(self.start + (self.speed * float(t)) * self.direction)

    def __repr__(self):
        return (f"RBFDriftModel(n_centers={self.n_centers}, n_features={self.n_features}, "
                f"speed={self.speed!r})")


def make_rbf_drift(n_samples, n_features=10, n_centers=8, speed=DEFAULT_SPEED, seed=0, *,
                   std_range=DEFAULT_STD_RANGE, return_labels=False, return_model=False):
    """Generate a drifting RBF stream (MOA's RandomRBFGeneratorDrift model), in stream order.

    Parameters
    ----------
    n_samples : int
        Number of samples (>= 1).
    n_features : int, default=10
        Dimension (>= 1).
    n_centers : int, default=8
        Number of moving centres (>= 1).
    speed : float, default=DEFAULT_SPEED
        Distance each centre travels per sample, in units of the cube's side
        (>= 0; 0 gives a stationary mixture).  A centre travels
        ``speed * (n_samples - 1)`` in all, bouncing off the cube's faces.
    seed : int, default=0
        Seed of ``numpy.random.default_rng``; the output depends on nothing else.
    std_range : (float, float), default=DEFAULT_STD_RANGE
        Interval of the centres' spreads, ``0 <= low <= high``.
    return_labels : bool, default=False
        Also return the index of the centre each sample was drawn around.
    return_model : bool, default=False
        Also return the :class:`RBFDriftModel` (true centres at any time).

    Returns
    -------
    X : ndarray of shape (n_samples, n_features), float32
    labels : ndarray of shape (n_samples,), int64
        Only with ``return_labels``.
    model : RBFDriftModel
        Only with ``return_model``.

    Examples
    --------
    >>> from edgekm.datasets import make_rbf_drift
    >>> X, model = make_rbf_drift(1000, n_features=3, n_centers=2, speed=1e-3, seed=1,
    ...                           return_model=True)
    >>> X.shape, X.dtype
    ((1000, 3), dtype('float32'))
    >>> bool((model.centers_at(999) != model.centers_at(0)).all())
    True
    """
    args = validate_params({"n_samples": n_samples, "n_features": n_features,
                            "n_centers": n_centers, "speed": speed, "seed": seed})
    n_samples, n_features, n_centers, seed = (
        args["n_samples"], args["n_features"], args["n_centers"], args["seed"])
    speed = float(speed)
    try:
        low, high = std_range
    except (TypeError, ValueError):
        raise ValueError(f"std_range must be a pair (low, high); got {std_range!r}.") from None
    validate_params({"std_range[0]": low, "std_range[1]": high},
                    {"std_range[0]": _SPREAD, "std_range[1]": _SPREAD})
    low, high = float(low), float(high)
    if high < low:
        raise ValueError(f"std_range must have low <= high; got {std_range!r}.")

    rng = numpy.random.default_rng(seed)
    start = rng.uniform(0.0, 1.0, size=(n_centers, n_features))
    direction = rng.standard_normal(size=(n_centers, n_features))
    norms = numpy.linalg.norm(direction, axis=1, keepdims=True)
    direction /= numpy.where(norms > 0, norms, 1.0)
    std = rng.uniform(low, high, size=n_centers)
    raw_weights = rng.uniform(0.0, 1.0, size=n_centers)
    if raw_weights.sum() <= 0:                 # pragma: no cover - probability 0
        raw_weights[:] = 1.0
    weights = raw_weights / raw_weights.sum()
    model = RBFDriftModel(start, direction, std, weights, speed)

    X = numpy.empty((n_samples, n_features), dtype=numpy.float32)
    labels = numpy.empty(n_samples, dtype=numpy.int64)
    cumulative = numpy.cumsum(weights)
    cumulative[-1] = 1.0
    for lo in range(0, n_samples, _CHUNK):
        hi = min(lo + _CHUNK, n_samples)
        m = hi - lo
        which = numpy.searchsorted(cumulative, rng.uniform(0.0, 1.0, size=m), side="right")
        numpy.minimum(which, n_centers - 1, out=which)
        t = numpy.arange(lo, hi, dtype=numpy.float64)
        centre = _fold(start[which] + (speed * t)[:, None] * direction[which])
        offset = rng.standard_normal(size=(m, n_features))
        lengths = numpy.linalg.norm(offset, axis=1)
        offset /= numpy.where(lengths > 0, lengths, 1.0)[:, None]
        radius = rng.standard_normal(size=m) * std[which]
        X[lo:hi] = centre + offset * radius[:, None]
        labels[lo:hi] = which
    out = (X,)
    if return_labels:
        out += (labels,)
    if return_model:
        out += (model,)
    return out[0] if len(out) == 1 else out
