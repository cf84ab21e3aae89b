"""The one HTTP client of the device side: signed requests, backoff, clock skew.

Standard library only (:mod:`urllib.request`), so it runs on a device.  The agent uploads
frames and telemetry and pulls centroid versions through it, and ``edgekm.dask.push_seed``
uploads its seed frames; with ``admin_token`` it sends the bearer ``Authorization`` header of
the admin API instead of a signature.  The rules (``sync/PROTOCOL.md`` section 6):

- every device request is signed with :mod:`edgekm.sync.wire.auth` at the device's clock plus
  the offset learnt from the server;
- a 401 whose ``Date`` header shows that the device's clock is off by more than half the
  allowed skew teaches the offset and is retried once, at once (it does not count against
  ``max_retries``);
- a retryable failure (no answer, 408, 429, 5xx, or a 2xx the caller does not accept) is
  retried up to ``max_retries`` times; before retry ``a`` (0-based) the client sleeps a
  uniform random time in ``[0, min(backoff_max, backoff_base * 2**a)]`` (exponential backoff
  with full jitter), or the server's ``Retry-After`` if longer; a ``Retry-After`` above
  ``backoff_max`` ends the call instead (the caller tries again later);
- 400, 409, 413 and 422 refuse this request only (``"reject"``); any other 4xx concerns the
  device or the model (``"reject_stop"``).
"""

import json
import random
import time
import urllib.parse

# urllib.request, http.client and email.utils (two thirds of the agent's import time) are
# imported at the first request: an agent that only ingests never loads them.

from edgekm.exceptions import AnswerError
from edgekm.sync.wire import auth as _auth

__all__ = ["SignedClient", "Answer", "Outcome", "by_status", "check_server_url", "check_key", "REFUSALS", "RETRYABLE_4XX"]

#: answers that refuse this one request: the caller sets it aside and goes on
REFUSALS = frozenset({400, 409, 413, 422})
#: 4xx answers that are retried; every other 4xx stops the caller
RETRYABLE_4XX = frozenset({408, 429})


def _build_opener(proxies):
    """The urllib opener of one client: no redirects (urllib would turn a redirected POST
    into a GET without body), and ``proxies`` when given."""
    import urllib.request

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req, fp, code, msg, headers, newurl):
            return None

    handlers = [_NoRedirect]
    if proxies is not None:
        handlers.append(urllib.request.ProxyHandler(proxies))
    return urllib.request.build_opener(*handlers)


class Answer:
    """What one attempt got: an HTTP answer (``status``, ``body``, ``headers``), or no
    answer at all (``status`` None, ``error`` says why, ``exc`` is the exception).

    Examples
    --------
    >>> a = Answer(200, b'{"status": "accepted"}', {"Retry-After": " 3 "})
    >>> a.json(), a.header("Retry-After"), Answer(500, b"[1]").json()
    ({'status': 'accepted'}, '3', {})
    """

    __slots__ = ("status", "body", "headers", "error", "exc")

    def __init__(self, status=None, body=b"", headers=None, error=None, exc=None):
        self.status = status
        self.body = body
        self.headers = headers
        self.error = error
        self.exc = exc

    def json(self):
        """The JSON object of the body, or {} when it is empty or not an object."""
        try:
            answer = json.loads(self.body) if self.body else {}
        except ValueError:
            return {}
        return answer if isinstance(answer, dict) else {}

    def header(self, name):
        """A header's value stripped, or "" when absent."""
        value = self.headers.get(name) if self.headers is not None else None
        return (value or "").strip()


class Outcome:
    """The caller's verdict on an attempt: ``kind`` is "ack", "reject", "reject_stop" or
    "retry" (or any other word the caller's ``classify`` uses for "final").

    Examples
    --------
    >>> by_status(Answer(503, b"", {"Retry-After": "2"}), "HTTP 503").retry_after
    2.0
    >>> by_status(Answer(422, b"", {}), "HTTP 422").kind, Outcome("ack").duplicate
    ('reject', False)
    """

    __slots__ = ("kind", "status", "error", "retry_after", "duplicate", "answer")

    def __init__(self, kind, status=None, error=None, retry_after=None, duplicate=False,
                 answer=None):
        self.kind = kind
        self.status = status
        self.error = error
        self.retry_after = retry_after
        self.duplicate = duplicate
        self.answer = answer


def check_server_url(server_url, what="an http(s) URL"):
    """The parts of an aggregator's base URL; ValueError unless it is http(s)."""
    parts = urllib.parse.urlsplit(server_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"server_url must be {what}; got {server_url!r}.")
    return parts


def check_key(key):
    """A device secret: hex, at least 16 bytes; ValueError otherwise."""
    try:
        if len(bytes.fromhex(key)) < 16:
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError("key must be the device secret as hex (at least 16 bytes).") from None
    return key


def by_status(answer, error):
    """The generic verdict on a non-2xx HTTP answer (see the module's rules)."""
    status = answer.status
    if status in REFUSALS:
        return Outcome("reject", status=status, error=error, answer=answer)
    if 400 <= status < 500 and status not in RETRYABLE_4XX:
        return Outcome("reject_stop", status=status, error=error, answer=answer)
    value = answer.header("Retry-After")
    retry_after = float(value) if value.isdigit() else None
    return Outcome("retry", status=status, error=error, retry_after=retry_after, answer=answer)


class SignedClient:
    """Signed (or admin) HTTP requests to an aggregator, with backoff and clock skew.

    Parameters
    ----------
    server_url : str
        Base URL of the aggregator, e.g. ``"http://127.0.0.1:8750"``.
    device_id, key : str or None
        The device and its secret (hex): requests are signed (:mod:`edgekm.sync.wire.auth`).
    admin_token : str or None
        Instead of a device: send ``Authorization: Bearer <admin_token>``.
    timeout : float, default=10.0
        Seconds for each HTTP request.
    max_retries : int, default=0
        Retries of a retryable failure within one :meth:`call`.
    backoff_base, backoff_max : float, default=0.5, 30.0
        The backoff (see the module's docstring).
    sleep : callable, default=time.sleep
    rng : random.Random-like or None
        Source of the jitter (``.random()``); a fresh ``random.Random`` when None.
    proxies : dict or None
        ``urllib`` proxies; None follows the environment, ``{}`` uses none.

    Examples
    --------
    >>> client = SignedClient("http://127.0.0.1:9", device_id="dev-1", key="00" * 32,
    ...                       timeout=1.0)
    >>> client.url("/v1/models/demo/centroids?device=dev-1")
    'http://127.0.0.1:9/v1/models/demo/centroids?device=dev-1'
    >>> client.attempt("GET", "/healthz").status is None      # nothing listens on port 9
    True
    """

    def __init__(self, server_url, *, device_id=None, key=None, admin_token=None, timeout=10.0,
                 max_retries=0, backoff_base=0.5, backoff_max=30.0, sleep=time.sleep, rng=None,
                 proxies=None):
        parts = check_server_url(server_url)
        if (key is None) == (admin_token is None):
            raise ValueError("give either device_id and key (signed) or admin_token.")
        self.server_url = server_url
        self.base_path = parts.path.rstrip("/")
        self._netloc = (parts.scheme, parts.netloc)
        self.device_id = device_id
        self._key = key
        self._admin_token = admin_token
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._sleep = sleep
        self._jitter = rng if rng is not None else random.Random()
        self.clock_offset = 0.0          # server clock - ours, learnt from a 401 for skew
        self._proxies = proxies
        self._opener = None              # built at the first request

    # ------------------------------------------------------------ one attempt
    def url(self, path):
        """The absolute URL of ``path`` (below the base path; it may carry a query)."""
        path, _, query = path.partition("?")
        return urllib.parse.urlunsplit(self._netloc + (path, query, ""))

    def headers(self, method, path, body):
        """The authentication headers of one request (a fresh nonce when signed)."""
        if self._admin_token is not None:
            return {"Authorization": f"Bearer {self._admin_token}"}
        return _auth.signed_headers(self._key, method, path, body, self.device_id,
                                    now=time.time() + self.clock_offset)

    def attempt(self, method, path, body=None, *, headers=None):
        """Send one request to ``base_path + path``; returns an :class:`Answer`.

        HTTP error statuses are answers; no answer at all (refused, reset, timeout, DNS)
        gives an Answer whose ``status`` is None.  The signature covers the path with its
        query.
        """
        full = self.base_path + path
        signed = self.headers(method, full, body if body is not None else b"")
        signed.update(headers or {})
        import urllib.request

        request = urllib.request.Request(self.url(full), data=body, headers=signed,
                                         method=method)
        try:
            status, payload, rheaders = self._send(request)
        except _NetworkFailure as exc:
            return Answer(error=str(exc), exc=exc.__cause__ or exc)
        return Answer(status, payload, rheaders)

    def _send(self, request):
        """``(status, body, headers)`` of one request; raises :class:`_NetworkFailure`."""
        import http.client
        import urllib.error

        if self._opener is None:
            self._opener = _build_opener(self._proxies)
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return response.status, response.read(), response.headers
        except urllib.error.HTTPError as exc:
            try:
                payload = exc.read()
            except (OSError, http.client.HTTPException):
                payload = b""
            exc.close()
            return exc.code, payload, exc.headers
        except (OSError, http.client.HTTPException, ValueError) as exc:
            # URLError, refused, reset, timeout, a dropped connection after a lost ACK
            failure = _NetworkFailure(f"network: {type(exc).__name__}: {exc}"[:300])
            failure.__cause__ = exc
            raise failure from None

    def clock_skewed(self, answer):
        """True when a 401's ``Date`` header says our clock is off by more than half the
        allowed skew; the offset then applies to the next signatures (devices often lack
        a clock)."""
        if answer.status != 401 or self._admin_token is not None:
            return False
        value = answer.header("Date")
        if not value:
            return False
        import email.utils

        try:
            server_now = email.utils.parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return False
        offset = server_now - time.time()
        if abs(offset - self.clock_offset) <= _auth.MAX_SKEW_SECONDS / 2:
            return False
        self.clock_offset = offset
        return True

    def delay(self, attempt, retry_after=None):
        """Seconds to sleep before retry ``attempt`` (0-based), or None: not in this call."""
        cap = min(self.backoff_max, self.backoff_base * 2 ** attempt)
        delay = self._jitter.random() * cap
        if retry_after is not None:
            if retry_after > self.backoff_max:
                return None                   # not before Retry-After: the next call
            delay = max(delay, retry_after)
        return delay

    # ------------------------------------------------------------ with the rules
    def call(self, method, path, body=None, *, classify, headers=None, **rules):
        """One request under the module's rules; returns the last :class:`Outcome`.

        ``classify(answer)`` turns each :class:`Answer` into an :class:`Outcome` ("retry"
        to retry it; :func:`by_status` gives the generic verdict of a non-2xx answer).
        ``rules`` are those of :meth:`retrying`.
        """
        return self.retrying(
            lambda: classify(self.attempt(method, path, body, headers=headers)), **rules)

    def call_json(self, method, path, payload=None, **rules):
        """A JSON request (the admin API's form): ``payload`` sent as JSON, the JSON answer
        of a 2xx returned decoded.

        No answer, a non-2xx answer or a body that is not JSON raises
        :class:`edgekm.exceptions.AnswerError`, whose message names the request and the
        status (or the network error) and carries the start of the body.
        """
        body = None if payload is None else json.dumps(payload).encode()
        answer = self.call(method, path, body, classify=_as_answer,
                           headers={"Content-Type": "application/json",
                                    "Accept": "application/json"}, **rules).answer
        where = f"{method} {path}"
        if answer.status is None:
            exc = answer.exc
            raise AnswerError(f"{where}: {type(exc).__name__ if exc else 'error'}: "
                              f"{answer.error or exc}", status=None)
        if not 200 <= answer.status < 300:
            detail = bytes(answer.body or b"")[:300].decode("utf-8", "replace")
            raise AnswerError(f"{where}: HTTP {answer.status} {detail}", status=answer.status)
        try:
            return json.loads(answer.body)
        except ValueError as exc:
            raise AnswerError(f"{where}: {type(exc).__name__}: {exc}",
                              status=answer.status) from None

    def retrying(self, attempt, *, max_retries=None, before_attempt=None, after_failure=None):
        """Run ``attempt()`` (one request, returning an :class:`Outcome` whose ``answer`` is
        the :class:`Answer`) until it is final, under the module's rules.

        ``before_attempt()`` runs before every attempt, ``after_failure(outcome)`` after
        every one that is retried or ends the call as "retry" (a clock-skew 401 included).
        """
        max_retries = self.max_retries if max_retries is None else max_retries
        tries, skew_retried = 0, False
        while True:
            if before_attempt is not None:
                before_attempt()
            outcome = attempt()
            if (outcome.kind != "ack" and not skew_retried and outcome.answer is not None
                    and self.clock_skewed(outcome.answer)):
                skew_retried = True
                outcome = Outcome("retry", status=401, answer=outcome.answer,
                                  error=f"{outcome.error or 'HTTP 401'} (clock skew; corrected)")
                if after_failure is not None:
                    after_failure(outcome)
                continue                              # at once, with the server's time
            if outcome.kind != "retry":
                return outcome
            if after_failure is not None:
                after_failure(outcome)
            if tries == max_retries:
                return outcome
            delay = self.delay(tries, outcome.retry_after)
            if delay is None:
                return outcome
            self._sleep(delay)
            tries += 1


def _as_answer(answer):
    """The verdict that returns every answer as it is (the caller judges it)."""
    return Outcome("answer", status=answer.status, answer=answer)


class _NetworkFailure(Exception):
    """No HTTP answer at all (refused, reset, timeout, DNS): always retryable."""
