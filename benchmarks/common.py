"""Helpers shared by the benchmark sections: cost, timing, machine facts."""

import contextlib
import io
import os
import platform
import sys
import time

import numpy as np


def loadavg():
    """``os.getloadavg()`` as a list of three floats (1, 5, 15 minutes)."""
    return [round(x, 2) for x in os.getloadavg()]


def sq_cost(X, centers, chunk=4096):
    """Sum over the rows of X of the squared distance to the nearest centre.

    Computed independently of edgekm, in float64, from coordinate
    differences (no ``|x|^2 - 2 x.c + |c|^2`` expansion, so no cancellation on
    data with large values such as KDD99).
    """
    C = np.asarray(centers, dtype=np.float64)
    k, d = C.shape
    total = 0.0
    D = np.empty((chunk, k))
    for lo in range(0, X.shape[0], chunk):
        Xc = np.asarray(X[lo:lo + chunk], dtype=np.float64)
        n = Xc.shape[0]
        Dn = D[:n]
        Dn.fill(0.0)
        for j in range(d):
            t = Xc[:, j, None] - C[None, :, j]
            t *= t
            Dn += t
        total += float(Dn.min(axis=1).sum())
    return total


def batches(X, size):
    """Consecutive row slices of X of at most ``size`` rows."""
    for lo in range(0, X.shape[0], size):
        yield X[lo:lo + size]


def rss_bytes():
    """Resident set size of this process (VmRSS from /proc/self/status)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmRSS not found")  # pragma: no cover


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def machine():
    """What the figures were measured on."""
    import river
    import sklearn

    import edgekm

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        config = edgekm.show_config()
    try:
        from threadpoolctl import threadpool_info
        pools = [{k: p.get(k) for k in ("user_api", "internal_api", "num_threads")}
                 for p in threadpool_info()]
    except Exception:  # pragma: no cover - informational only
        pools = []
    return {
        "cpu_model": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "ram_bytes": _mem_total(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "sklearn": sklearn.__version__,
        "river": river.__version__,
        "edgekm": edgekm.__version__,
        "edgekm_config": config,
        "threadpools": pools,
    }


class Stopwatch:
    """Accumulates elapsed ``perf_counter`` time over ``with`` blocks."""

    def __init__(self):
        self.seconds = 0.0

    def __enter__(self):
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds += time.perf_counter() - self._t0
        return False
