"""Schemathesis hooks for the OpenAPI run (``SCHEMATHESIS_HOOKS=helpers.schemathesis_hooks``):
bodies of ``application/msgpack`` go out as the bytes generated (or packed, for other
values), so that the frame and telemetry uploads are exercised too."""

import msgpack
import schemathesis


@schemathesis.serializer("application/msgpack")
def msgpack_body(ctx, value):
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return msgpack.packb(value, use_bin_type=True, default=repr)
