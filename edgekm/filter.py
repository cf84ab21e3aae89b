"""Telemetry filtering on the device: per-window cluster summaries, anomalies and drift.

An :class:`EdgeFilter` assigns every point to a centroid version
(:class:`edgekm.Assigner`) and, instead of the raw points, produces one
:class:`WindowSummary` per window (a plain value; the device turns it into the wire's
:class:`edgekm.sync.wire.telemetry.TelemetrySummary` with
:func:`edgekm.sync.wire.telemetry.summarize`): per cluster the
count, sum and sum of squares (float64, fixed memory ``k x d``), the raw
points whose anomaly score exceeds ``anomaly_threshold`` (at most
``max_anomalies`` per window, the highest scores; the others are counted in
:attr:`EdgeFilter.anomalies_dropped`), the window's p50/p95/p99 of squared
assignment distance and a drift score.

Windows close when ``window_seconds`` have passed since the window's first
point (checked when points arrive), when the version changes
(:meth:`EdgeFilter.set_version`) and on :meth:`EdgeFilter.flush`.

Quantiles in fixed memory
-------------------------
Distances go into a fixed histogram over ``log2`` of the value:
:data:`BINS_PER_OCTAVE` bins per factor of 2 between ``2**LOG2_MIN`` and
``2**LOG2_MAX``, plus one bin for exact zeros and one at each end for values
outside the range.  A quantile is the geometric midpoint of the bin where
the cumulative count reaches it, so within the range it is within a factor
``2 ** (1 / (2 * BINS_PER_OCTAVE))`` (1.1 % with 32 bins per octave) of the
exact empirical quantile (the smallest value with at least that fraction of
the points at or below it).  Memory: 4 histograms of 8,194 int64 counts
(256 KiB), whatever the stream.

Drift
-----
- Cluster shares against the version's training shares (``cluster_weights``
  normalised): population stability index
  ``PSI = sum_c (p_c - q_c) * ln(p_c / q_c)`` with epsilon smoothing
  ``p_c = (n_c / n + eps) / (1 + k * eps)`` (same for ``q``),
  ``eps = PSI_EPSILON = 1e-4``, so that an empty cluster gives a finite,
  large term instead of infinity.
- Distances: the window's p50/p95/p99 of squared distance are reported
  against the version's baseline, the cluster-weighted average of the
  per-cluster quantiles (:attr:`EdgeFilter.baseline`).  That average is not
  the quantile of the mixture (a wide cluster dominates the mixture's tail),
  so the drift score uses per-cluster ratios instead, which are calibrated:
  for each level ``q`` in (50, 95, 99) the filter histograms
  ``s / Q_q[label]`` (the distance over its own cluster's quantile).  On a
  stream that matches the version, the window's ``q``-th percentile of that
  ratio is about 1 whatever the clusters' sizes and spreads.
  ``ratio = max(r50, r95, r99)``.
- ``drift_score``: the calibrated test of :func:`edgekm.drift.drift_test` on the
  window's counts, sums, sums of squares and per-cluster counts beyond p99
  (``beyond_p99``, kept here and sent up) against the version's centres,
  training shares and p99: tests of the shares, of the fraction beyond each
  cluster's p99 and of each cluster's mean, each with a null that accounts for
  the window's size, Bonferroni-combined so that ``drift_score >= 1`` on at most
  ``edgekm.drift.ALPHA`` (1 %) of the windows of a stationary stream, at any window
  size.  PSI and the distance quantiles above are reported, not scored.

Scores that cannot be computed
------------------------------
A version published before the quantiles had a floor can hold a cluster whose
p99 is 0; a point near that centre then scores infinity (:mod:`edgekm.assign`).
Such a score is never an anomaly of the summary (the wire format needs finite
scores): it is counted instead, per window in :attr:`EdgeFilter.last_stats`
(``"unscored"``) and in total in :attr:`EdgeFilter.n_unscored`, which survives
:meth:`EdgeFilter.set_version`.  The point still counts in the cluster sums and
the drift histograms (its ratio capped).  Versions published now have a positive
floor under every quantile, so their scores are always finite.

Compression
-----------
``raw_bytes`` is ``n_points * n_features * itemsize`` of the points the
window replaced.  The bytes forwarded are a property of the wire encoding, so
the core does not count them: :func:`edgekm.sync.wire.telemetry.summarize`
sets ``forwarded_bytes`` to the exact length of the encoded summary, and
:attr:`TelemetrySummary.compression_ratio` is their quotient.  Pass it as
``summarize`` (the :class:`edgekm.sync.DeviceAgent` does) and the filter
returns wire summaries and reports their compression in :attr:`EdgeFilter.last_stats`.
"""

import math
import numbers
import time
from dataclasses import dataclass

import numpy as np

from ._defaults import MAX_ANOMALIES
from ._validation import Interval, validate_params
from .assign import Assigner
from .drift import drift_test

__all__ = ["EdgeFilter", "WindowSummary", "PSI_EPSILON",
           "BINS_PER_OCTAVE"]

BINS_PER_OCTAVE = 32
LOG2_MIN = -64
LOG2_MAX = 64
_N_LOG_BINS = (LOG2_MAX - LOG2_MIN) * BINS_PER_OCTAVE
#: bin 0: exact zeros; 1: below 2**LOG2_MIN; 2 .. N+1: the log bins; N+2: above 2**LOG2_MAX
_N_BINS = _N_LOG_BINS + 3
PSI_EPSILON = 1e-4
RATIO_CAP = 1e6
QUANTILE_LEVELS = (0.50, 0.95, 0.99)


@dataclass(frozen=True, eq=False)
class WindowSummary:
    """One closed window of an :class:`EdgeFilter`, as plain values.  Arrays float64
    unless stated.

    counts (k,), sums (k, d), sumsq (k, d): per-cluster weight, sum and sum of squares
    of the points assigned to each cluster.  anomalies (a, d) in the version's dtype,
    anomaly_labels (a,) int32, anomaly_scores (a,).  anomalies_dropped: anomalies over
    the filter's cap, counted but not kept.  dist_quantiles (3,): p50/p95/p99 of the
    squared assignment distance.  psi, drift_score: see the module's docstring.
    beyond_p99 (k,): per cluster, the points beyond the cluster's p99 (score above 1);
    None from a summary that does not carry them (telemetry v1).
    raw_bytes: the bytes of the points the window replaced.  ``version`` is the
    version id assigned with.  The fields are those of the wire's
    :class:`edgekm.sync.wire.telemetry.TelemetrySummary` but ``forwarded_bytes``,
    which only the encoding knows (:func:`edgekm.sync.wire.telemetry.summarize`).

    Examples
    --------
    >>> import numpy as np
    >>> w = WindowSummary(model="m", device="d", boot=0, seq=3, window=(0.0, 1.0), version=1,
    ...                   counts=np.ones(2), sums=np.zeros((2, 1)), sumsq=np.zeros((2, 1)),
    ...                   n_points=2, raw_bytes=16, anomalies=np.zeros((0, 1)),
    ...                   anomaly_labels=np.zeros(0, np.int32), anomaly_scores=np.zeros(0),
    ...                   psi=0.0, dist_quantiles=np.zeros(3), drift_score=0.0,
    ...                   assign_latency_us=1.0)
    >>> w.summary_id
    ('m', 'd', 0, 3)
    """

    model: str
    device: str
    boot: int
    seq: int
    window: tuple
    version: int
    counts: np.ndarray
    sums: np.ndarray
    sumsq: np.ndarray
    n_points: int
    raw_bytes: int
    anomalies: np.ndarray
    anomaly_labels: np.ndarray
    anomaly_scores: np.ndarray
    psi: float
    dist_quantiles: np.ndarray
    drift_score: float
    assign_latency_us: float
    anomalies_dropped: int = 0
    beyond_p99: np.ndarray = None

    @property
    def summary_id(self):
        return (self.model, self.device, self.boot, self.seq)


def _bins(values):
    """Histogram bin of each non-negative value (vectorised)."""
    v = np.asarray(values, dtype=np.float64)
    out = np.zeros(v.shape, dtype=np.intp)
    pos = v > 0
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        lg = np.log2(np.where(pos, v, 1.0))
    b = np.floor((lg - LOG2_MIN) * BINS_PER_OCTAVE)
    b = np.clip(b, -1, _N_LOG_BINS) + 2          # -1 -> 1 (underflow), N -> N+2 (overflow)
    out[pos] = b[pos].astype(np.intp)
    return out


def _bin_value(b):
    """The representative value of bin b (geometric midpoint)."""
    if b == 0:
        return 0.0
    if b == 1:
        return 2.0 ** LOG2_MIN
    if b == _N_BINS - 1:
        return 2.0 ** LOG2_MAX
    return 2.0 ** (LOG2_MIN + (b - 2 + 0.5) / BINS_PER_OCTAVE)


def _quantiles(hist, levels=QUANTILE_LEVELS):
    n = int(hist.sum())
    if n == 0:
        return np.zeros(len(levels))
    cum = np.cumsum(hist)
    out = []
    for q in levels:
        rank = max(1, math.ceil(q * n))
        out.append(_bin_value(int(np.searchsorted(cum, rank, side="left"))))
    return np.array(out, dtype=np.float64)


def psi(counts, reference_weights, eps=PSI_EPSILON):
    """Population stability index of ``counts`` against ``reference_weights`` (smoothed)."""
    counts = np.asarray(counts, dtype=np.float64)
    ref = np.asarray(reference_weights, dtype=np.float64)
    k = counts.shape[0]
    n, r = counts.sum(), ref.sum()
    p = (counts / n if n > 0 else np.zeros(k)) + eps
    q = (ref / r if r > 0 else np.full(k, 1.0 / k)) + eps
    p /= 1 + k * eps
    q /= 1 + k * eps
    return float(np.sum((p - q) * np.log(p / q)))


class EdgeFilter:
    """Summarise a device's stream per window against a centroid version.

    Parameters
    ----------
    version : CentroidVersion
        The version to assign with.
    anomaly_threshold : float, default=1.0
        Points with an anomaly score above it are forwarded raw (1.0: beyond
        their cluster's 99th percentile).
    window_seconds : float, default=60.0
        A window closes when a point arrives this long after its first point.
    clock : callable, default=time.time
        Returns Unix seconds.
    max_anomalies : int, default=32
        Raw anomalies kept per window (the highest scores).  This bounds the
        forwarded bytes of a window.
    device : str, default="local"
        Device id written in the summaries.
    boot : int, default=0
        Boot id written in the summaries.
    seq_source : callable or None, default=None
        Returns the ``seq`` of each new summary; None counts from 0.
    summarize : callable or None, default=None
        Applied to the :class:`WindowSummary` of each closed window; what it returns
        is what :meth:`observe`, :meth:`flush` and :meth:`set_version` return.  The
        device passes :func:`edgekm.sync.wire.telemetry.summarize` (the wire's
        ``TelemetrySummary``, with its exact ``forwarded_bytes``).  None returns the
        :class:`WindowSummary` itself.

    Attributes
    ----------
    anomalies_dropped : int
        Anomalies over ``max_anomalies`` in the current window (not forwarded).
    last_stats : dict or None
        Details of the last closed window (drift terms, dropped anomalies, the
        ``unscored`` points, and the ``compression_ratio`` of what ``summarize``
        returned, None without one).
    n_unscored : int
        Points whose anomaly score was not finite, since the filter was made (module
        docstring); never forwarded as anomalies.

    Examples
    --------
    >>> import numpy as np
    >>> from edgekm.sync.wire.version import CentroidVersion
    >>> v = CentroidVersion(model="demo", version=1, parent=None, created=0.0,
    ...                     centers=np.array([[0.0, 0.0], [10.0, 0.0]]),
    ...                     cluster_weights=np.array([1.0, 1.0]),
    ...                     quantiles=np.array([[0.5, 1.5, 2.0], [0.5, 1.5, 2.0]]),
    ...                     training_weight=2.0, cost=1.0)
    >>> f = EdgeFilter(v, clock=lambda: 100.0)
    >>> f.observe(np.array([[0.5, 0.0], [10.0, 0.5], [0.0, 5.0]]))
    []
    >>> s = f.flush()
    >>> s.counts.tolist(), s.anomalies.tolist(), s.raw_bytes
    ([2.0, 1.0], [[0.0, 5.0]], 48)

    The wire's summary of a window, with the bytes it takes on the wire:

    >>> from edgekm.sync.wire.telemetry import summarize
    >>> f = EdgeFilter(v, clock=lambda: 100.0, summarize=summarize)
    >>> f.observe(np.array([[0.5, 0.0], [10.0, 0.5], [0.0, 5.0]]))
    []
    >>> t = f.flush()
    >>> t.forwarded_bytes > 0, f.last_stats["compression_ratio"] == t.compression_ratio
    (True, True)
    """

    def __init__(self, version, *, anomaly_threshold=1.0, window_seconds=60.0, clock=time.time,
                 max_anomalies=32, device="local", boot=0, seq_source=None, summarize=None):
        max_anomalies = validate_params(
            {"anomaly_threshold": anomaly_threshold, "window_seconds": window_seconds,
             "max_anomalies": max_anomalies},
            {"max_anomalies": Interval(numbers.Integral, 0, MAX_ANOMALIES)})["max_anomalies"]
        self.anomaly_threshold = float(anomaly_threshold)
        self.window_seconds = float(window_seconds)
        self.clock = clock
        self.max_anomalies = max_anomalies
        self.device = device
        self.boot = int(boot)
        self._seq = 0
        self.seq_source = seq_source
        self.summarize = summarize
        self.last_stats = None
        self.n_unscored = 0
        self._set(version)

    # ------------------------------------------------------------ state
    def _set(self, version):
        self.version = version
        self.assigner = version if isinstance(version, Assigner) else Assigner(version)
        v = self.assigner.version
        k, d = self.assigner.n_clusters, self.assigner.n_features
        self._k, self._d = k, d
        self._itemsize = np.dtype(self.assigner.dtype).itemsize
        w = np.asarray(v.cluster_weights, dtype=np.float64)
        self._shares = w / w.sum() if w.sum() > 0 else np.full(k, 1.0 / k)
        self._q = np.asarray(v.quantiles, dtype=np.float64)
        total = w.sum()
        self.baseline = (w @ self._q / total) if total > 0 else self._q.mean(axis=0)
        self.counts = np.zeros(k, dtype=np.float64)
        self.beyond = np.zeros(k, dtype=np.float64)
        self.sums = np.zeros((k, d), dtype=np.float64)
        self.sumsq = np.zeros((k, d), dtype=np.float64)
        self._hist = np.zeros((4, _N_BINS), dtype=np.int64)
        self._anom_x = np.zeros((self.max_anomalies, d), dtype=self.assigner.dtype)
        self._anom_l = np.zeros(self.max_anomalies, dtype=np.int32)
        self._anom_s = np.zeros(self.max_anomalies, dtype=np.float64)
        self._reset()

    def _reset(self):
        self.counts[:] = 0
        self.beyond[:] = 0
        self.sums[:] = 0
        self.sumsq[:] = 0
        self._hist[:] = 0
        self.n_points = 0
        self.n_anomalies = 0
        self.anomalies_dropped = 0
        self.window_unscored = 0
        self.assign_seconds = 0.0
        self.window_start = None
        self.window_end = None

    @property
    def version_id(self):
        return self.assigner.version_id

    def _next_seq(self):
        if self.seq_source is not None:
            return int(self.seq_source())
        seq = self._seq
        self._seq += 1
        return seq

    # ------------------------------------------------------------ input
    def observe(self, X):
        """Assign and summarise a batch (2-D) or one point (1-D).

        Returns the summaries of the windows this call closed (a window closes
        on time before the new points are added); usually an empty list.
        """
        now = float(self.clock())
        closed = []
        if self.window_start is not None and now - self.window_start >= self.window_seconds:
            s = self.flush()
            if s is not None:
                closed.append(s)
        t0 = time.perf_counter()
        if isinstance(X, np.ndarray) and X.ndim == 1:
            one = self.assigner.assign_one(X)
            elapsed = time.perf_counter() - t0
            x = np.asarray(X, dtype=self.assigner.dtype).reshape(1, -1)
            self._add(x, np.array([one[0]], dtype=np.int32), np.array([one[1]]),
                      np.array([one[2]]), now, elapsed)
            return closed
        result = self.assigner.assign(X)
        elapsed = time.perf_counter() - t0
        X = np.asarray(X, dtype=self.assigner.dtype)
        if X.shape[0]:
            self._add(X, result.labels, result.distances, result.scores, now, elapsed)
        return closed

    def _add(self, X, labels, dist, scores, now, elapsed):
        k = self._k
        n = X.shape[0]
        if self.window_start is None:
            self.window_start = now
        self.window_end = max(now, self.window_start)
        self.assign_seconds += elapsed
        self.n_points += n
        xd = X.astype(np.float64, copy=False)
        self.counts += np.bincount(labels, minlength=k)
        np.add.at(self.sums, labels, xd)
        np.add.at(self.sumsq, labels, xd * xd)
        self._hist[0] += np.bincount(_bins(dist), minlength=_N_BINS)
        q = self._q[labels]
        for i in range(3):
            ratio = np.where(dist == 0, 0.0, np.inf)
            np.divide(dist, q[:, i], out=ratio, where=q[:, i] > 0)
            self._hist[1 + i] += np.bincount(_bins(np.minimum(ratio, RATIO_CAP)),
                                             minlength=_N_BINS)
        self.beyond += np.bincount(labels[scores > 1.0], minlength=k)
        finite = np.isfinite(scores)
        if not finite.all():
            unscored = int(np.count_nonzero(~finite))
            self.window_unscored += unscored
            self.n_unscored += unscored
        anomalous = np.flatnonzero(finite & (scores > self.anomaly_threshold))
        if anomalous.size:
            self._keep_anomalies(X[anomalous], labels[anomalous], scores[anomalous])

    def _keep_anomalies(self, X, labels, scores):
        m, cap = self.n_anomalies, self.max_anomalies
        total = m + X.shape[0]
        if total <= cap:
            self._anom_x[m:total] = X
            self._anom_l[m:total] = labels
            self._anom_s[m:total] = scores
            self.n_anomalies = total
            return
        # keep the highest scores (stable: earlier points first on ties)
        all_s = np.concatenate([self._anom_s[:m], scores])
        order = np.argsort(-all_s, kind="stable")[:cap]
        order.sort()
        all_x = np.concatenate([self._anom_x[:m], X])
        all_l = np.concatenate([self._anom_l[:m], labels])
        self._anom_x[:cap] = all_x[order]
        self._anom_l[:cap] = all_l[order]
        self._anom_s[:cap] = all_s[order]
        self.anomalies_dropped += total - cap
        self.n_anomalies = cap

    # ------------------------------------------------------------ output
    def drift(self):
        """The current window's drift terms: psi, ratios, quantiles and drift_score."""
        quant = _quantiles(self._hist[0])
        ratios = np.array([_quantiles(self._hist[1 + i])[i] for i in range(3)])
        p = psi(self.counts, self._shares) if self.n_points else 0.0
        test = drift_test(self.counts, self.beyond, self.sums, self.sumsq,
                          self.assigner.version.centers, self._shares, scale=self._q[:, 2])
        with np.errstate(divide="ignore", invalid="ignore"):
            vs_baseline = np.where(self.baseline > 0, quant / np.where(self.baseline > 0,
                                                                       self.baseline, 1.0), 0.0)
        return {"psi": p, "dist_quantiles": quant, "baseline": self.baseline.copy(),
                "quantile_vs_baseline": vs_baseline, "ratio_quantiles": ratios,
                "drift_terms": test["drift_terms"], "drift_cluster": test["cluster"],
                "beyond_p99": self.beyond.copy(), "drift_score": test["drift_score"]}

    def flush(self):
        """Close the current window; returns its summary (:class:`WindowSummary`, or what
        ``summarize`` makes of it), or None if the window is empty.  The window is closed
        even when ``summarize`` raises (the exception propagates)."""
        if self.n_points == 0:
            self._reset()
            return None
        drift = self.drift()
        a = self.n_anomalies
        window = WindowSummary(
            model=self.assigner.version.model, device=self.device, boot=self.boot,
            seq=self._next_seq(), window=(float(self.window_start), float(self.window_end)),
            version=self.version_id, counts=self.counts.copy(), sums=self.sums.copy(),
            sumsq=self.sumsq.copy(), n_points=int(self.n_points),
            raw_bytes=int(self.n_points * self._d * self._itemsize),
            anomalies=self._anom_x[:a].copy(), anomaly_labels=self._anom_l[:a].copy(),
            anomaly_scores=self._anom_s[:a].copy(), psi=float(drift["psi"]),
            dist_quantiles=np.minimum(drift["dist_quantiles"], 2.0 ** LOG2_MAX),
            drift_score=drift["drift_score"],
            assign_latency_us=float(self.assign_seconds / self.n_points * 1e6),
            anomalies_dropped=int(self.anomalies_dropped), beyond_p99=self.beyond.copy())
        try:
            summary = window if self.summarize is None else self.summarize(window)
        except BaseException:
            self._reset()
            raise
        self.last_stats = {"seq": window.seq, "n_points": window.n_points,
                           "anomalies": a, "anomalies_dropped": self.anomalies_dropped,
                           "unscored": self.window_unscored,
                           "compression_ratio": getattr(summary, "compression_ratio", None),
                           **drift}
        self._reset()
        return summary

    def set_version(self, version):
        """Switch to another version; closes the current window (returns its summary or None)."""
        summary = self.flush()
        self._set(version)
        return summary
