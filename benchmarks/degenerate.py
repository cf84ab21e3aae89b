"""Degenerate streams: ``partial_fit`` on a constant stream and on a few
distinct points, as a ratio of the time on a Gaussian stream of the same
shape, measured in one run (target: at most 1.5x, issue 13).

An idle sensor sends a constant stream; before the reduce stopped once every
member sat on a representative, each split peeled off one duplicate and the
reduce became O(n m).  Times are the best of ``--reps`` runs per stream,
interleaved so that load on the machine hits every stream alike.

    python benchmarks/degenerate.py [--n 200000] [--reps 3] [--json out.json]
"""

import argparse
import json
import time

import numpy as np

import edgekm
import edgekm._backend

D, K, BATCH = 10, 10, 1024
ALGORITHMS = ("ct", "cc", "rcc", "onlinecc")


def streams(n, seed=0):
    """The Gaussian reference and the degenerate streams, float32 (n, D)."""
    rng = np.random.default_rng(seed)
    gaussian = rng.normal(size=(n, D)).astype(np.float32)
    constant = np.full((n, D), 3.25, dtype=np.float32)
    rows = rng.normal(size=(5, D)).astype(np.float32)
    five = np.ascontiguousarray(rows[rng.integers(0, 5, size=n)])
    return {"gaussian": gaussian, "constant": constant, "five_distinct": five}


def time_stream(X, algorithm):
    """Seconds for partial_fit over X in batches of BATCH, then one query."""
    est = edgekm.StreamingKMeans(n_clusters=K, algorithm=algorithm, random_state=0)
    t0 = time.perf_counter()
    for lo in range(0, X.shape[0], BATCH):
        est.partial_fit(X[lo:lo + BATCH])
    est.cluster_centers_
    return time.perf_counter() - t0


def measure(n, reps):
    data = streams(n)
    best = {a: {s: float("inf") for s in data} for a in ALGORITHMS}
    for _ in range(reps):
        for algorithm in ALGORITHMS:
            for name, X in data.items():
                best[algorithm][name] = min(best[algorithm][name], time_stream(X, algorithm))
    return {
        "n": n, "d": D, "k": K, "batch": BATCH, "reps": reps, "backend": edgekm._backend.NAME,
        "seconds": best,
        "ratio_to_gaussian": {a: {s: best[a][s] / best[a]["gaussian"] for s in data}
                              for a in ALGORITHMS},
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    out = measure(args.n, args.reps)
    for a, r in out["ratio_to_gaussian"].items():
        print(f"{a:9s} constant {r['constant']:.2f}x  five distinct {r['five_distinct']:.2f}x  "
              f"(gaussian {out['seconds'][a]['gaussian']:.3f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
