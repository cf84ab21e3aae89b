"""A tiny in-process aggregator for the device-agent tests (stdlib http.server in a thread).

It implements the frame upload of HTTP API v1 (``POST /v1/models/{model}/frames``)
with the real :func:`edgekm.sync.frame.decode_frame` and
:func:`edgekm.sync.auth.verify`, and keeps only what the tests check: the
merged weight per model and the frame ids with their digests.  It does not
build coresets.  ``script`` injects faults into the next requests:

- an int: answer that status without processing the frame;
- ``"drop_after_accept"``: process the frame, then close the connection
  without answering (a lost ACK);
- ``"drop_before"``: close the connection without processing.

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

from edgekm.sync import auth, frame

_PATH = re.compile(r"/v1/models/([^/]+)/frames\Z")


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

    # ------------------------------------------------------------ the endpoint
    def handle(self, path, headers, body):
        """Returns (status, json) or the string "drop" (close without answering)."""
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
