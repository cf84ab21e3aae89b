"""A tiny in-process aggregator for the device-agent tests (stdlib http.server in a thread).

It implements the frame upload of HTTP API v1 (``POST /v1/models/{model}/frames``)
with the real :func:`edgekm.sync.wire.frame.decode_frame` and
:func:`edgekm.sync.wire.auth.verify`, and keeps only what the tests check: the
merged weight per model and the frame ids with their digests.  It does not
build coresets.  ``script`` injects faults into the next requests:

- an int: answer that status without processing the frame;
- ``"drop_after_accept"``: process the frame, then close the connection
  without answering (a lost ACK);
- ``"drop_before"``: close the connection without processing.

It also serves centroid versions and takes telemetry summaries (issue 4):
``GET /v1/models/{model}/centroids?device=ID`` (signed over the path with its
query) answers :attr:`FakeAggregator.versions` ``[model]`` = ``(body, digest,
headers)`` with an ``ETag``, 304 on ``If-None-Match``, 404 ``no_version``;
``get_script`` injects faults into the next GETs (an int status,
``"corrupt"``: a changed payload byte under the same ETag, ``"drop_before"``).
``POST /v1/models/{model}/telemetry`` decodes with the real
:func:`edgekm.sync.wire.telemetry.decode_telemetry` and deduplicates on the
summary id (:attr:`FakeAggregator.telemetry`).

:meth:`FakeAggregator.stop` and :meth:`FakeAggregator.start` take the server
down and bring it back on the same port (connections are refused meanwhile),
keeping its state.
"""

import hashlib
import json
import re
import socket
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from edgekm.sync.wire import auth, frame
from edgekm.sync.wire import telemetry as _telemetry

_PATH = re.compile(r"/v1/models/([^/]+)/frames\Z")
_TELEMETRY = re.compile(r"/v1/models/([^/]+)/telemetry\Z")
_CENTROIDS = re.compile(r"/v1/models/([^/?]+)/centroids\?device=([^&]+)\Z")


class FakeAggregator:
    """State and fault injection; ``url`` is ``http://127.0.0.1:<port>``."""

    def __init__(self, keys, *, max_frame_bytes=frame.MAX_FRAME_BYTES, clock_offset=0.0):
        self.keys = dict(keys)                  # device id -> key hex
        self.max_frame_bytes = max_frame_bytes
        self.clock_offset = clock_offset        # the server's clock minus the real one
        self.lock = threading.Lock()
        self.frames = {}                        # frame id -> (digest, weight, span)
        self.total = {}                         # model -> merged weight
        self.n_features = {}
        self.nonces = set()
        self.script = []
        self.log = []                           # (path, status or action)
        self.accepted = 0
        self.duplicates = 0
        self.versions = {}                      # model -> (body, digest, extra headers)
        self.get_script = []
        self.telemetry = {}                     # summary id -> decoded summary
        self._server = None
        self._thread = None
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self):
        server = ThreadingHTTPServer(("127.0.0.1", self.port), _Handler)
        server.daemon_threads = True
        server.fake = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def now(self):
        return time.time() + self.clock_offset

    def total_weight(self, model):
        with self.lock:
            return self.total.get(model, 0.0)

    # ------------------------------------------------------------ versions
    def publish(self, model, version, **flags):
        """Serve ``version`` (a CentroidVersion) to every device of ``model``.

        ``rollback=True`` / ``pinned=True`` add the matching answer header.
        """
        from edgekm.sync.wire.version import encode_version

        body, digest = encode_version(version)
        extra = {}
        if flags.get("rollback"):
            extra["x-edgekm-rollback"] = "1"
        if flags.get("pinned"):
            extra["x-edgekm-pinned"] = "1"
        with self.lock:
            self.versions[model] = (body, digest, extra)
        return digest

    def handle_get(self, path, headers):
        """Returns (status, body bytes, headers) or "drop"."""
        match = _CENTROIDS.match(path)
        if match is None:
            return 404, b'{"reason": "not_found"}', {"Content-Type": "application/json"}
        model, device = match.groups()
        with self.lock:
            action = self.get_script.pop(0) if self.get_script else None
        self.log.append((path, action))
        if isinstance(action, int):
            return action, b'{"reason": "scripted"}', {"Content-Type": "application/json"}
        if action == "drop_before":
            return "drop"
        key = self.keys.get(headers.get(auth.H_DEVICE, ""))
        if key is None or headers.get(auth.H_DEVICE) != device:
            return 401, b'{"reason": "unauthorized"}', {"Content-Type": "application/json"}
        try:
            _, _, nonce = auth.verify(key, "GET", path, b"", headers, now=self.now())
        except auth.AuthError:
            return 401, b'{"reason": "unauthorized"}', {"Content-Type": "application/json"}
        with self.lock:
            if (device, nonce) in self.nonces:
                return 401, b'{"reason": "unauthorized"}', {"Content-Type": "application/json"}
            self.nonces.add((device, nonce))
            served = self.versions.get(model)
        if served is None:
            return 404, b'{"reason": "no_version"}', {"Content-Type": "application/json"}
        body, digest, extra = served
        out = {"ETag": f'"{digest}"', **extra}
        if headers.get("if-none-match") == f'"{digest}"':
            return 304, b"", out
        if action == "corrupt":
            body = body[:-1] + bytes([body[-1] ^ 1])
        out["Content-Type"] = "application/msgpack"
        return 200, body, out

    def handle_telemetry(self, model, headers, body, path):
        device = headers.get(auth.H_DEVICE, "")
        key = self.keys.get(device)
        if key is None:
            return 401, {"reason": "unauthorized"}
        try:
            auth.verify(key, "POST", path, body, headers, now=self.now())
            s = _telemetry.decode_telemetry(body)
        except auth.AuthError:
            return 401, {"reason": "unauthorized"}
        except _telemetry.TelemetryError as exc:
            return 400, {"error": str(exc), "reason": "bad_telemetry"}
        if s.device != device or s.model != model:
            return 403, {"reason": "forbidden"}
        with self.lock:
            if s.summary_id in self.telemetry:
                return 200, {"status": "duplicate"}
            self.telemetry[s.summary_id] = s
        return 200, {"status": "accepted"}

    # ------------------------------------------------------------ the endpoint
    def handle(self, path, headers, body):
        """Returns (status, json) or the string "drop" (close without answering)."""
        tmatch = _TELEMETRY.match(path)
        if tmatch is not None:
            with self.lock:
                action = self.script.pop(0) if self.script else None
            self.log.append((path, action))
            if isinstance(action, int):
                return action, {"error": "scripted", "reason": "scripted"}
            return self.handle_telemetry(tmatch.group(1), headers, body, path)
        match = _PATH.match(path)
        if match is None:
            return 404, {"error": "no such route", "reason": "not_found"}
        model = match.group(1)
        with self.lock:
            action = self.script.pop(0) if self.script else None
        self.log.append((path, action))
        if isinstance(action, int):
            return action, {"error": "scripted", "reason": "scripted"}
        if action == "drop_before":
            return "drop"
        device = headers.get(auth.H_DEVICE, "")
        key = self.keys.get(device)
        if key is None:
            return 401, {"error": "unknown device", "reason": "unauthorized"}
        try:
            _, _, nonce = auth.verify(key, "POST", path, body, headers, now=self.now())
        except auth.AuthError as exc:
            return 401, {"error": str(exc), "reason": "unauthorized"}
        try:
            f = frame.decode_frame(body, max_frame_bytes=self.max_frame_bytes)
        except frame.FrameError as exc:
            return 400, {"error": str(exc), "reason": "bad_frame"}
        with self.lock:
            if (device, nonce) in self.nonces:
                return 401, {"error": "nonce reused", "reason": "unauthorized"}
            self.nonces.add((device, nonce))
            if f.device != device or f.model != model:
                return 403, {"error": "frame identity mismatch", "reason": "forbidden"}
            if self.n_features.setdefault(model, f.n_features) != f.n_features:
                return 422, {"error": "wrong dimension", "reason": "wrong_dimension"}
            digest = hashlib.sha256(body).hexdigest()
            known = self.frames.get(f.frame_id)
            status = "accepted"
            if known is not None:
                if known[0] != digest:
                    return 409, {"error": "same id, other digest", "reason": "conflict"}
                status = "duplicate"
                self.duplicates += 1
            else:
                self.frames[f.frame_id] = (digest, f.total_weight, f.span)
                self.total[model] = self.total.get(model, 0.0) + f.total_weight
                self.accepted += 1
            answer = {"status": status, "frame_id": list(f.frame_id), "weight": f.total_weight,
                      "total_weight": self.total[model]}
        if action == "drop_after_accept":
            return "drop"
        return 200, answer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def date_time_string(self, timestamp=None):
        return formatdate(self.server.fake.now(), usegmt=True)

    def do_POST(self):
        fake = self.server.fake
        length = int(self.headers.get("Content-Length", "0"))
        if length > fake.max_frame_bytes:
            self._reply(413, {"error": "too large", "reason": "too_large"})
            return
        body = self.rfile.read(length)
        headers = {k.lower(): v for k, v in self.headers.items()}
        result = fake.handle(self.path, headers, body)
        if result == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self._reply(*result)

    def do_GET(self):
        fake = self.server.fake
        headers = {k.lower(): v for k, v in self.headers.items()}
        result = fake.handle_get(self.path, headers)
        if result == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        status, data, extra = result
        self.send_response(status)
        for name, value in extra.items():
            self.send_header(name, value)
        if status != 304:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if status != 304:
            self.wfile.write(data)

    def _reply(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 503:
            self.send_header("Retry-After", "1")
        self.end_headers()
        self.wfile.write(data)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
