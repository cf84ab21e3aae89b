"""Request signing: HMAC-SHA256 over the request, with a timestamp and a nonce.

Standard library only, so that the device side needs nothing beyond numpy
and msgpack.  The string to sign is (``sync/PROTOCOL.md``)::

    EDGEKM-HMAC-SHA256\\n<METHOD>\\n<path>\\n<sha256(body) hex>\\n<device id>\\n<timestamp>\\n<nonce>

and travels in four headers.  The aggregator checks the clock skew
(±:data:`MAX_SKEW_SECONDS`), rejects a reused nonce, and compares the
signature in constant time.
"""

import hashlib
import hmac
import math
import re
import secrets
import time

from edgekm.exceptions import AuthError, EdgekmError

ALGORITHM = "EDGEKM-HMAC-SHA256"
MAX_SKEW_SECONDS = 300
NONCE_BYTES = 16
KEY_BYTES = 32

H_DEVICE = "x-edgekm-device"
H_TIMESTAMP = "x-edgekm-timestamp"
H_NONCE = "x-edgekm-nonce"
H_SIGNATURE = "x-edgekm-signature"

#: canonical decimal seconds: ASCII digits, no leading zero (so it is signed as sent)
_TIMESTAMP = re.compile(r"(0|[1-9][0-9]{0,11})\Z")
_NONCE = re.compile(r"[0-9a-f]{8,64}\Z")


def new_key():
    """A fresh device secret, as hex (256 bits)."""
    return secrets.token_hex(KEY_BYTES)


def string_to_sign(method, path, body, device_id, timestamp, nonce):
    digest = hashlib.sha256(body).hexdigest()
    return "\n".join([ALGORITHM, method.upper(), path, digest, device_id, str(timestamp), nonce])


def sign(key_hex, method, path, body, device_id, timestamp, nonce):
    """Hex HMAC-SHA256 of the request under the device key."""
    key = bytes.fromhex(key_hex)
    msg = string_to_sign(method, path, body, device_id, timestamp, nonce).encode()
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


def signed_headers(key_hex, method, path, body, device_id, *, now=None):
    """Headers for one request: device, timestamp, a fresh nonce and the signature."""
    timestamp = int(time.time() if now is None else now)
    nonce = secrets.token_hex(NONCE_BYTES)
    return {
        H_DEVICE: device_id,
        H_TIMESTAMP: str(timestamp),
        H_NONCE: nonce,
        H_SIGNATURE: sign(key_hex, method, path, body, device_id, timestamp, nonce),
    }


def verify(key_hex, method, path, body, headers, *, now=None, max_skew=MAX_SKEW_SECONDS):
    """Check the signature headers of a request; return ``(device_id, timestamp, nonce)``.

    ``headers`` maps lower-case names to values.  Raises :class:`AuthError`.
    Nonce reuse is checked by the caller, which owns the nonce store.
    """
    try:
        device_id = headers[H_DEVICE]
        ts_text = headers[H_TIMESTAMP]
        nonce = headers[H_NONCE]
        signature = headers[H_SIGNATURE]
    except KeyError as exc:
        raise AuthError(f"missing header {exc.args[0]}") from None
    if not _TIMESTAMP.match(ts_text):
        raise AuthError("bad timestamp header: expected canonical decimal Unix seconds")
    timestamp = int(ts_text)
    # whole seconds on both sides: a device's timestamp is its clock truncated, so the
    # aggregator's clock is truncated too, and exactly ``max_skew`` passes either way
    current = math.floor(time.time() if now is None else now)
    if abs(current - timestamp) > max_skew:
        raise AuthError(f"timestamp outside the allowed clock skew of ±{max_skew} s")
    if not _NONCE.match(nonce):
        raise AuthError("bad nonce header: expected 8-64 lower-case hex digits")
    expected = sign(key_hex, method, path, body, device_id, timestamp, nonce)
    if not hmac.compare_digest(expected.encode(), signature.encode()[:128]):
        raise AuthError("signature does not match")
    return device_id, timestamp, nonce
