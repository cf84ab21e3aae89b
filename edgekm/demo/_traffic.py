"""What the fleet demo measures on the wire: a pass-through ASGI middleware."""

import threading

from edgekm.exceptions import TelemetryError
from edgekm.sync.wire.telemetry import decode_telemetry


def _kind(path):
    if path.endswith("/frames"):
        return "frames"
    if path.endswith("/telemetry"):
        return "telemetry"
    if path.endswith("/centroids"):
        return "centroids"
    return "other"


class TrafficMeter:
    """ASGI middleware: counts the HTTP bytes of device requests and reads telemetry.

    Request bytes are the HTTP/1.1 request line, the headers (``name: value``
    and CRLF each, plus the blank line) and the body, as received.  Response
    bytes are the bodies only.  Telemetry bodies answered 200 are decoded to
    count the anomalies the devices flagged (keyed by summary id, so a retried
    upload counts once).
    """

    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()
        self.requests = {}            # kind -> [count, request bytes, response bytes]
        self.errors = []              # (kind, status) of device requests answered >= 400
        self.summaries = {}           # (device, boot, seq) -> (flagged, forwarded, points)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        kind = _kind(scope["path"])
        target = scope.get("raw_path") or scope["path"].encode()
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        head = len(scope["method"]) + 1 + len(target) + 1 + len(b"HTTP/1.1") + 2 + 2
        head += sum(len(k) + 2 + len(v) + 2 for k, v in scope.get("headers", ()))
        body = []
        sent = [0, None]

        async def counting_receive():
            message = await receive()
            if message["type"] == "http.request":
                body.append(message.get("body", b""))
            return message

        async def counting_send(message):
            if message["type"] == "http.response.start":
                sent[1] = message["status"]
            elif message["type"] == "http.response.body":
                sent[0] += len(message.get("body", b""))
            await send(message)

        await self.app(scope, counting_receive, counting_send)
        payload = b"".join(body)
        summary = None
        if kind == "telemetry" and sent[1] == 200:
            try:
                summary = decode_telemetry(payload)
            except TelemetryError:      # pragma: no cover - the app answered 200
                summary = None
        with self.lock:
            row = self.requests.setdefault(kind, [0, 0, 0])
            row[0] += 1
            row[1] += head + len(payload)
            row[2] += sent[0]
            if kind != "other" and (sent[1] or 500) >= 400:
                self.errors.append((kind, sent[1]))
            if summary is not None:
                n_forwarded = int(summary.anomalies.shape[0])
                self.summaries[(summary.device, summary.boot, summary.seq)] = (
                    n_forwarded + int(summary.anomalies_dropped), n_forwarded,
                    int(summary.n_points))

    def snapshot(self):
        with self.lock:
            requests = {k: list(v) for k, v in self.requests.items()}
            flagged = sum(s[0] for s in self.summaries.values())
            forwarded = sum(s[1] for s in self.summaries.values())
            checked = sum(s[2] for s in self.summaries.values())
        up = sum(requests.get(k, [0, 0, 0])[1] for k in ("frames", "telemetry"))
        return {"requests": requests, "bytes_uploaded": up, "anomalies": flagged,
                "anomalies_forwarded": forwarded, "points_checked": checked}
