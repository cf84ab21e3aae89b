"""Drift test benchmark: false alarms on stationary streams, detection delay on shifts.

The device's drift score (``edgekm.filter.EdgeFilter``, :func:`edgekm.drift.drift_test`)
is measured end to end: a version is fitted the in-process way (StreamingKMeans CC
coreset, ``fit_centers``, ``edgekm.solve.cluster_statistics``) on a training sample,
and windows are streamed through an ``EdgeFilter`` with that version.

- **False alarms.**  Each window is drawn with replacement from the whole data set
  (a stationary stream of the distribution the training sample came from).  The
  fraction of windows with ``drift_score >= 1`` per data set and window size.
  Target: at most 1 % (``edgekm.drift.ALPHA``).
- **Detection.**  Gaussian blobs (d = 10, k = 8, unit variance); from window 1 on,
  one cluster's centre is moved by ``shift`` standard deviations in a random
  direction.  Delay: the first window (1-based) whose score is >= 1, over
  ``--seeds`` seeds.  Target: a shift of 1 sigma flagged within 3 windows of 10,000.

Run ``python benchmarks/drift.py`` (writes ``results_drift.json``) and
``python benchmarks/drift.py --render`` (prints the docs/benchmarks.md section).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from calibration_paths import _blobs, machine  # noqa: E402
from spread_data import load  # noqa: E402

from edgekm import EdgeFilter, StreamingKMeans  # noqa: E402
from edgekm.solve import cluster_statistics  # noqa: E402
from edgekm.sync.wire.version import CentroidVersion  # noqa: E402

RESULTS = HERE / "results_drift.json"
SETS = {"blobs": 8, "power": 8, "kdd99": 10, "shuttle": 5}
SIZES = (1_000, 10_000, 100_000)
#: windows per size (fewer at large sizes: the stream is the cost)
WINDOWS = {1_000: 400, 10_000: 200, 100_000: 60}
SHIFTS = (0.25, 0.5, 1.0, 2.0, 3.0)
MAX_WINDOWS = 20


def fit_version(X, k, seed=0):
    model = StreamingKMeans(k, algorithm="cc", random_state=seed)
    for batch in np.array_split(X, max(1, len(X) // 10_000)):
        model.partial_fit(batch)
    cs = model.coreset()
    centers, _, _ = cs.fit_centers(k, random_state=seed)
    w, q = cluster_statistics(cs, centers)
    return CentroidVersion(model="bench", version=1, parent=None, created=0.0,
                           centers=np.ascontiguousarray(centers, dtype=X.dtype),
                           cluster_weights=np.asarray(w, dtype=np.float64), quantiles=q,
                           training_weight=float(np.sum(w)), cost=0.0)


def window_scores(version, windows):
    f = EdgeFilter(version, window_seconds=1e18, clock=lambda: 0.0)
    out = []
    for W in windows:
        f.observe(W)
        f.flush()
        out.append({"score": f.last_stats["drift_score"], **f.last_stats["drift_terms"]})
    return out


def data(name):
    if name == "blobs":
        return _blobs(1_000_000, 10, 8, seed=1), "8 Gaussian blobs, d = 10"
    return load(name)


def false_alarms(name, k, sizes, train_rows):
    X, desc = data(name)
    version = fit_version(X[:train_rows], k)
    rng = np.random.default_rng(7)
    rows = []
    for size in sizes:
        n_w = WINDOWS[size]
        t0 = time.perf_counter()
        scores = window_scores(version, (X[rng.integers(0, len(X), size)]
                                         for _ in range(n_w)))
        s = np.array([r["score"] for r in scores])
        worst = {t: float(max(r[t] for r in scores)) for t in ("shares", "tail", "mean")}
        rows.append({"data": name, "desc": desc, "k": k, "d": int(X.shape[1]),
                     "window": size, "windows": n_w, "alarms": int((s >= 1).sum()),
                     "alarm_rate": float((s >= 1).mean()), "median_score": float(np.median(s)),
                     "max_score": float(s.max()), "max_terms": worst,
                     "seconds": time.perf_counter() - t0})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def detection(shifts, seeds, size=10_000, d=10, k=8):
    rows = []
    for shift in shifts:
        delays = []
        for seed in range(seeds):
            rng = np.random.default_rng(100 + seed)
            centres = rng.uniform(-10, 10, size=(k, d))
            train = centres[rng.integers(0, k, 200_000)] + rng.normal(size=(200_000, d))
            version = fit_version(np.ascontiguousarray(train, dtype=np.float32), k, seed)
            moved = centres.copy()
            u = rng.normal(size=d)
            moved[0] += shift * u / np.linalg.norm(u)

            def stream():
                for _ in range(MAX_WINDOWS):
                    lab = rng.integers(0, k, size)
                    yield np.ascontiguousarray(moved[lab] + rng.normal(size=(size, d)),
                                               dtype=np.float32)
            delay = None
            for i, r in enumerate(window_scores(version, stream()), start=1):
                if r["score"] >= 1:
                    delay = i
                    break
            delays.append(delay)
        got = [x for x in delays if x is not None]
        rows.append({"shift_sigma": shift, "window": size, "seeds": seeds,
                     "detected": len(got), "median_delay": float(np.median(got)) if got else None,
                     "max_delay": max(got) if got else None, "delays": delays})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def render(res):
    lines = ["<!-- drift section: rendered by benchmarks/drift.py --render from "
             "benchmarks/results_drift.json -->", "",
             "### False alarms on stationary streams (target: at most 1 % of windows score >= 1)",
             "",
             "| data | d | k | window | windows | score >= 1 | rate | median score | max score "
             "| max shares / tail / mean term |", "|---|---|---|---|---|---|---|---|---|---|"]
    total = alarms = 0
    for r in res["false_alarms"]:
        total += r["windows"]
        alarms += r["alarms"]
        t = r["max_terms"]
        lines.append(f"| {r['desc']} | {r['d']} | {r['k']} | {r['window']:,} | {r['windows']} | "
                     f"{r['alarms']} | {100 * r['alarm_rate']:.2f} % | {r['median_score']:.3f} | "
                     f"{r['max_score']:.3f} | {t['shares']:.2f} / {t['tail']:.2f} / "
                     f"{t['mean']:.2f} |")
    lines += ["", f"All rows: {alarms} of {total} windows score >= 1 "
              f"({100 * alarms / total:.2f} %).", "",
              "### Detection delay (blobs d = 10, k = 8, one cluster moved, windows of "
              "10,000; target: 1 sigma within 3 windows)", "",
              "| shift (sigma) | seeds | detected within 20 windows | median delay | max delay |",
              "|---|---|---|---|---|"]
    for r in res["detection"]:
        lines.append(f"| {r['shift_sigma']:g} | {r['seeds']} | {r['detected']} | "
                     f"{r['median_delay']} | {r['max_delay']} |")
    m = res["machine"]
    lines += ["", f"Measured on {m['cpu_model']} ({m['logical_cpus']} logical CPUs, shared), "
              f"Python {m['python']}, NumPy {m['numpy']}, backend {m['backend']}."]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs="*", default=list(SETS))
    ap.add_argument("--sizes", nargs="*", type=int, default=list(SIZES))
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--train-rows", type=int, default=200_000)
    ap.add_argument("--skip-detection", action="store_true")
    ap.add_argument("--render", action="store_true")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    if args.render:
        print(render(json.loads(Path(args.out).read_text())))
        return
    res = {"machine": machine(), "false_alarms": [], "detection": []}
    for name in args.sets:
        res["false_alarms"] += false_alarms(name, SETS[name], args.sizes, args.train_rows)
    if not args.skip_detection:
        res["detection"] = detection(SHIFTS, args.seeds)
    Path(args.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
