"""EdgeFilter: summaries, compression accounting, anomalies, windows and drift."""

import numpy as np
import pytest

from helpers.fakes import FakeClock
from helpers.versions import blobs, make_version
from edgekm import EdgeFilter
from edgekm.filter import _bins, _bin_value, _quantiles, psi, BINS_PER_OCTAVE
from edgekm.sync.wire.telemetry import decode_telemetry, encode_telemetry, summarize


def _stream(seed=0, n=20000, shift=0.0):
    X, centers = blobs(n, k=6, d=5, seed=0)
    Y, _ = blobs(n, k=6, d=5, seed=seed + 1, shift=shift)
    return X, centers, Y


def test_summary_matches_the_points_and_the_ratio_is_the_encoding():
    X, centers, Y = _stream()
    v = make_version(X, centers)
    f = EdgeFilter(v, clock=FakeClock(1000.0), device="dev-1", boot=7, summarize=summarize)
    assert f.observe(Y[:5000]) == []
    s = f.flush()
    lab = f.assigner.assign(Y[:5000]).labels
    assert np.array_equal(s.counts, np.bincount(lab, minlength=6))
    for c in range(6):
        assert np.allclose(s.sums[c], Y[:5000][lab == c].sum(axis=0))
        assert np.allclose(s.sumsq[c], (Y[:5000][lab == c] ** 2).sum(axis=0))
    body = encode_telemetry(s)
    assert s.forwarded_bytes == len(body)
    assert s.raw_bytes == 5000 * 5 * 8
    assert s.compression_ratio == len(body) / (5000 * 5 * 8)
    back = decode_telemetry(body)
    assert back.forwarded_bytes == len(body) and back.summary_id == ("m", "dev-1", 7, 0)
    assert f.flush() is None                     # empty window
    assert f.last_stats["compression_ratio"] == s.compression_ratio


def test_anomalies_capped_highest_scores_kept_and_drops_counted():
    X, centers, Y = _stream()
    v = make_version(X, centers)
    f = EdgeFilter(v, clock=FakeClock(1000.0), max_anomalies=5, anomaly_threshold=1.0)
    f.observe(Y[:3000])
    f.observe(Y[3000:6000])
    r = f.assigner.assign(Y[:6000])
    anomalous = np.sort(r.scores[r.scores > 1.0])[::-1]
    dropped = f.anomalies_dropped
    s = f.flush()
    assert len(s.anomalies) == 5 and dropped == len(anomalous) - 5
    assert np.array_equal(np.sort(s.anomaly_scores)[::-1], anomalous[:5])
    assert f.last_stats["anomalies_dropped"] == dropped
    # forwarded rows are the raw points
    for x, lab in zip(s.anomalies, s.anomaly_labels):
        assert f.assigner.assign_one(np.ascontiguousarray(x))[0] == lab


def test_windows_close_on_time_and_on_a_version_change():
    X, centers, Y = _stream()
    v1 = make_version(X, centers)
    v2 = make_version(X, centers + 0.1, version=2, parent=1)
    clock = FakeClock(100.0)
    f = EdgeFilter(v1, clock=clock, window_seconds=10.0)
    f.observe(Y[:100])
    clock.now = 105.0
    assert f.observe(Y[100:200]) == []
    clock.now = 110.0
    closed = f.observe(Y[200:300])
    assert len(closed) == 1 and closed[0].n_points == 200 and closed[0].window == (100.0, 105.0)
    s = f.set_version(v2)
    assert s.n_points == 100 and s.version == 1 and s.seq == 1
    f.observe(Y[0])                               # one point
    s = f.flush()
    assert s.version == 2 and s.n_points == 1 and s.seq == 2


def test_stationary_stream_no_drift_and_under_one_percent():
    X, centers, _ = _stream(n=40000)
    v = make_version(X[:20000], centers)
    f = EdgeFilter(v, clock=FakeClock(1000.0), summarize=summarize)
    for a in range(20000, 40000, 10000):
        f.observe(X[a:a + 10000])
        s = f.flush()
        assert s.drift_score < 0.5, f.last_stats
        assert s.compression_ratio <= 0.01


@pytest.mark.parametrize("shift", [2.0, 5.0])
def test_moving_centres_are_flagged(shift):
    X, centers, Y = _stream(shift=shift)
    v = make_version(X, centers)
    f = EdgeFilter(v, clock=FakeClock(1000.0))
    f.observe(Y[:10000])
    s = f.flush()
    assert s.drift_score >= 1.0, f.last_stats


def test_share_shift_is_flagged_by_psi():
    X, centers = blobs(20000, k=4, d=3, seed=0)
    v = make_version(X, centers)
    labels = EdgeFilter(v).assigner.assign(X).labels
    only_two = X[labels < 2][:5000]                 # the same clusters, other shares
    f = EdgeFilter(v, clock=FakeClock(1000.0))
    f.observe(only_two)
    s = f.flush()
    assert s.psi > 0.2 and s.drift_score >= 1.0


def test_psi_and_histogram_helpers():
    assert psi([10, 10], [1, 1]) == pytest.approx(0.0)
    assert np.isfinite(psi([10, 0], [1, 1]))
    v = np.array([0.0, 1e-15, 1.0, 3.0, 1e15, 2.0 ** 70])
    b = _bins(v)
    assert b[0] == 0 and b[5] == 128 * BINS_PER_OCTAVE + 2      # overflow bin
    for x, bb in zip(v[1:5], b[1:5]):
        assert abs(np.log2(_bin_value(bb)) - np.log2(x)) <= 0.5 / BINS_PER_OCTAVE + 1e-12
    rng = np.random.default_rng(0)
    vals = rng.exponential(size=10001)
    hist = np.bincount(_bins(vals), minlength=(128 * BINS_PER_OCTAVE) + 3)
    exact = np.quantile(vals, [0.5, 0.95, 0.99], method="inverted_cdf")
    got = _quantiles(hist)
    assert np.all(np.abs(np.log2(got / exact)) <= 0.5 / BINS_PER_OCTAVE + 1e-9)


def test_parameters_are_checked():
    X, centers = blobs(50, k=2, d=2)
    v = make_version(X, centers)
    for kw in ({"anomaly_threshold": -1}, {"window_seconds": 0}, {"max_anomalies": -1}):
        with pytest.raises(ValueError):
            EdgeFilter(v, **kw)
