"""What crosses the wire: one codec base and the frame, version, telemetry and auth codecs.

Depends only on the core (:mod:`edgekm`), numpy and msgpack; the device and the cloud both
import it, it imports neither.
"""
