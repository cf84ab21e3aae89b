"""Offline fitting on a Dask cluster: one coreset per partition, merged in a tree.

A history too large for one machine is a Dask collection split into
partitions.  ``edgekm.dask.fit_coreset`` summarises each partition on a worker
with the compiled core (a coreset of at most ``coreset_size`` weighted
points), merges the coresets in a tree inside Dask (Observation 1: the union
of coresets of disjoint data is a coreset of the union; a merge larger than
``coreset_size`` is reduced again) and solves k-means on the root.

Here the "history" is the bundled Shuttle data set (49,097 points, 9
features) cut into 8 partitions, on a local cluster of 2 worker processes.
The example shows:

- the root coreset's total weight equals the number of rows, exactly;
- the cost of the centres on all the data, against one process that streams
  every point through ``edgekm.StreamingKMeans`` (same structure, same k);
- the same seed and partitioning give the same centres again;
- the result handed to an aggregator (in this process, in a temporary
  directory): the root coreset pushed as a seed aggregate, and the centres
  stored as centroid version 1.

Run it with no arguments::

    python examples/dask_fit.py

Needs the ``dask`` extra (``pip install "edgekm[dask]"``).
"""

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

N_CLUSTERS = 10
N_PARTITIONS = 8


def cost(X, centers):
    """k-means cost of X against centers, in float64."""
    X = X.astype(np.float64)
    d2 = ((X[:, None, :] - centers[None, :, :].astype(np.float64)) ** 2).sum(axis=2)
    return float(d2.min(axis=1).sum())


def main():
    try:
        import dask.array as da
        from dask.distributed import Client, LocalCluster

        from edgekm.dask import fit_coreset, publish, push_seed
    except ImportError as exc:
        print(f"this example needs the dask extra: pip install \"edgekm[dask]\" ({exc})",
              file=sys.stderr)
        return 2
    from edgekm import StreamingKMeans
    from edgekm.datasets import load_shuttle
    from edgekm.sync.cloud.aggregator import Aggregator

    X = load_shuttle()
    n, d = X.shape
    data = da.from_array(X, chunks=(-(-n // N_PARTITIONS), d))
    print(f"data: {n:,} rows x {d} features in {data.numblocks[0]} partitions")

    # a free loopback port for the scheduler's HTTP server (None would still try 8787)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address="127.0.0.1:0", silence_logs=40) as cluster, \
            Client(cluster) as client:
        start = time.perf_counter()
        result = fit_coreset(data, N_CLUSTERS, random_state=0, client=client)
        seconds = time.perf_counter() - start
        again = fit_coreset(data, N_CLUSTERS, random_state=0, client=client)
    print(f"fit on 2 workers: {seconds:.2f} s; root coreset {len(result.coreset)} points, "
          f"level {result.coreset.level}")
    print(f"total weight {result.total_weight:,.0f} == rows {result.n_samples:,}: "
          f"{result.total_weight == n}")

    single = StreamingKMeans(N_CLUSTERS, algorithm="ct", random_state=0).fit(X)
    ours, theirs = cost(X, result.centers), cost(X, single.cluster_centers_)
    print(f"cost on all data: dask {ours:.4g}, one process (StreamingKMeans) {theirs:.4g}, "
          f"ratio {ours / theirs:.3f}")
    same = np.array_equal(again.centers, result.centers)
    print(f"same seed and partitions, same centres: {same}")

    with tempfile.TemporaryDirectory() as tmp:
        with Aggregator(Path(tmp) / "aggregator.db", random_state=0) as agg:
            agg.add_device("offline-fit")
            pushed = push_seed(result, agg, "shuttle", "offline-fit")
            print(f"seed pushed: {pushed['frames']} frame(s), aggregator total weight "
                  f"{agg.total_weight('shuttle'):,.0f}")
            info = publish(result, agg, "shuttle")
            print(f"published version {info['version']} ({info['status']}, k={info['k']}) "
                  f"trained on {info['training_weight']:,.0f} points")
    return 0


if __name__ == "__main__":      # the worker processes re-import this file
    sys.exit(main())
