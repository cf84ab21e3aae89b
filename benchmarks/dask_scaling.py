"""Offline fitting on Dask (``edgekm.dask.fit_coreset``): scaling and cost.

Power (2,049,258 x 7, file order) is written once as a Parquet data set of
``--partitions`` files (cached under ``benchmarks/results/cache/``) and read
with ``dask.dataframe.read_parquet``, as a history on shared storage would
be.  The same partitions are fitted on a ``LocalCluster`` of 1 worker and of
2 workers (one thread each, worker processes):

- **wall time** of ``fit_coreset`` on data already loaded on the workers
  (``persist``), best and median of ``--repeats`` runs after one warm-up,
  and the speed-up of 2 workers over 1; the time to read the Parquet files
  is reported apart;
- **cost** of the centres on all the data (float64, independent of edgekm),
  against scikit-learn ``KMeans(n_init=10)`` on all the data in one
  process, and against ``edgekm.StreamingKMeans(algorithm="ct")`` streaming
  all the data in one process (no Dask).

``--synthetic N`` adds a Gaussian mixture of N rows x 10 features generated
on the workers (wall time only: batch k-means on it would dominate the run).

Prints a markdown table, the command and the machine (nproc, CPU model, load
average before and after), and writes ``benchmarks/results/dask.json``::

    python benchmarks/dask_scaling.py [--k 20] [--partitions 16] [--repeats 5]
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import _cpu_model, loadavg, sq_cost  # noqa: E402
from datasets import CACHE, load_real  # noqa: E402

RESULTS = HERE / "results"


def power_parquet(partitions):
    """Path of Power as ``partitions`` Parquet files (written on first use)."""
    import pandas as pd

    out = CACHE / f"power-parquet-{partitions}"
    if not (out / "_done").exists():
        out.mkdir(parents=True, exist_ok=True)
        X = load_real("power")
        cols = [f"x{j}" for j in range(X.shape[1])]
        for i, part in enumerate(np.array_split(X, partitions)):
            pd.DataFrame(part, columns=cols).to_parquet(out / f"part-{i:04d}.parquet",
                                                        index=False)
        (out / "_done").write_text("ok\n")
    return out


def synthetic(rows, partitions, seed=0):
    """A 20-centre, 10-feature Gaussian mixture as a dask array, generated on the workers."""
    import dask.array as da

    means = np.random.default_rng(seed).uniform(-10, 10, size=(20, 10))
    per = -(-rows // partitions)
    chunks = ((per,) * (rows // per) + ((rows % per,) if rows % per else ()), (10,))

    def block(block_info=None):
        i = block_info[None]["chunk-location"][0]
        n = block_info[None]["chunk-shape"][0]
        rng = np.random.default_rng([seed, i])
        return (means[rng.integers(0, 20, n)] + rng.normal(size=(n, 10))).astype(np.float32)

    return da.map_blocks(block, chunks=chunks, dtype=np.float32)


def timed_fits(data, workers, k, repeats, seed):
    """Fit on a fresh cluster of ``workers``; (read seconds, fit seconds list, last result)."""
    from dask.distributed import Client, LocalCluster, wait

    from edgekm.dask import fit_coreset

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address="127.0.0.1:0", silence_logs=40) as cluster, \
            Client(cluster) as client:
        t0 = time.perf_counter()
        loaded = client.persist(data)
        wait(loaded)
        read = time.perf_counter() - t0
        fit_coreset(loaded, k, random_state=seed, client=client)          # warm-up
        times, result = [], None
        for _ in range(repeats):
            t0 = time.perf_counter()
            result = fit_coreset(loaded, k, random_state=seed, client=client)
            times.append(time.perf_counter() - t0)
    return read, times, result


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--partitions", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--synthetic", type=int, default=0,
                    help="rows of an extra synthetic data set (0: none)")
    ap.add_argument("--out", default=str(RESULTS / "dask.json"))
    args = ap.parse_args(argv)

    import dask
    import dask.dataframe as dd
    import sklearn
    from sklearn.cluster import KMeans

    import edgekm
    from edgekm import StreamingKMeans

    load_before = loadavg()
    X = load_real("power")
    path = power_parquet(args.partitions)
    data = dd.read_parquet(str(path))
    rows = []
    results = {}
    for workers in (1, 2):
        read, times, r = timed_fits(data, workers, args.k, args.repeats, args.seed)
        results[workers] = r
        rows.append({"data": "power", "workers": workers, "partitions": r.n_partitions,
                     "read_s": read, "fit_s_best": min(times),
                     "fit_s_median": statistics.median(times), "fit_s_all": times,
                     "n_samples": r.n_samples, "total_weight": r.total_weight,
                     "coreset_points": len(r.coreset), "coreset_level": r.coreset.level})
    same = bool(np.array_equal(results[1].centers, results[2].centers))
    t0 = time.perf_counter()
    km = KMeans(args.k, n_init=10, random_state=args.seed).fit(X)
    km_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    sk = StreamingKMeans(args.k, algorithm="ct", random_state=args.seed).fit(X)
    one_s = time.perf_counter() - t0
    cost_dask = sq_cost(X, results[2].centers)
    cost_km = sq_cost(X, km.cluster_centers_)
    cost_one = sq_cost(X, sk.cluster_centers_)
    if args.synthetic:
        syn = synthetic(args.synthetic, 4 * args.partitions, args.seed)
        for workers in (1, 2):
            read, times, r = timed_fits(syn, workers, args.k, args.repeats, args.seed)
            rows.append({"data": f"synthetic {args.synthetic:,} x 10", "workers": workers,
                         "partitions": r.n_partitions, "read_s": read,
                         "fit_s_best": min(times), "fit_s_median": statistics.median(times),
                         "fit_s_all": times, "n_samples": r.n_samples,
                         "total_weight": r.total_weight, "coreset_points": len(r.coreset),
                         "coreset_level": r.coreset.level})
    load_after = loadavg()

    for data_name in dict.fromkeys(r["data"] for r in rows):
        one = next(r for r in rows if r["data"] == data_name and r["workers"] == 1)
        for r in rows:
            if r["data"] == data_name:
                r["speedup_median"] = one["fit_s_median"] / r["fit_s_median"]
    report = {
        "command": " ".join([os.path.basename(sys.executable), "benchmarks/dask_scaling.py"]
                            + (argv if argv is not None else sys.argv[1:])),
        "machine": {"nproc": os.cpu_count(), "cpu_model": _cpu_model(),
                    "platform": platform.platform(), "python": sys.version.split()[0],
                    "dask": dask.__version__, "sklearn": sklearn.__version__,
                    "edgekm": edgekm.__version__,
                    "loadavg_before": load_before, "loadavg_after": load_after},
        "k": args.k, "coreset_size": 40 * args.k, "seed": args.seed,
        "rows": rows,
        "cost": {"data": "power", "dask_2_workers": cost_dask, "sklearn_kmeans": cost_km,
                 "streaming_ct_one_process": cost_one,
                 "dask_over_kmeans": cost_dask / cost_km,
                 "one_process_over_kmeans": cost_one / cost_km,
                 "sklearn_kmeans_s": km_s, "streaming_ct_one_process_s": one_s,
                 "same_centres_1_and_2_workers": same},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")

    print(f"Command: `{report['command']}`  ")
    m = report["machine"]
    print(f"Machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['platform']}, dask "
          f"{m['dask']}; load average (1/5/15 min) before {load_before}, after {load_after}; "
          "other jobs shared the cores.\n")
    print(f"k = {args.k}, coreset_size = {40 * args.k}, workers of 1 thread each (processes), "
          f"data persisted on the workers before timing; {args.repeats} timed runs after a "
          "warm-up.\n")
    print("| data | workers | partitions | fit, median (s) | fit, best (s) | speed-up "
          "(median) | read + persist (s) | total weight = rows |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        print(f"| {r['data']} | {r['workers']} | {r['partitions']} | {r['fit_s_median']:.2f} "
              f"| {r['fit_s_best']:.2f} | {r['speedup_median']:.2f} | {r['read_s']:.2f} | "
              f"{r['total_weight'] == r['n_samples']} ({r['n_samples']:,}) |")
    c = report["cost"]
    print()
    print("| Power, k = %d | cost on all data | / KMeans | time (s) |" % args.k)
    print("| --- | ---: | ---: | ---: |")
    print(f"| edgekm.dask, 2 workers | {c['dask_2_workers']:.5g} | "
          f"{c['dask_over_kmeans']:.3f} | {rows[1]['fit_s_median']:.2f} |")
    print(f"| StreamingKMeans ct, one process | {c['streaming_ct_one_process']:.5g} | "
          f"{c['one_process_over_kmeans']:.3f} | {c['streaming_ct_one_process_s']:.2f} |")
    print(f"| scikit-learn KMeans(n_init=10), one process | {c['sklearn_kmeans']:.5g} | 1.000 "
          f"| {c['sklearn_kmeans_s']:.2f} |")
    print(f"\nSame centres on 1 and 2 workers: {same}. JSON: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
