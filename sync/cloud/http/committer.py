"""The group committer: one writer thread commits the queued uploads in batches.

All uploads waiting when a transaction starts share it (each in its own
savepoint), and every request gets its answer only after the COMMIT that made
it durable.
"""

import asyncio
import queue
import threading

from edgekm.exceptions import UnavailableError

__all__ = ["GroupCommitter", "MAX_BATCH"]

#: most uploads committed in one transaction
MAX_BATCH = 256


class GroupCommitter:
    """One writer thread; the uploads queued while it commits form its next batch.

    Examples
    --------
    >>> committer = GroupCommitter(aggregator=None)
    >>> committer.stopping
    False
    """

    _STOP = object()

    def __init__(self, aggregator, max_batch=MAX_BATCH):
        self.aggregator = aggregator
        self.max_batch = max_batch
        self._queue = queue.SimpleQueue()
        self._thread = None
        self._lock = threading.Lock()
        self.stopping = False

    def start(self):
        with self._lock:
            if self._thread is None and not self.stopping:
                self._thread = threading.Thread(target=self._run, name="edgekm-writer",
                                                daemon=True)
                self._thread.start()

    def stop(self, timeout=60.0):
        with self._lock:
            self.stopping = True
            thread = self._thread
            if thread is not None:
                self._queue.put(self._STOP)
        if thread is not None:
            thread.join(timeout)

    def submit(self, upload):
        """Queue an upload; returns an asyncio future of its result or exception."""
        if self._thread is None:
            self.start()
        if self.stopping:
            raise UnavailableError("the aggregator is shutting down")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put((upload, future, loop))
        return future

    def _run(self):
        stop = False
        while not stop:
            item = self._queue.get()
            if item is self._STOP:
                break
            batch = [item]
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is self._STOP:
                    stop = True
                    break
                batch.append(item)
            try:
                results = self.aggregator.accept_signed([b[0] for b in batch])
            except BaseException as exc:       # noqa: BLE001 - every request gets an answer
                results = [exc] * len(batch)
            # one wake-up of each event loop per batch, not one per request
            by_loop = {}
            for (_, future, loop), result in zip(batch, results):
                by_loop.setdefault(loop, []).append((future, result))
            for loop, answers in by_loop.items():
                try:
                    loop.call_soon_threadsafe(_resolve, answers)
                except RuntimeError:           # the loop is closed: nobody is waiting
                    pass


def _resolve(answers):
    for future, result in answers:
        if future.done():       # the request was cancelled (client went away)
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
