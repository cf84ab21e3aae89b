"""Data for edgekm: the bundled Shuttle data set, user files and a drifting stream.

:func:`make_rbf_drift` generates a stream whose cluster centres move (MOA's
RBF generator with drift, of the kind the paper's *Drift* data set came from).

Everything here depends on NumPy and the standard library only, so that it runs
on a device.  See ``README.md`` in this folder for the data set's citation and
provenance.
"""

import gzip
import os
import warnings
from importlib import resources

import numpy

from .._io import _float_dtype, _is_number, _values
from .drift import RBFDriftModel, make_rbf_drift

__all__ = ["load_shuttle", "load_array", "make_rbf_drift", "RBFDriftModel"]

_SHUTTLE = "shuttle.csv.gz"
_SHUTTLE_LABELS = "shuttle_labels.csv.gz"
_NPY_MAGIC = b"\x93NUMPY"


def _read_bundled(name, dtype):
    with resources.as_file(resources.files(__name__) / name) as path:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return numpy.loadtxt(f, delimiter=",", skiprows=1, dtype=dtype, ndmin=2)


def load_shuttle(return_labels=False, dtype=numpy.float32):
    """Load the Statlog (Shuttle) data set that ships with edgekm (ODDS variant).

    Parameters
    ----------
    return_labels : bool, default=False
        Also return the anomaly labels (0 normal, 1 anomaly).  They are for
        evaluation only, never features.
    dtype : numpy floating dtype, default=numpy.float32
        dtype of the returned features.

    Returns
    -------
    X : ndarray of shape (49097, 9)
        The nine sensor attributes, in file order, C-contiguous.
    y : ndarray of shape (49097,), dtype int64
        The labels; only returned when ``return_labels`` is true.

    Examples
    --------
    >>> from edgekm.datasets import load_shuttle
    >>> X, y = load_shuttle(return_labels=True)
    >>> X.shape, X.dtype, int(y.sum())
    ((49097, 9), dtype('float32'), 3511)
    """
    X = numpy.ascontiguousarray(_read_bundled(_SHUTTLE, _float_dtype(dtype)))
    if not return_labels:
        return X
    y = _read_bundled(_SHUTTLE_LABELS, numpy.int64)[:, 0].copy()
    return X, y


def _is_gzip_csv(name):
    return name.lower().endswith(".csv.gz")


def _open_text(path):
    if _is_gzip_csv(os.fspath(path)):
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, "rt", encoding="utf-8", newline="")


def _scan_csv(path):
    """Read a CSV file line by line; return (header_line_or_None, first bad-line message).

    This is the slow path, used to decide whether the first line is a header and
    to explain a parse failure precisely.  The message is None when every data line
    is well formed.
    """
    header = None
    n_cols = None
    first_data_line = None
    with _open_text(path) as f:
        for lineno, line in enumerate(f, start=1):
            text = line.strip()
            if not text:
                continue
            cells = [c.strip() for c in text.split(",")]
            if header is None and first_data_line is None:
                if not all(_is_number(c) for c in cells):
                    header = lineno
                    continue
            if first_data_line is None:
                first_data_line = lineno
                n_cols = len(cells)
            elif len(cells) != n_cols:
                return header, (
                    f"line {lineno} has {_values(len(cells))} but line {first_data_line} "
                    f"has {_values(n_cols)} (ragged rows)"
                )
            for col, cell in enumerate(cells, start=1):
                if not _is_number(cell):
                    return header, (
                        f"line {lineno}, column {col}: {cell!r} is not a number"
                    )
    return header, None


def _first_line_is_header(path):
    with _open_text(path) as f:
        for line in f:
            text = line.strip()
            if text:
                return not all(_is_number(c.strip()) for c in text.split(","))
    return False


def _load_csv(path, dtype):
    skip = 1 if _first_line_is_header(path) else 0
    try:
        with _open_text(path) as f:
            # Skip the header ourselves: loadtxt's skiprows counts blank lines too.
            if skip:
                for line in f:
                    if line.strip():
                        break
            with warnings.catch_warnings():
                # An empty body warns; we report it as an error below instead.
                warnings.simplefilter("ignore", UserWarning)
                X = numpy.loadtxt(f, delimiter=",", comments=None, dtype=dtype, ndmin=2)
    except ValueError as exc:
        _, problem = _scan_csv(path)
        raise ValueError(f"{path}: {problem or exc}") from None
    if X.shape[0] == 0:
        raise ValueError(f"{path}: the file has no data rows")
    return X


def load_array(path, dtype=numpy.float32):
    """Load a 2-D data array from a ``.npy``, ``.csv`` or ``.csv.gz`` file.

    A CSV file is comma-separated with one sample per line; blank lines are
    ignored.  Its first line is skipped as a header when any of its cells is
    not a number.

    Parameters
    ----------
    path : str or os.PathLike
        The file.  The extension selects the format.
    dtype : numpy floating dtype, default=numpy.float32
        dtype of the result.

    Returns
    -------
    X : ndarray of shape (n_samples, n_features)
        C-contiguous, of the requested dtype.

    Raises
    ------
    ValueError
        If the file is missing, the extension is not one of the three above, a
        CSV row has a different number of values than the first, a cell is not
        a number, or the data is not a non-empty 2-D numeric array.

    Examples
    --------
    >>> import tempfile, os
    >>> from edgekm.datasets import load_array
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = os.path.join(tmp, "points.csv")
    ...     with open(path, "w") as f:
    ...         _ = f.write("x,y\\n1,2\\n3,4\\n")
    ...     load_array(path)
    array([[1., 2.],
           [3., 4.]], dtype=float32)
    """
    dt = _float_dtype(dtype)
    name = os.fspath(path)
    if not os.path.exists(name):
        raise ValueError(f"data file not found: {name}")
    if not os.path.isfile(name):
        raise ValueError(f"not a regular file: {name}")

    lower = name.lower()
    if lower.endswith(".npy"):
        with open(name, "rb") as f:
            magic = f.read(len(_NPY_MAGIC))
        if magic != _NPY_MAGIC:
            raise ValueError(f"{name}: not a .npy file (it does not start with the NumPy header)")
        try:
            X = numpy.load(name, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise ValueError(f"{name}: cannot read as a .npy file ({exc})") from None
        if not isinstance(X, numpy.ndarray) or X.dtype.kind not in "biuf":
            kind = X.dtype if isinstance(X, numpy.ndarray) else type(X).__name__
            raise ValueError(f"{name}: expected a numeric array, got {kind}")
    elif lower.endswith(".csv") or _is_gzip_csv(lower):
        try:
            X = _load_csv(name, dt)
        except UnicodeDecodeError as exc:
            raise ValueError(f"{name}: not a UTF-8 text file ({exc.reason})") from None
        except (OSError, EOFError) as exc:
            raise ValueError(f"{name}: cannot read ({exc})") from None
    else:
        ext = os.path.splitext(name)[1] or "(none)"
        raise ValueError(
            f"{name}: unsupported file extension {ext}; expected .npy, .csv or .csv.gz"
        )

    if X.ndim != 2:
        raise ValueError(
            f"{name}: expected a 2-D array of shape (n_samples, n_features), "
            f"got shape {X.shape}"
        )
    if X.size == 0:
        raise ValueError(f"{name}: the data is empty (shape {X.shape})")
    return numpy.ascontiguousarray(X, dtype=dt)
