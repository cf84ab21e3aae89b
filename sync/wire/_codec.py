"""The one codec base of the wire: what every edgekm wire format does the same way.

Each wire format (coreset frame, centroid version, telemetry summary) is a msgpack map of
known fields with raw little-endian arrays, decoded as hostile input.  A :class:`Codec`
holds the parts they share, so that each format's own module only states its field table,
its limits and the checks that are its own:

- the size limit, checked before msgpack reads a byte (:meth:`Codec.unpack`);
- the bounded unpack: every msgpack length is capped, extension types are refused, and
  map keys must be strings (:meth:`Codec.unpack`);
- the field table: exactly the known keys, each of its msgpack type
  (:meth:`Codec.check_fields`);
- arrays as raw bytes under an explicit-endian dtype string and a shape, with the byte
  count checked against the shape *before* anything is allocated
  (:func:`pack_array`, :meth:`Codec.unpack_array`).

Every failure raises the codec's own error class (``Codec.error``), with the codec's own
wording: the messages are part of the HTTP API's error answers, so each codec keeps its
text (the ``*_message`` methods) while the checks themselves live here once.
"""

import re

import msgpack
import numpy as np

__all__ = ["Codec", "pack_array", "accepts", "is_int", "show", "check_id", "DTYPES", "ID_PATTERN",
           "MAX_ID_CHARS", "MAX_FEATURES"]

#: what every format shares: the array dtypes, the feature limit and the id rule
DTYPES = {"<f4": np.dtype("<f4"), "<f8": np.dtype("<f8")}
MAX_FEATURES = 4096
MAX_ID_CHARS = 64
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")


def show(value):
    """A short, safe description of an untrusted value (never repr of a container:
    a deeply nested one would overflow the stack)."""
    if isinstance(value, (bool, int, float)) or value is None:
        return repr(value)[:40]
    if isinstance(value, (str, bytes)):
        return repr(value[:40])
    return f"a {type(value).__name__}"


def check_id(value, what, error):
    """Model and device ids: 1-64 characters of [A-Za-z0-9._-], not starting with . _ -;
    raises ``error`` otherwise."""
    if not isinstance(value, str) or not ID_PATTERN.match(value):
        raise error(
            f"{what} must be 1-{MAX_ID_CHARS} characters of A-Z a-z 0-9 . _ - and start "
            f"with a letter or digit; got {show(value)}.")
    return value


def is_int(value):
    """An int that is not a bool (msgpack's true/false decode as bool)."""
    return isinstance(value, int) and not isinstance(value, bool)


def pack_array(values, dtype):
    """``values`` as the raw bytes of a C-ordered array of ``dtype`` (an explicit-endian
    dtype string such as ``"<f8"``)."""
    return np.ascontiguousarray(values, dtype=np.dtype(dtype)).tobytes()


def accepts(value, typ):
    """Whether ``value`` has the msgpack type ``typ`` of a field table (a type or a tuple of
    types); ``float`` admits ints too, and a bool is never an int or a float."""
    if typ is float:
        typ = (float, int)
    return isinstance(value, typ) and not isinstance(value, bool)


class Codec:
    """Base of a wire codec (numcodecs' ``abc.Codec`` was the model).

    Subclasses set the class attributes and override the ``*_message`` methods whose
    wording differs; one instance per format, at module level, serves every call.

    Attributes
    ----------
    error : type
        The exception class raised for any bad input.
    fields : dict
        The field table: key -> msgpack type (or tuple of types).
    max_bytes : int
        Default size limit of an encoded document.
    accepts : tuple of type
        The Python types a document may come as.
    unpack_limits : dict
        msgpack length limits besides ``max_bin_len`` (the size limit) and ``max_map_len``
        (the number of fields).
    """

    error = ValueError
    fields = {}
    max_bytes = 0
    accepts = (bytes, bytearray)
    unpack_limits = {"max_str_len": 256, "max_array_len": 16}

    # ------------------------------------------------------------ messages
    def type_message(self, data):
        return f"a document must be bytes; got {type(data).__name__}."

    def size_message(self, n_bytes, max_bytes):
        return f"document of {n_bytes} bytes exceeds {max_bytes}."

    def empty_message(self):
        """The message for an empty input, or None to let msgpack report it."""
        return None

    def msgpack_message(self, exc):
        return f"not valid msgpack ({type(exc).__name__})."

    def keys_message(self, body):
        return f"a document is a map with exactly the keys {sorted(self.fields)}."

    def field_type_message(self, key, typ, value):
        return f"'{key}' has the wrong type ({type(value).__name__})."

    # ------------------------------------------------------------ decoding
    def check_size(self, data, max_bytes):
        """The input as bytes, after the type and size checks (before any decoding)."""
        if not isinstance(data, self.accepts):
            raise self.error(self.type_message(data))
        if isinstance(data, memoryview):
            if data.nbytes > max_bytes:
                raise self.error(self.size_message(data.nbytes, max_bytes))
            data = data.tobytes()     # a view of wider items counts items, not bytes
        if len(data) > max_bytes:
            raise self.error(self.size_message(len(data), max_bytes))
        if len(data) == 0 and self.empty_message() is not None:
            raise self.error(self.empty_message())
        return data

    def unpack(self, data, max_bytes=None, *, map_len=None):
        """Bounded msgpack decoding of untrusted bytes (size checked first)."""
        max_bytes = self.max_bytes if max_bytes is None else max_bytes
        data = self.check_size(data, max_bytes)
        try:
            return msgpack.unpackb(
                data, raw=False, strict_map_key=True, max_bin_len=max_bytes,
                max_map_len=len(self.fields) if map_len is None else map_len, max_ext_len=0,
                **self.unpack_limits)
        except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as exc:
            raise self.error(self.msgpack_message(exc)) from None

    def check_keys(self, body):
        """``body`` is a map with exactly the keys of the field table."""
        if not isinstance(body, dict) or set(body) != set(self.fields):
            raise self.error(self.keys_message(body))

    def check_types(self, body):
        """Every field of ``body`` has its table's msgpack type."""
        for key, typ in self.fields.items():
            if not accepts(body[key], typ):
                raise self.error(self.field_type_message(key, typ, body[key]))

    def check_fields(self, body):
        """The field-table check: exactly the known keys, each of its type."""
        self.check_keys(body)
        self.check_types(body)
        return body

    def array_size_message(self, key, n_bytes, dtype, shape, need):
        return f"'{key}' has {n_bytes} bytes; shape {shape} needs {need}."

    def unpack_array(self, buf, key, dtype, shape, *, finite=False):
        """The array of ``shape`` and ``dtype`` (explicit-endian) in ``buf``, in native byte
        order and writable; the byte count is checked against the shape before allocating.
        With ``finite``, a float array must hold no NaN or infinity."""
        dtype = np.dtype(dtype)
        need = int(np.prod(shape)) * dtype.itemsize
        if len(buf) != need:
            raise self.error(self.array_size_message(key, len(buf), dtype, shape, need))
        arr = np.frombuffer(buf, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
        if finite and arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise self.error(f"'{key}' contains NaN or infinity.")
        return arr

    # ------------------------------------------------------------ encoding
    @staticmethod
    def pack(body):
        """The msgpack bytes of a document map (bin type for bytes)."""
        return msgpack.packb(body, use_bin_type=True)
