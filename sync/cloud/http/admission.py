"""Admission control as ASGI middleware: at most ``max_concurrency`` requests at once.

A request over the limit waits for a slot in a first-come, first-served queue
(at most ``max_waiting`` requests, each for at most ``max_wait`` seconds) and
is answered 503 with Retry-After only when the queue is full or its wait runs
out, so that a device that backed off is not overtaken forever by devices that
send again at once.  Only the routes listed as limited are admitted (the
others, ``/metrics`` and unknown paths, pass straight through); an unexpected
error of a limited route is answered 500 ``internal``, never a traceback.
"""

import asyncio
import collections

from starlette.routing import Match

from .errors import error, error_for

__all__ = ["Admission"]


class Admission:
    """ASGI middleware of admission control (see the module docstring).

    Examples
    --------
    >>> from starlette.applications import Starlette
    >>> from starlette.middleware import Middleware
    >>> app = Starlette(middleware=[Middleware(Admission, limited=[], max_concurrency=2,
    ...                                         max_waiting=8, max_wait=1.0)])
    """

    def __init__(self, app, *, limited, max_concurrency, max_waiting, max_wait,
                 stopping=lambda: False):
        self.app = app
        self.limited = list(limited)
        self.max_concurrency = max_concurrency
        self.max_waiting = max_waiting
        self.max_wait = max_wait
        self.stopping = stopping
        self.in_flight = 0
        self.waiting = collections.deque()  # futures of the requests waiting for a slot

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not any(
                route.matches(scope)[0] == Match.FULL for route in self.limited):
            await self.app(scope, receive, send)
            return
        if self.stopping():
            response = error(503, "unavailable", "the aggregator is shutting down")
        elif not await self.admit():
            response = error(503, "unavailable", "too many requests in progress")
        else:
            try:
                await self.app(scope, receive, send)
                return
            except Exception as exc:     # noqa: BLE001 - a JSON error, never a traceback
                response = error_for(exc)
            finally:
                self.release()
        await response(scope, receive, send)

    async def admit(self):
        """Take a slot, waiting in FIFO order; False when none comes in time."""
        if self.in_flight < self.max_concurrency and not self.waiting:
            self.in_flight += 1
            return True
        if len(self.waiting) >= self.max_waiting or self.max_wait == 0:
            return False
        slot = asyncio.get_running_loop().create_future()
        self.waiting.append(slot)
        try:
            await asyncio.wait_for(asyncio.shield(slot), self.max_wait)
        except asyncio.TimeoutError:
            pass
        except BaseException:            # cancelled (the client went away)
            if slot.done():
                self.release()           # it was handed a slot: pass it on
            else:
                self.waiting.remove(slot)
            raise
        if slot.done():                  # release() handed its slot over (in_flight kept)
            return True
        self.waiting.remove(slot)
        return False

    def release(self):
        while self.waiting:
            slot = self.waiting.popleft()
            if not slot.done():
                slot.set_result(True)
                return
        self.in_flight -= 1
