"""Input and parameter validation: done once, in Python, before any kernel runs.

The kernels assume what is checked here: C-contiguous arrays of the model
dtype, finite values, weights > 0 and parameters within :data:`CONSTRAINTS`.
"""

import math
import numbers
import operator
import warnings

import numpy as np

from . import _defaults

_DTYPES = {np.dtype(np.float32): np.float32, np.dtype(np.float64): np.float64}


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


# ---------------------------------------------------------------- constraints
class Interval:
    """Numbers of ``type`` (``numbers.Integral`` or ``numbers.Real``; never a bool) between
    ``left`` and ``right`` (None: unbounded), ``closed`` at "both", "left", "right" or
    "neither" end.  A Real is never NaN; with ``finite`` it is never infinite either."""

    def __init__(self, type, left, right, *, closed="both", finite=False, note=None):
        if type not in (numbers.Integral, numbers.Real) or closed not in (
                "both", "left", "right", "neither"):
            raise ValueError(f"bad Interval({type!r}, closed={closed!r})")
        self.type, self.left, self.right, self.closed = type, left, right, closed
        self.finite, self.note = finite, note

    def is_satisfied_by(self, value):
        if isinstance(value, bool) or not isinstance(value, self.type):
            return False
        if self.type is numbers.Real and (
                math.isnan(value) or (self.finite and not math.isfinite(value))):
            return False
        if self.left is not None:
            if value < self.left or (value == self.left and self.closed in ("right", "neither")):
                return False
        if self.right is not None:
            if value > self.right or (value == self.right and self.closed in ("left", "neither")):
                return False
        return True

    def __str__(self):
        noun = ("an int" if self.type is numbers.Integral
                else "a finite number" if self.finite else "a number")
        shut_left, shut_right = self.closed in ("both", "left"), self.closed in ("both", "right")
        if self.left is None and self.right is None:
            return noun
        if self.right is None:
            return f"{noun} {'>=' if shut_left else '>'} {self.left}"
        if self.left is None:
            return f"{noun} {'<=' if shut_right else '<'} {self.right}"
        return (f"{noun} in {'[' if shut_left else '('}{self.left}, {self.right}"
                f"{']' if shut_right else ')'}")


class Options:
    """One of the given values (compared with ==)."""

    def __init__(self, values, *, note=None):
        self.values, self.note = tuple(values), note

    def is_satisfied_by(self, value):
        try:
            return any(value == v for v in self.values)
        except (TypeError, ValueError):      # e.g. an array: == is not a truth value
            return False

    def __str__(self):
        return "one of " + ", ".join(repr(v) for v in self.values)


class Satisfies:
    """Whatever ``predicate`` accepts, described as ``description``."""

    def __init__(self, predicate, description, *, note=None):
        self.predicate, self.description, self.note = predicate, description, note

    def is_satisfied_by(self, value):
        return bool(self.predicate(value))

    def __str__(self):
        return self.description


def _alternatives(rule):
    return list(rule) if isinstance(rule, (list, tuple)) else [rule]


def _satisfied(rule, value):
    return any(value is None if r is None else r.is_satisfied_by(value)
               for r in _alternatives(rule))


def describe(rule, *, json=False):
    """The words for a rule: ``"None or an int >= 1"``, or in a JSON body (``json``)
    ``"an int >= 1 or null"``."""
    alts = _alternatives(rule)
    words = [str(r) for r in alts if r is not None]
    if None in alts:
        words = words + ["null"] if json else ["None"] + words
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


#: The one table of parameter constraints: parameter name -> rule.  A rule is a
#: constraint (:class:`Interval`, :class:`Options`, :class:`Satisfies`) or a list of
#: them, where ``None`` in the list admits None.  A name means the same thing wherever
#: the library takes it; a layer with limits of its own (the wire's point limit, the
#: HTTP API's caps) passes those rules to :func:`validate_params`.
CONSTRAINTS = {
    # the estimator (StreamingKMeans) and the solvers
    "n_clusters": Interval(numbers.Integral, 1, None),
    "algorithm": Options(_defaults.ALGORITHMS),
    "coreset_size": [None, Interval(numbers.Integral, 1, None)],
    "merge_degree": Interval(numbers.Integral, 2, _defaults.MAX_MERGE_DEGREE),
    "nesting_depth": Interval(numbers.Integral, 1, 4),
    "switch_threshold": Interval(numbers.Real, 1, None, closed="neither", finite=True),
    "n_init": Interval(numbers.Integral, 1, None),
    "max_iter": Interval(numbers.Integral, 1, None),
    "max_levels": [None, Interval(numbers.Integral, 1, _defaults.MAX_COMPOSED_LEVELS)],
    "dtype": Satisfies(lambda v: v is not None and _dtype_or_none(v) is not None,
                       "numpy.float32 or numpy.float64"),
    "random_state": Satisfies(
        lambda v: v is None or _is_int(v) or isinstance(
            v, (np.random.RandomState, np.random.Generator)),
        "None, an int, a numpy RandomState or a numpy Generator"),
    "size": [None, Interval(numbers.Integral, 1, None)],
    "trim": Interval(numbers.Real, 0, 0.5, closed="left"),
    "windows": [None, Interval(numbers.Integral, 1, None)],
    "split_every": Interval(numbers.Integral, 2, None),
    "n_threads": [None, Interval(numbers.Integral, 1, None)],
    # data sources and generators
    "chunk_rows": Interval(numbers.Integral, 1, None),
    "n_samples": Interval(numbers.Integral, 1, None),
    "n_features": Interval(numbers.Integral, 1, None),
    "n_centers": Interval(numbers.Integral, 1, None),
    "seed": Interval(numbers.Integral, 0, None),
    "speed": Interval(numbers.Real, 0, None, finite=True),
    # the edge filter, the device and the aggregator
    "anomaly_threshold": Interval(numbers.Real, 0, None),
    "window_seconds": Interval(numbers.Real, 0, None, closed="neither", finite=True),
    "timeout": Interval(numbers.Real, 0, None, finite=True),
    "backoff_base": Interval(numbers.Real, 0, None, finite=True),
    "backoff_max": Interval(numbers.Real, 0, None, finite=True),
    "max_retries": Interval(numbers.Integral, 0, None),
    "max_pending": Interval(numbers.Integral, 2, None),
    "max_frame_bytes": Interval(numbers.Integral, 1, None),
    "max_points": Interval(numbers.Integral, 1, None),
    "max_features": Interval(numbers.Integral, 1, None),
    "max_skew": Interval(numbers.Integral, 1, None),
    "retain_windows": [None, Interval(numbers.Integral, 1, None)],
    "compact_windows": [None, Interval(numbers.Integral, 1, None)],
    "max_device_weight": [None, Interval(numbers.Real, 0, None, closed="neither", finite=True)],
    "publish_trim": Interval(numbers.Real, 0, 0.5, closed="left"),
    "checkpoint_interval": [None, Interval(numbers.Real, 0, None, closed="neither")],
    "every_seconds": [None, Interval(numbers.Real, 0, None, closed="neither", finite=True)],
    "every_weight": [None, Interval(numbers.Real, 0, None, closed="neither", finite=True)],
    "drift_threshold": [None, Interval(numbers.Real, 0, None, closed="neither", finite=True)],
    "percent": Interval(numbers.Real, 0, 100, closed="right"),
    # canary gates (edgekm.sync.cloud.gate)
    "auto_promote_after": [None, Interval(numbers.Integral, 1, None)],
    "min_points": [None, Interval(numbers.Integral, 1, None)],
    "tail_margin": [None, Interval(numbers.Real, 0, 1, closed="left")],
    "cost_margin": [None, Interval(numbers.Real, 0, None, finite=True)],
    "z": [None, Interval(numbers.Real, 0, None, closed="neither", finite=True)],
    "version": Interval(numbers.Integral, 1, None),
    "max_waiting": Interval(numbers.Integral, 0, None),
    "max_wait": Interval(numbers.Real, 0, None, finite=True),
}


def validate_params(values, rules=None, *, error=ValueError, json=False):
    """Check ``values`` (name -> value, checked in order) against the table.

    Each name is checked against ``rules[name]`` when ``rules`` has it, else against
    :data:`CONSTRAINTS`.  The first value that fails raises ``error`` with the one
    message pattern ``The 'NAME' parameter must be RULE; got VALUE.`` or, for a JSON
    request body (``json=True``), ``'NAME' must be RULE`` (None spelt null).

    Returns a dict of the values, ints (numpy's too) as Python ints.
    """
    out = {}
    for name, value in values.items():
        rule = rules[name] if rules is not None and name in rules else CONSTRAINTS[name]
        if not _satisfied(rule, value):
            desc = describe(rule, json=json)
            if json:
                raise error(f"'{name}' must be {desc}")
            notes = [r.note for r in _alternatives(rule) if r is not None and r.note]
            note = f" ({notes[0]})" if notes else ""
            raise error(f"The '{name}' parameter must be {desc}; got {value!r}{note}.")
        out[name] = int(value) if _is_int(value) else value
    return out


def check_int(name, value, minimum, maximum=None, *, allow_none=False, error=ValueError):
    """``value`` as an int in [minimum, maximum], or None when ``allow_none``; else ``error``."""
    rule = Interval(numbers.Integral, minimum, maximum)
    return validate_params({name: value}, {name: [None, rule] if allow_none else rule},
                           error=error)[name]


def check_coreset_size(n_clusters, coreset_size):
    """The coreset size for ``n_clusters``: ``coreset_size`` or the default, >= n_clusters."""
    k, m = n_clusters, coreset_size
    if m is None:
        m = _defaults.CORESET_SIZE_PER_CLUSTER * k
    if m < k:
        raise ValueError(f"The 'coreset_size' parameter must be >= n_clusters={k}; got {m}.")
    return int(m)


def _dtype_or_none(value):
    try:
        return _DTYPES.get(np.dtype(value))
    except TypeError:
        return None


def check_params(params):
    """Validate constructor parameters; return the resolved engine settings.

    Raises ``ValueError`` naming the parameter, the allowed values and what was given.
    """
    validate_params(params)
    k = params["n_clusters"]
    algorithm = params["algorithm"]
    m = check_coreset_size(k, params["coreset_size"])
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


# ---------------------------------------------------------------- feature names
def feature_names(X):
    """The column names of a DataFrame ``X`` as an object ndarray, or None.

    scikit-learn's rule, without importing pandas: only a table with a ``columns``
    attribute (pandas, polars) has names, and only when every name is a ``str``;
    names of mixed ``str`` and other types raise ``TypeError``.
    """
    if isinstance(X, np.ndarray) or not hasattr(X, "columns"):
        return None
    names = np.asarray(list(X.columns), dtype=object)
    if len(names) == 0:
        return None
    types = sorted({type(name).__qualname__ for name in names})
    if len(types) > 1 and "str" in types:
        raise TypeError(
            "Feature names are only supported if all input features have string names, "
            f"but your input has {types} as feature name / column name types. Convert "
            "them all to strings (X.columns = X.columns.astype(str)) or to another type.")
    return names if types == ["str"] else None


def _listed(names, limit=5):
    lines = [f"- {name}\n" for name in names[:limit]]
    return "".join(lines) + ("- ...\n" if len(names) > limit else "")


def check_feature_names(fitted, X, estimator="StreamingKMeans"):
    """Check the names of ``X`` against the ``fitted`` ones, as scikit-learn does.

    Different names, or the same names in another order, raise ``ValueError``;
    names on one side only warn (``UserWarning``), since plain arrays are
    positional.
    """
    names = feature_names(X)
    if fitted is None and names is None:
        return
    if fitted is None or names is None:
        warnings.warn(f"X has feature names, but {estimator} was fitted without feature names"
                      if fitted is None else
                      f"X does not have valid feature names, but {estimator} was fitted "
                      "with feature names", UserWarning)
        return
    if len(names) == len(fitted) and (names == fitted).all():
        return
    unseen, missing = sorted(set(names) - set(fitted)), sorted(set(fitted) - set(names))
    message = "The feature names should match those that were passed during fit.\n"
    if unseen:
        message += "Feature names unseen at fit time:\n" + _listed(unseen)
    if missing:
        message += "Feature names seen at fit time, yet now missing:\n" + _listed(missing)
    if not unseen and not missing:
        message += "Feature names must be in the same order as they were in fit.\n"
    raise ValueError(message)


def dict_keys_in_order(x, keys, name="x"):
    """The keys of the dict ``x`` in column order: ``keys`` when the model has them
    (``x`` must have exactly those keys), else ``x``'s keys sorted.  ``x`` may be any
    container of the names (a DataFrame's columns as a dict's keys)."""
    if keys is None:
        try:
            return tuple(sorted(x))
        except TypeError:
            raise TypeError(
                "The keys of the first dict fix the columns in sorted order, so they must "
                f"be comparable with each other (e.g. all str); got {list(x)!r}.") from None
    if len(x) != len(keys) or any(key not in x for key in keys):
        known = set(keys)
        new = [key for key in x if key not in known]
        missing = [key for key in keys if key not in x]
        raise ValueError(
            f"{name} must have exactly the model's features {list(keys)!r}; "
            + "; ".join(part for part in (f"new key(s) {new!r}" if new else "",
                                          f"missing key(s) {missing!r}" if missing else "")
                        if part)
            + ". A fixed-dimension model cannot take emerging or disappearing features.")
    return keys
