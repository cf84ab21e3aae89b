"""Input and parameter validation: done once, in Python, before any kernel runs.

The kernels assume what is checked here: C-contiguous arrays of the model
dtype, finite values, weights > 0 and parameters within :data:`CONSTRAINTS`.
"""

import numbers
import operator

import numpy as np

from . import _defaults

_DTYPES = {np.dtype(np.float32): np.float32, np.dtype(np.float64): np.float64}


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(name, value, minimum, maximum=None, *, allow_none=False, error=ValueError):
    """``value`` as an int in [minimum, maximum], or None when ``allow_none``; else ``error``."""
    if value is None and allow_none:
        return None
    if not _is_int(value):
        raise error(f"{name} must be an integer; got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise error(f"{name} must be {bound}; got {value}")
    return int(value)


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


#: parameter -> (check, description); ``None`` is accepted where stated
CONSTRAINTS = {
    "n_clusters": (lambda v: _is_int(v) and v >= 1, "an int >= 1"),
    "algorithm": (lambda v: v in _defaults.ALGORITHMS,
                  "one of " + ", ".join(repr(a) for a in _defaults.ALGORITHMS)),
    "coreset_size": (lambda v: v is None or (_is_int(v) and v >= 1), "None or an int >= n_clusters"),
    "merge_degree": (lambda v: _is_int(v) and 2 <= v <= _defaults.MAX_MERGE_DEGREE,
                     f"an int in [2, {_defaults.MAX_MERGE_DEGREE}]"),
    "nesting_depth": (lambda v: _is_int(v) and 1 <= v <= 4, "an int in [1, 4]"),
    "switch_threshold": (lambda v: _is_real(v) and np.isfinite(v) and v > 1, "a finite float > 1"),
    "n_init": (lambda v: _is_int(v) and v >= 1, "an int >= 1"),
    "max_iter": (lambda v: _is_int(v) and v >= 1, "an int >= 1"),
    "max_levels": (lambda v: v is None or (_is_int(v) and 1 <= v <= _defaults.MAX_COMPOSED_LEVELS),
                   f"None or an int in [1, {_defaults.MAX_COMPOSED_LEVELS}]"),
    "dtype": (lambda v: v is not None and _dtype_or_none(v) is not None,
              "numpy.float32 or numpy.float64"),
    "random_state": (lambda v: v is None or _is_int(v) or isinstance(
        v, (np.random.RandomState, np.random.Generator)),
        "None, an int, a numpy RandomState or a numpy Generator"),
}


def _dtype_or_none(value):
    try:
        return _DTYPES.get(np.dtype(value))
    except TypeError:
        return None


def check_params(params):
    """Validate constructor parameters; return the resolved engine settings.

    Raises ``ValueError`` naming the parameter, the allowed values and what was given.
    """
    for name, value in params.items():
        ok, desc = CONSTRAINTS[name]
        if not ok(value):
            raise ValueError(f"The '{name}' parameter must be {desc}; got {value!r}.")
    k = params["n_clusters"]
    algorithm = params["algorithm"]
    m = params["coreset_size"]
    if m is None:
        m = _defaults.CORESET_SIZE_PER_CLUSTER * k
    if m < k:
        raise ValueError(f"The 'coreset_size' parameter must be >= n_clusters={k}; got {m}.")
    r = params["merge_degree"]
    if algorithm == "rcc":
        degrees = _defaults.rcc_degrees(r, params["nesting_depth"])
        if degrees[-1] > _defaults.MAX_MERGE_DEGREE:
            raise ValueError(
                f"merge_degree={r} with nesting_depth={params['nesting_depth']} gives an "
                f"outer merge degree of {degrees[-1]}, above {_defaults.MAX_MERGE_DEGREE}; "
                "lower one of them.")
    else:
        degrees = (r,)
    levels = params["max_levels"]
    if levels is None:
        levels = _defaults.default_max_levels(degrees[-1])
    return {
        "kind": algorithm,
        "coreset_size": int(m),
        "merge_degrees": degrees,
        "max_levels": int(levels),
        "n_init": int(params["n_init"]),
        "max_iter": int(params["max_iter"]),
        "switch_threshold": float(params["switch_threshold"]),
        "dtype": _dtype_or_none(params["dtype"]),
    }


def resolve_seed(random_state):
    """A uint64 seed from None, an int, a RandomState or a Generator."""
    if random_state is None:
        return int(np.random.SeedSequence().generate_state(1, dtype=np.uint64)[0])
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(0, 2**63 - 1, dtype=np.int64))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(0, 2**64 - 1, dtype=np.uint64, endpoint=True))
    return operator.index(random_state) & ((1 << 64) - 1)


def _first_bad_row(X):
    bad = ~np.isfinite(X)
    return int(np.flatnonzero(bad.any(axis=1))[0])


def check_array(X, dtype, *, n_features=None, name="X", estimator="StreamingKMeans",
                min_samples=1):
    """Return X as a C-contiguous 2-D array of ``dtype`` with finite values.

    Raises ``TypeError`` for sparse or complex input and ``ValueError`` for a
    wrong shape, non-numeric values, NaN/inf (naming the first bad row) or a
    feature count that differs from ``n_features``.
    """
    if hasattr(X, "toarray") or hasattr(X, "tocsr"):
        raise TypeError(
            f"{estimator} does not accept sparse input; convert it with X.toarray().")
    if hasattr(X, "__array__") or isinstance(X, (list, tuple)):
        raw = np.asarray(X)
    else:
        raise TypeError(f"{name} must be array-like of numbers; got {type(X).__name__}.")
    if np.iscomplexobj(raw):
        raise ValueError("Complex data not supported.")
    if raw.ndim != 2:
        raise ValueError(
            f"Expected a 2-D array for {name}, got {raw.ndim}-D with shape {raw.shape}. "
            "Reshape your data with X.reshape(-1, 1) for a single feature or "
            "X.reshape(1, -1) for a single sample.")
    if raw.dtype.kind not in "biuf":
        try:
            raw = raw.astype(np.float64)
        except TypeError as exc:
            raise TypeError(f"{name} must contain numbers only: {exc}") from None
        except ValueError as exc:
            raise ValueError(f"{name} must contain numbers only: {exc}") from None
    n, d = raw.shape
    if d == 0:
        raise ValueError(
            f"Found array with 0 feature(s) (shape={raw.shape}) while a minimum of 1 is required.")
    if n < min_samples:
        raise ValueError(
            f"Found array with {n} sample(s) (shape={raw.shape}) while a minimum of "
            f"{min_samples} is required.")
    if n_features is not None and d != n_features:
        raise ValueError(
            f"{name} has {d} features, but {estimator} is expecting {n_features} features "
            "as input.")
    if raw.dtype.kind == "f" and not np.isfinite(raw).all():
        raise ValueError(
            f"Input {name} contains NaN or infinity; the first bad row is {_first_bad_row(raw)}.")
    with np.errstate(over="ignore"):     # an overflow is reported below, naming the row
        out = np.ascontiguousarray(raw, dtype=dtype)
    if out.dtype.kind == "f" and raw.dtype.itemsize > out.dtype.itemsize and not np.isfinite(out).all():
        raise ValueError(
            f"Input {name} overflows {np.dtype(dtype).name}; the first bad row is "
            f"{_first_bad_row(out)}.")
    return out


def check_sample_weight(sample_weight, n_samples, name="sample_weight"):
    """float64 weights of shape (n_samples,), finite and > 0 (ones when None)."""
    if sample_weight is None:
        return np.ones(n_samples, dtype=np.float64)
    if _is_real(sample_weight):
        w = np.full(n_samples, float(sample_weight), dtype=np.float64)
    else:
        raw = np.asarray(sample_weight)
        if np.iscomplexobj(raw):
            raise ValueError(f"Complex data not supported in {name}.")
        try:
            w = raw.astype(np.float64, copy=False)
        except TypeError as exc:
            raise TypeError(f"{name} must contain numbers only: {exc}") from None
        except ValueError as exc:
            raise ValueError(f"{name} must contain numbers only: {exc}") from None
    if w.ndim != 1 or w.shape[0] != n_samples:
        raise ValueError(f"{name}.shape == {w.shape}, expected ({n_samples},).")
    bad = ~(np.isfinite(w) & (w > 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{name} must be finite and > 0 (zero, negative, NaN and infinite weights "
            f"are refused); row {i} has {float(w[i])!r}.")
    return np.ascontiguousarray(w)
