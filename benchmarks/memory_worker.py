"""Memory run, in a fresh interpreter: memory_bytes and RSS over a long stream.

``run.py`` starts this script as a subprocess so that the resident set size it
samples belongs to a process that holds nothing but edgekm and the stream
generator (no data sets, no scikit-learn models).  It prints one JSON object
on stdout.

For each algorithm: a fresh ``StreamingKMeans(n_clusters=k)`` (default
parameters, float32) gets ``n_total`` points of a stationary 10-d Gaussian
mixture, generated chunk by chunk into reused buffers and fed to
``partial_fit`` in batches of ``batch`` points, with a query (reading
``cluster_centers_``) every ``query_every`` points.  ``memory_bytes`` is read
at every RSS sample and at the checkpoints 10**4, 10**5, ...; VmRSS is sampled
every ``sample_every`` batches.
"""

import argparse
import gc
import json
import sys
import time

import numpy as np

import edgekm
from common import loadavg, rss_bytes
from datasets import gaussian_mixture_chunks


def run_one(algorithm, n_total, d, k, batch, query_every, sample_every, warmup_fraction):
    gc.collect()
    rss_before = rss_bytes()
    est = edgekm.StreamingKMeans(n_clusters=k, algorithm=algorithm, random_state=0)
    checkpoints = [10 ** e for e in range(4, 12) if 10 ** e <= n_total]
    if n_total not in checkpoints:
        checkpoints.append(n_total)
    at_checkpoint = {}
    # (points seen, rss bytes, memory_bytes), preallocated so that sampling
    # does not itself grow the heap
    n_calls = n_total // batch + len(checkpoints) + 2
    samples = np.zeros((n_calls // sample_every + 2, 3), dtype=np.int64)
    n_samples = 0
    seen = 0
    n_batches = 0
    next_query = query_every
    t0 = time.perf_counter()
    for chunk in gaussian_mixture_chunks(n_total, d=d):
        lo = 0
        while lo < chunk.shape[0]:
            stop = min(lo + batch, chunk.shape[0])
            pending = [c for c in checkpoints if c > seen]
            if pending:
                stop = min(stop, lo + (pending[0] - seen))
            est.partial_fit(chunk[lo:stop])
            seen += stop - lo
            lo = stop
            n_batches += 1
            if seen in checkpoints:
                at_checkpoint[seen] = est.memory_bytes
            if seen >= next_query:
                est.cluster_centers_
                next_query += query_every
            if n_batches % sample_every == 0 or seen == n_total:
                samples[n_samples] = (seen, rss_bytes(), est.memory_bytes)
                n_samples += 1
    elapsed = time.perf_counter() - t0
    samples = samples[:n_samples].tolist()
    warm = [s for s in samples if s[0] >= warmup_fraction * n_total]
    rss_warm = [s[1] for s in warm]
    mem_all = sorted({s[2] for s in samples} | set(at_checkpoint.values()))
    return {
        "algorithm": algorithm,
        "n_points": seen,
        "n_seen_": est.n_seen_,
        "seconds": elapsed,
        "points_per_second": seen / elapsed,
        "memory_bytes_at": {str(c): v for c, v in sorted(at_checkpoint.items())},
        "memory_bytes_distinct_values": mem_all,
        "rss_before_estimator": rss_before,
        "rss_first_after_warmup": rss_warm[0],
        "rss_last": rss_warm[-1],
        "rss_min_after_warmup": min(rss_warm),
        "rss_max_after_warmup": max(rss_warm),
        "rss_spread_after_warmup": max(rss_warm) - min(rss_warm),
        "warmup_points": int(warmup_fraction * n_total),
        "n_rss_samples_after_warmup": len(rss_warm),
        "rss_samples": [[s[0], s[1]] for s in samples],
        "stats": est.stats(),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10 ** 7)
    p.add_argument("--d", type=int, default=10)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--query-every", type=int, default=100_000)
    p.add_argument("--sample-every", type=int, default=64)
    p.add_argument("--warmup-fraction", type=float, default=0.1)
    p.add_argument("--algorithms", default="cc")
    args = p.parse_args(argv)
    out = {"load_start": loadavg(), "params": vars(args), "runs": []}
    for alg in args.algorithms.split(","):
        print(f"[memory] {alg}: {args.n:,} points", file=sys.stderr, flush=True)
        out["runs"].append(run_one(alg, args.n, args.d, args.k, args.batch, args.query_every,
                                   args.sample_every, args.warmup_fraction))
    out["load_end"] = loadavg()
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
