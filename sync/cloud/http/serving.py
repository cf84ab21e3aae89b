"""Running the HTTP aggregator: :func:`serve` (uvicorn until a signal) and
:class:`BackgroundServer` (a daemon thread, for demos, examples and tests)."""

import json
import logging
import os
import signal
import socket
import threading
import time

from edgekm.sync.cloud.aggregator import Aggregator

from .app import ADMIN_TOKEN_ENV, create_app

__all__ = ["serve", "BackgroundServer", "http_protocol"]

logger = logging.getLogger("edgekm.sync.cloud.http.app")

#: the body of uvicorn's own 400 (a request it cannot parse: a malformed or duplicated
#: content-length, a bad request line or header), as JSON like every other error
_BAD_HTTP = json.dumps({"error": "malformed HTTP request (request line, header or "
                                 "content-length)", "reason": "bad_request"}).encode()


def http_protocol():
    """uvicorn's HTTP protocol class (httptools when installed, else h11, as its ``auto``)
    with its plain-text 400 answered as the JSON ``bad_request`` of PROTOCOL.md §6."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
    except ImportError:
        from uvicorn.protocols.http.h11_impl import H11Protocol as base

    class JSONBadRequestProtocol(base):
        def send_400_response(self, msg):
            head = [b"HTTP/1.1 400 Bad Request\r\n"]
            head += [name + b": " + value + b"\r\n"
                     for name, value in self.server_state.default_headers]
            head += [b"content-type: application/json\r\n",
                     b"content-length: %d\r\n" % len(_BAD_HTTP), b"connection: close\r\n\r\n"]
            self.transport.write(b"".join(head) + _BAD_HTTP)
            self.transport.close()

    return JSONBadRequestProtocol


def serve(db_path, host="127.0.0.1", port=8750, admin_token=None, *, log_level="info",
          access_log=False, max_concurrency=64, graceful_timeout=30.0, compact_interval=600.0,
          **aggregator_options):
    """Serve an aggregator with uvicorn until SIGTERM or SIGINT, then shut down gracefully.

    On a signal the server stops accepting connections, finishes the requests
    in flight (at most ``graceful_timeout`` seconds), stops the writer thread
    and closes the database; then this returns 0.

    ``admin_token`` defaults to the environment variable ``EDGEKM_ADMIN_TOKEN``;
    ``compact_interval`` goes to :func:`create_app`; other keyword arguments go to
    :class:`Aggregator`.
    """
    import uvicorn

    if admin_token is None:
        admin_token = os.environ.get(ADMIN_TOKEN_ENV) or None
    aggregator = Aggregator(db_path, **aggregator_options)
    try:
        app = create_app(aggregator, admin_token=admin_token, max_concurrency=max_concurrency,
                         compact_interval=compact_interval)
        config = uvicorn.Config(app, host=host, port=port, log_level=log_level,
                                access_log=access_log, lifespan="on", http=http_protocol(),
                                timeout_graceful_shutdown=graceful_timeout)
        server = uvicorn.Server(config)
        # uvicorn re-raises the signal that stopped it once it has shut down; a
        # recording handler makes that harmless, so a graceful stop exits 0.
        caught = []
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, lambda signum, frame: caught.append(signum))
        try:
            server.run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    finally:
        aggregator.close()
    if caught:
        logger.info("stopped by signal %s", ", ".join(signal.Signals(s).name for s in caught))
    return 0


class BackgroundServer:
    """Serve an ASGI app with uvicorn in a daemon thread on a free loopback port.

    For demos, examples and tests that need a real HTTP aggregator inside one
    process; production runs :func:`serve`.  The socket is bound before the
    thread starts (port 0: the system picks a free port), so :attr:`url` is
    known at once; :meth:`start` returns when uvicorn accepts connections.

    Parameters
    ----------
    app : ASGI application
        Usually ``create_app(aggregator, ...)``; the caller closes the aggregator
        after :meth:`stop`.
    host : str, default="127.0.0.1"
    log_level : str, default="warning"
    name : str, default="edgekm-aggregator"
        The thread's name.

    Examples
    --------
    >>> import os, tempfile, urllib.request, json
    >>> from edgekm.sync import Aggregator
    >>> from edgekm.sync.cloud.http import BackgroundServer, create_app
    >>> agg = Aggregator(os.path.join(tempfile.mkdtemp(), "a.db"))
    >>> with BackgroundServer(create_app(agg, policy_interval=None)) as server:
    ...     with urllib.request.urlopen(server.url + "/healthz") as r:
    ...         json.loads(r.read())["status"]
    'ok'
    >>> agg.close()
    """

    def __init__(self, app, *, host="127.0.0.1", log_level="warning",
                 name="edgekm-aggregator"):
        import uvicorn

        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._sock.bind((host, 0))
            self.port = self._sock.getsockname()[1]
            # log_config=None leaves the caller's logging configuration alone
            config = uvicorn.Config(app, log_level=log_level, log_config=None,
                                    access_log=False, lifespan="on", http=http_protocol(),
                                    timeout_graceful_shutdown=10)
            self._server = uvicorn.Server(config)
            self._thread = threading.Thread(target=self._server.run,
                                            kwargs={"sockets": [self._sock]},
                                            name=name, daemon=True)
        except BaseException:
            self._sock.close()
            raise
        shown = f"[{host}]" if family == socket.AF_INET6 else host
        self.url = f"http://{shown}:{self.port}"

    def start(self, timeout=30.0):
        """Start the thread and wait until uvicorn serves; RuntimeError if it does not."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the HTTP server on {self.url} did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout=30.0):
        """Stop serving and join the thread; True when the thread has ended."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=timeout)
        self._sock.close()
        return not self._thread.is_alive()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
