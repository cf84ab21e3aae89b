"""edgekm.sync: coreset frames from devices to a cloud aggregator.

- :mod:`edgekm.sync.frame`: wire format v1 (msgpack), hostile-input decoding.
- :mod:`edgekm.sync.auth`: HMAC-SHA256 request signing.
- :mod:`edgekm.sync.agent`: :class:`DeviceAgent` with its durable outbox
  (standard library, numpy and msgpack only).
- :mod:`edgekm.sync.aggregator`: :class:`Aggregator`, the HTTP-free core that
  merges frames under Observation 1 into SQLite.
- :mod:`edgekm.sync.server`: the Starlette app served by uvicorn (needs the
  ``server`` extra; never imported on a device).

Names are imported lazily so that ``import edgekm.sync`` on a device loads
neither the aggregator nor the server.
"""

from .auth import AuthError
from .frame import Frame, FrameError, decode_frame, encode_frame

__all__ = ["DeviceAgent", "Aggregator", "Frame", "FrameError", "AuthError",
           "decode_frame", "encode_frame"]


def __getattr__(name):
    if name == "DeviceAgent":
        from .agent import DeviceAgent
        return DeviceAgent
    if name == "Aggregator":
        from .aggregator import Aggregator
        return Aggregator
    raise AttributeError(f"module 'edgekm.sync' has no attribute {name!r}")
