"""edgekm.sync: coreset frames from devices to a cloud aggregator.

- :mod:`edgekm.sync.wire.frame`: wire format v1 (msgpack), hostile-input decoding.
- :mod:`edgekm.sync.wire.auth`: HMAC-SHA256 request signing.
- :mod:`edgekm.sync.device.agent`: :class:`DeviceAgent` with its durable outbox
  (standard library, numpy and msgpack only).
- :mod:`edgekm.sync.cloud.aggregator`: :class:`Aggregator`, the HTTP-free core that
  merges frames under Observation 1 into SQLite.
- :mod:`edgekm.sync.cloud.http.app`: the Starlette app served by uvicorn (needs the
  ``server`` extra; never imported on a device).

Names are imported lazily so that ``import edgekm.sync`` on a device loads
neither the aggregator nor the server.
"""

from .wire.auth import AuthError
from .wire.frame import Frame, FrameError, decode_frame, encode_frame

__all__ = ["DeviceAgent", "Aggregator", "Frame", "FrameError", "AuthError",
           "decode_frame", "encode_frame"]


def __getattr__(name):
    if name == "DeviceAgent":
        from .device.agent import DeviceAgent
        return DeviceAgent
    if name == "Aggregator":
        from .cloud.aggregator import Aggregator
        return Aggregator
    raise AttributeError(f"module 'edgekm.sync' has no attribute {name!r}")
