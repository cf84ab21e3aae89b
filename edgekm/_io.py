"""Chunked readers of data files for the command line.

Every reader yields ``(X, advance)`` pairs: ``X`` a C-contiguous float array
of shape ``(n_rows, n_features)`` with at most ``chunk_rows`` rows, every value
finite, and ``advance`` the progress it represents in the reader's ``unit``
(rows, or bytes of the file for a CSV, whose row count is unknown until the
end).  Memory is bounded by one chunk, never by the file:

- ``.npy``: memory-mapped; the pages of the rows already read are handed
  back to the kernel (``madvise``), so the resident set stays bounded too;
- ``.csv`` and ``.csv.gz``: read line by line, parsed ``chunk_rows`` lines at
  a time; the first non-blank line is a header when any of its cells is not a
  number (as in :func:`edgekm.datasets.load_array`); blank lines are skipped.
  The delimiter is ``delimiter``, or when None the first of ``,``, ``;`` and a
  tab found in the first non-blank line.  The columns read are ``columns``
  (header names, or 1-based column numbers as in the error messages), or when
  None every column whose first data cell is a number: the others (a text
  timestamp, say) are skipped and named in ``reader.skipped``;
- ``.parquet``: ``pyarrow`` record batches (``pip install 'edgekm[parquet]'``);
  ``columns`` selects by name or number, else the non-numeric columns are
  skipped the same way;
- ``-`` (standard input): one CSV row per line, parsed as a CSV file.

A malformed input raises :class:`DataError` (a ValueError) naming the file
and the line, row or column.
"""

import gzip
import mmap
import os
import sys

import numpy as np
from edgekm.exceptions import DataError

from ._validation import validate_params

__all__ = ["DataError", "open_chunks", "SUFFIXES"]

#: the file suffixes :func:`open_chunks` reads
SUFFIXES = (".npy", ".csv", ".csv.gz", ".parquet")

STDIN = "-"


def _float_dtype(dtype):
    dt = np.dtype(dtype)
    if dt.kind != "f":
        raise ValueError(f"dtype must be a floating-point type, got {dt}")
    return dt


def open_chunks(path, chunk_rows=65536, dtype=np.float32, *, stdin=None, columns=None,
                delimiter=None):
    """A chunked reader of ``path`` (``"-"`` reads ``stdin``), chosen by its suffix.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.npy``, ``.csv``, ``.csv.gz`` or ``.parquet`` file, or ``"-"``.
    chunk_rows : int, default=65536
        The largest number of rows of one chunk.
    dtype : numpy floating dtype, default=numpy.float32
        dtype of the chunks.
    stdin : text file, default=None
        What ``"-"`` reads; ``sys.stdin`` when None.
    columns : sequence of (str or int) or None, default=None
        The columns to read, by header name or by 1-based number (a ``.npy``
        file: numbers only); None reads every numeric column.
    delimiter : str or None, default=None
        The CSV delimiter (one character); None detects ``,``, ``;`` or a tab.

    Returns
    -------
    reader : iterable of (ndarray of shape (n_rows, n_features), int)
        With the attributes ``name``, ``unit`` (``"rows"`` or ``"bytes"``),
        ``total`` (the progress of the whole input in that unit, or None when
        unknown), ``n_features`` (None until known) and ``skipped`` (the
        names of the non-numeric columns left out, known with ``n_features``).

    Raises
    ------
    DataError
        A missing file, an unsupported suffix, or (for ``.npy`` and
        ``.parquet``) a header that is not a non-empty 2-D numeric table.
    """
    chunk_rows = validate_params({"chunk_rows": chunk_rows})["chunk_rows"]
    dt = _float_dtype(dtype)
    name = os.fspath(path)
    if delimiter is not None and (len(delimiter) != 1 or delimiter in "\r\n\"" or
                                  _is_number(delimiter)):
        raise DataError(f"the delimiter must be one character (not a digit, quote or newline), "
                        f"got {delimiter!r}")
    columns = None if columns is None else list(columns)
    if columns == []:
        raise DataError("columns must name at least one column")
    if name == STDIN:
        return _LineReader(stdin if stdin is not None else sys.stdin, "<stdin>",
                           _LineParser("<stdin>", chunk_rows, dt, columns, delimiter))
    if not os.path.exists(name):
        raise DataError(f"data file not found: {name}")
    if not os.path.isfile(name):
        raise DataError(f"not a regular file: {name}")
    lower = name.lower()
    if lower.endswith(".npy"):
        return _NpyReader(name, chunk_rows, dt, columns)
    if lower.endswith(".csv") or lower.endswith(".csv.gz"):
        return _CsvFileReader(name, _LineParser(name, chunk_rows, dt, columns, delimiter))
    if lower.endswith(".parquet"):
        return _ParquetReader(name, chunk_rows, dt, columns)
    ext = os.path.splitext(name)[1] or "(none)"
    raise DataError(f"{name}: unsupported file extension {ext}; expected "
                    f"{', '.join(SUFFIXES)} (or - for standard input)")


def _check_finite(X, name, first_row, where="row"):
    """Raise DataError naming the first row with a NaN or an infinity."""
    finite = np.isfinite(X).all(axis=1)
    if not finite.all():
        bad = int(np.argmin(finite))
        raise DataError(f"{name}: {where} {first_row + bad} (counting from 0) has a missing, "
                        "NaN or infinite value")


# ---------------------------------------------------------------- .npy


class _NpyReader:
    unit = "rows"
    skipped = ()

    def __init__(self, name, chunk_rows, dtype, columns=None):
        self.name = name
        self.chunk_rows = chunk_rows
        self.dtype = dtype
        try:
            with open(name, "rb") as f:
                try:
                    version = np.lib.format.read_magic(f)
                except ValueError:
                    raise DataError(f"{name}: not a .npy file (it does not start with the "
                                    "NumPy header)") from None
                read = {(1, 0): np.lib.format.read_array_header_1_0,
                        (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                header = read(f) if read is not None else None
                self._offset = f.tell()
        except (OSError, ValueError, EOFError) as exc:
            if isinstance(exc, DataError):
                raise
            raise DataError(f"{name}: cannot read as a .npy file ({exc})") from None
        if header is None:                       # another format version: let numpy map it
            try:
                arr = np.load(name, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError, EOFError) as exc:
                raise DataError(f"{name}: cannot read as a .npy file ({exc})") from None
            shape, fortran, file_dtype = arr.shape, arr.flags.f_contiguous, arr.dtype
            del arr
        else:
            shape, fortran, file_dtype = header
        if file_dtype.kind not in "biuf" or file_dtype.hasobject:
            raise DataError(f"{name}: expected a numeric array, got {file_dtype}")
        if len(shape) != 2:
            raise DataError(f"{name}: expected a 2-D array of shape (n_samples, n_features), "
                            f"got shape {shape}")
        if shape[0] == 0 or shape[1] == 0:
            raise DataError(f"{name}: the data is empty (shape {shape})")
        needed = int(np.prod(shape)) * file_dtype.itemsize
        if header is not None and os.path.getsize(name) < self._offset + needed:
            raise DataError(f"{name}: the file is truncated ({os.path.getsize(name)} bytes, "
                            f"the header announces {self._offset + needed})")
        self._header = header
        self._fortran = bool(fortran)
        self._file_dtype = file_dtype
        self.shape = tuple(int(s) for s in shape)
        self._usecols = (None if columns is None
                         else _select(columns, None, self.shape[1], name))
        self.n_features = self.shape[1] if columns is None else len(self._usecols)
        self.total = self.shape[0]

    def _take(self, X):
        return X if self._usecols is None else np.ascontiguousarray(X[:, self._usecols])

    def __iter__(self):
        n, d = self.shape
        if self._header is None or self._fortran:
            # Rows are not contiguous in the file: numpy's memory map, without page release.
            arr = np.load(self.name, mmap_mode="r", allow_pickle=False)
            for a in range(0, n, self.chunk_rows):
                X = self._take(np.ascontiguousarray(arr[a:a + self.chunk_rows],
                                                    dtype=self.dtype))
                _check_finite(X, self.name, a)
                yield X, X.shape[0]
            return
        row_bytes = d * self._file_dtype.itemsize
        with open(self.name, "rb") as f, \
                mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            release = getattr(mmap, "MADV_DONTNEED", None)
            page = mmap.PAGESIZE
            released = 0
            for a in range(0, n, self.chunk_rows):
                rows = min(self.chunk_rows, n - a)
                view = np.frombuffer(mm, dtype=self._file_dtype, count=rows * d,
                                     offset=self._offset + a * row_bytes).reshape(rows, d)
                X = self._take(np.array(view, dtype=self.dtype, order="C"))  # a copy
                del view
                _check_finite(X, self.name, a)
                if release is not None:
                    end = (self._offset + (a + rows) * row_bytes) // page * page
                    if end > released:
                        mm.madvise(release, released, end - released)
                        released = end
                yield X, rows


# ---------------------------------------------------------------- CSV


def _is_number(cell):
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _values(n):
    return f"{n} value" if n == 1 else f"{n} values"


def _column_label(names, j):
    return repr(names[j]) if names is not None and names[j] else f"column {j + 1}"


def _select(columns, names, n_cells, name):
    """The 0-based indices of ``columns`` (names or 1-based numbers) among ``n_cells``."""
    chosen = []
    for c in columns:
        text = str(c).strip()
        if names is not None and text in names:
            j = names.index(text)
        elif text.isdigit():
            j = int(text) - 1
            if not 0 <= j < n_cells:
                raise DataError(f"{name}: there is no column {text} (columns are numbered "
                                f"1..{n_cells})")
        elif names is None:
            raise DataError(f"{name}: no header line, so column {text!r} can only be given "
                            f"by number (1..{n_cells})")
        else:
            raise DataError(f"{name}: no column {text!r}; the columns are "
                            f"{', '.join(map(repr, names))}")
        if j in chosen:
            raise DataError(f"{name}: column {text!r} is chosen twice")
        chosen.append(j)
    return chosen


def _sniff(text):
    """The delimiter of a first line: the first of ``,``, ``;`` and a tab in it."""
    for d in (",", ";", "\t"):
        if d in text:
            return d
    return ","


class _LineParser:
    """Turns numbered text lines into chunks: delimiter and header detection, the columns
    chosen (or the numeric ones), fixed width, clear errors."""

    def __init__(self, name, chunk_rows, dtype, columns=None, delimiter=None):
        self.name = name
        self.chunk_rows = chunk_rows
        self.dtype = dtype
        self.columns = columns
        self.delimiter = delimiter
        self.header = None              # the column names, if the first line was a header
        self.n_features = None
        self.skipped = []               # labels of the non-numeric columns left out
        self._usecols = None
        self._n_cells = None
        self._first_data_line = None
        self._seen_line = False

    def _split(self, text):
        return [c.strip() for c in text.split(self.delimiter)]

    def _first_row(self, cells, lineno):
        """Fix the layout from the first data row."""
        self._n_cells = len(cells)
        self._first_data_line = lineno
        if self.header is not None and len(self.header) != len(cells):
            raise DataError(f"{self.name}: the header has {_values(len(self.header))} but "
                            f"line {lineno} has {_values(len(cells))}")
        if self.columns is not None:
            self._usecols = _select(self.columns, self.header, len(cells), self.name)
        else:
            self._usecols = [j for j, c in enumerate(cells) if _is_number(c)]
            self.skipped = [_column_label(self.header, j) for j, c in enumerate(cells)
                            if not _is_number(c)]
            if not self._usecols:
                hint = ("" if self.delimiter != "," else
                        "; if the file uses another delimiter, give it with --delimiter")
                raise DataError(f"{self.name}: line {lineno} has no numeric column{hint}")
        self.n_features = len(self._usecols)

    def feed(self, lines):
        """Parse a list of ``(lineno, text)``; returns the chunk or None if it had no rows."""
        rows = []
        numbers = []
        for lineno, text in lines:
            text = text.strip()
            if not text:
                continue
            if not self._seen_line:
                self._seen_line = True
                if self.delimiter is None:
                    self.delimiter = _sniff(text)
                cells = self._split(text)
                if not all(_is_number(c) for c in cells):
                    self.header = cells
                    continue
            if self._n_cells is None:
                self._first_row(self._split(text), lineno)
            rows.append(text)
            numbers.append(lineno)
        if not rows:
            return None
        delim = self.delimiter
        if any(t.count(delim) + 1 != self._n_cells for t in rows):
            raise DataError(f"{self.name}: {self._explain(rows, numbers)}")
        try:
            X = np.loadtxt(rows, delimiter=delim, comments=None, dtype=self.dtype, ndmin=2,
                           usecols=self._usecols)
        except ValueError as exc:
            raise DataError(f"{self.name}: {self._explain(rows, numbers) or exc}") from None
        finite = np.isfinite(X).all(axis=1)
        if not finite.all():
            line = numbers[int(np.argmin(finite))]
            raise DataError(f"{self.name}: line {line} has a NaN or infinite value")
        return np.ascontiguousarray(X)

    def _explain(self, rows, numbers):
        for text, lineno in zip(rows, numbers):
            cells = self._split(text)
            if len(cells) != self._n_cells:
                return (f"line {lineno} has {_values(len(cells))} but line "
                        f"{self._first_data_line} has {_values(self._n_cells)} (ragged rows)")
            for col in self._usecols:
                if not _is_number(cells[col]):
                    return f"line {lineno}, column {col + 1}: {cells[col]!r} is not a number"
        return None

    def no_rows(self):
        return DataError(f"{self.name}: no data rows")


class _ParsedLines:
    """What the two line readers share: their parser's layout."""

    @property
    def n_features(self):
        return self._parser.n_features

    @property
    def skipped(self):
        return self._parser.skipped


class _CsvFileReader(_ParsedLines):
    unit = "bytes"

    def __init__(self, name, parser):
        self.name = name
        self._parser = parser
        self.chunk_rows = parser.chunk_rows
        self.total = os.path.getsize(name)
        self._gzip = name.lower().endswith(".gz")

    def __iter__(self):
        try:
            with open(self.name, "rb") as raw:
                f = gzip.GzipFile(fileobj=raw, mode="rb") if self._gzip else raw
                with f:
                    yield from self._chunks(f, raw)
        except (OSError, EOFError) as exc:
            raise DataError(f"{self.name}: cannot read ({exc})") from None

    def _chunks(self, f, raw):
        parser = self._parser
        done = 0
        any_rows = False
        lines = []
        lineno = 0
        for lineno, line in enumerate(f, start=1):
            try:
                lines.append((lineno, line.decode("utf-8")))
            except UnicodeDecodeError as exc:
                raise DataError(f"{self.name}: line {lineno} is not UTF-8 text "
                                f"({exc.reason})") from None
            if len(lines) == self.chunk_rows:
                X = parser.feed(lines)
                lines = []
                if X is not None:
                    any_rows = True
                    pos = raw.tell()
                    yield X, pos - done
                    done = pos
        X = parser.feed(lines)
        if X is not None:
            any_rows = True
            yield X, self.total - done
        if not any_rows:
            raise parser.no_rows()


class _LineReader(_ParsedLines):
    """Standard input: one CSV row per line, a chunk every ``chunk_rows`` lines or at the end."""

    unit = "rows"
    total = None

    def __init__(self, stream, name, parser):
        self.name = name
        self._stream = stream
        self._parser = parser
        self.chunk_rows = parser.chunk_rows

    def __iter__(self):
        lines = []
        any_rows = False
        try:
            for lineno, line in enumerate(self._stream, start=1):
                lines.append((lineno, line))
                if len(lines) == self.chunk_rows:
                    X = self._parser.feed(lines)
                    lines = []
                    if X is not None:
                        any_rows = True
                        yield X, X.shape[0]
        except UnicodeDecodeError as exc:
            raise DataError(f"{self.name}: not UTF-8 text ({exc.reason})") from None
        X = self._parser.feed(lines)
        if X is not None:
            any_rows = True
            yield X, X.shape[0]
        if not any_rows:
            raise self._parser.no_rows()


# ---------------------------------------------------------------- Parquet


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise DataError("reading Parquet files needs pyarrow: "
                        "pip install 'edgekm[parquet]'") from None
    return pyarrow


class _ParquetReader:
    unit = "rows"

    def __init__(self, name, chunk_rows, dtype, columns=None):
        pa = _pyarrow()
        self.name = name
        self.chunk_rows = chunk_rows
        self.dtype = dtype
        try:
            self._file = pa.parquet.ParquetFile(name)
            schema = self._file.schema_arrow
        except (OSError, pa.ArrowException, ValueError) as exc:
            raise DataError(f"{name}: cannot read as a Parquet file ({exc})") from None
        numeric = (pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean,
                   pa.types.is_decimal)
        is_numeric = [any(check(fld.type) for check in numeric) for fld in schema]
        if columns is not None:
            chosen = _select(columns, schema.names, len(schema.names), name)
            for j in chosen:
                if not is_numeric[j]:
                    raise DataError(f"{name}: column {schema.names[j]!r} is "
                                    f"{schema[j].type}, not numeric")
        else:
            chosen = [j for j, ok in enumerate(is_numeric) if ok]
        self.skipped = [repr(schema.names[j]) for j, ok in enumerate(is_numeric)
                        if not ok and columns is None]
        self.columns = [schema.names[j] for j in chosen]
        self.n_features = len(self.columns)
        self.total = self._file.metadata.num_rows
        if self.n_features == 0 or self.total == 0:
            raise DataError(f"{name}: the data is empty ({self.total} rows x "
                            f"{self.n_features} columns)")

    def __iter__(self):
        pa = _pyarrow()
        done = 0
        try:
            for batch in self._file.iter_batches(batch_size=self.chunk_rows,
                                                 columns=self.columns):
                X = np.empty((batch.num_rows, self.n_features), dtype=self.dtype)
                for j, column in enumerate(batch.columns):
                    # nulls become NaN, which the finiteness check reports
                    X[:, j] = column.to_numpy(zero_copy_only=False)
                _check_finite(X, self.name, done)
                done += X.shape[0]
                yield X, X.shape[0]
        except (OSError, TypeError, pa.ArrowException) as exc:
            raise DataError(f"{self.name}: cannot read ({exc})") from None
