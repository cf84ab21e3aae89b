"""A minimal text progress bar on stderr, with no dependencies.

Used by the command-line tools.  It redraws one line in place at most
``1 / min_interval`` times per second, and stays silent when stderr is not a
terminal (a log file, a pipe, CI) unless ``force=True``.
"""

import sys
import time

__all__ = ["Progress"]


class Progress:
    """Progress bar for a known number of steps.

    Parameters
    ----------
    total : int
        Number of steps that make 100 %.
    desc : str, default=""
        Label printed before the bar.
    enabled : bool, default=True
        False turns the bar off.  When true, the bar still stays off if the
        stream is not a terminal, unless ``force`` is true.
    force : bool, default=False
        Draw even when the stream is not a terminal.
    file : file object, default=None
        Where to draw; ``sys.stderr`` when None.
    min_interval : float, default=0.1
        Minimum number of seconds between two redraws.

    Examples
    --------
    >>> import io
    >>> buf = io.StringIO()
    >>> with Progress(3, "demo", force=True, file=buf) as bar:
    ...     for _ in range(3):
    ...         bar.update(1)
    >>> buf.getvalue().endswith("3/3\\n")
    True
    """

    _WIDTH = 30

    def __init__(self, total, desc="", enabled=True, *, force=False, file=None, min_interval=0.1):
        self.total = max(int(total), 0)
        self.desc = desc
        self.file = sys.stderr if file is None else file
        self.min_interval = float(min_interval)
        self.n = 0
        self.enabled = bool(enabled) and (force or _isatty(self.file))
        self._start = time.monotonic()
        self._last_draw = None
        self._last_len = 0
        self._closed = False
        if self.enabled:
            self._draw(time.monotonic())

    def update(self, n=1):
        """Advance by ``n`` steps; redraw if ``min_interval`` has passed."""
        self.n += n
        if not self.enabled or self._closed:
            return
        now = time.monotonic()
        if self._last_draw is None or now - self._last_draw >= self.min_interval:
            self._draw(now)

    def close(self):
        """Draw the final state and end the line.  Calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        if self.enabled:
            self._draw(time.monotonic(), end="\n")

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()
        return False

    def _draw(self, now, end=""):
        self._last_draw = now
        label = f"{self.desc} " if self.desc else ""
        if self.total > 0:
            frac = min(self.n / self.total, 1.0)
            filled = int(frac * self._WIDTH)
            bar = "#" * filled + "." * (self._WIDTH - filled)
            body = f"[{bar}] {frac * 100:3.0f}%"
        else:
            body = ""
        text = f"{label}{body} {now - self._start:5.1f}s {self.n}/{self.total}"
        # Pad so that a shorter line fully covers the previous one.
        padded = text.ljust(self._last_len)
        self._last_len = len(text)
        try:
            self.file.write("\r" + padded + end)
            self.file.flush()
        except (OSError, ValueError):
            # A closed or broken stream must not stop the work it reports on.
            self.enabled = False


def _isatty(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False
