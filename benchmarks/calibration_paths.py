"""Calibration through every path that publishes anomaly thresholds (issue 11).

Fit on stationary data, judge the same data: the thresholds come from one of
the paths a user takes, and every point of the data is then scored against
the version's p50/p95/p99 of its own cluster.  Targets: beyond p99 0.7-1.3 %,
beyond p95 4-6 %, beyond p50 45-55 %, every score finite.

Paths:

- ``inprocess``: ``StreamingKMeans(algorithm="cc")`` over the data, its coreset,
  ``fit_centers`` and :func:`edgekm.solve.cluster_statistics`;
- ``cli``: ``edgekm fit DATA.npy --k K -o v.msgpack`` then ``edgekm assign --version
  v.msgpack DATA.npy -o out.csv`` (two subprocesses); the fractions are read from
  the CSV's ``sqdist`` and the version file's quantiles;
- ``dask``: :func:`edgekm.dask.fit_coreset` (threaded scheduler) then
  :meth:`~edgekm.dask.DaskFitResult.cluster_statistics`;
- ``fleet``: ``--devices`` :class:`edgekm.sync.DeviceAgent` against a real aggregator
  served on loopback (:class:`edgekm.sync.cloud.http.BackgroundServer`), each
  ingesting its share of the data in ``--rounds`` rounds and syncing after each,
  then ``Aggregator.publish``; the devices' coresets reach the aggregator as frames
  and are merged in its trees, so this path tests what the frames carry.

    python benchmarks/calibration_paths.py [--paths inprocess,cli,dask,fleet]
        [--cases blobs-1e4,...] [--json out.json] [--doc docs/benchmarks.md]

``--doc`` rewrites the calibration section of that markdown file (between its
``<!-- calibration:begin -->`` and ``<!-- calibration:end -->`` markers) from
the results, with :func:`render.calibration_md`; ``--render A.json B.json --doc
FILE`` does it from saved results without measuring.  (``render.py``'s full
re-render of ``docs/benchmarks.md`` does not know this section: re-run this
``--render`` after one.)
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import _cpu_model, _mem_total  # noqa: E402
from spread_data import load  # noqa: E402

from edgekm import Assigner, StreamingKMeans  # noqa: E402
from edgekm.solve import cluster_statistics  # noqa: E402

LEVELS = (0.5, 0.95, 0.99)
TARGETS = ((0.45, 0.55), (0.04, 0.06), (0.007, 0.013))
PATHS = ("inprocess", "cli", "dask", "fleet")


def _blobs(n, d, k, seed=0):
    """k unit-variance Gaussian blobs in d dimensions, centres uniform in [-10, 10]^d
    (scaled so that blobs stay apart at small d and do not at large d)."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-10, 10, size=(k, d))
    X = centres[rng.integers(0, k, n)] + rng.normal(size=(n, d))
    return np.ascontiguousarray(X, dtype=np.float32)


#: name -> (loader, k)
CASES = {
    "blobs-1e4-d2-k5": (lambda: (_blobs(10_000, 2, 5), "Gaussian blobs"), 5),
    "blobs-1e5-d10-k8": (lambda: (_blobs(100_000, 10, 8), "Gaussian blobs"), 8),
    "blobs-1e6-d10-k8": (lambda: (_blobs(1_000_000, 10, 8), "Gaussian blobs"), 8),
    "blobs-1e7-d10-k8": (lambda: (_blobs(10_000_000, 10, 8), "Gaussian blobs"), 8),
    "blobs-1e5-d200-k30": (lambda: (_blobs(100_000, 200, 30), "Gaussian blobs"), 30),
    "shuttle-k5": (lambda: load("shuttle"), 5),
    "shuttle-k10": (lambda: load("shuttle"), 10),
    "power-k8": (lambda: load("power"), 8),
    "digits-k10": (lambda: load("digits"), 10),
    "kdd99poly-k10": (lambda: load("kdd99-poly", 50_000), 10),
}
DEFAULT_CASES = ("blobs-1e4-d2-k5", "blobs-1e5-d10-k8", "blobs-1e6-d10-k8",
                 "blobs-1e5-d200-k30", "shuttle-k5", "shuttle-k10", "power-k8", "digits-k10",
                 "kdd99poly-k10")


def machine():
    """What the figures were measured on (no river or scikit-learn needed)."""
    import platform

    import edgekm
    from edgekm import _backend

    return {"cpu_model": _cpu_model(), "logical_cpus": os.cpu_count(),
            "ram_bytes": _mem_total(), "platform": platform.platform(),
            "python": sys.version.split()[0], "numpy": np.__version__,
            "edgekm": getattr(edgekm, "__version__", "?"),
            "backend": _backend.NAME}


def fractions(labels, d2, quantiles):
    """Strict fraction of the points beyond their cluster's quantile, per level."""
    return [float((d2 > quantiles[labels, j]).mean()) for j in range(quantiles.shape[1])]


def _score(X, centers, quantiles):
    """Fractions with the library's assigner, and whether every score is finite."""
    from edgekm.sync.wire.version import CentroidVersion

    k = centers.shape[0]
    v = CentroidVersion(model="bench", version=1, parent=None, created=0.0,
                        centers=np.ascontiguousarray(centers, dtype=X.dtype),
                        cluster_weights=np.ones(k), quantiles=quantiles,
                        training_weight=float(len(X)), cost=0.0)
    res = Assigner(v).assign(X)
    return (fractions(res.labels, res.distances, quantiles),
            bool(np.isfinite(res.scores).all()))


def path_inprocess(X, k, tmp, args):
    model = StreamingKMeans(k, algorithm="cc", random_state=0)
    for batch in np.array_split(X, max(1, len(X) // 10_000)):
        model.partial_fit(batch)
    cs = model.coreset()
    centers, _, _ = cs.fit_centers(k, random_state=0)
    _, q = cluster_statistics(cs, centers)
    return _score(X, centers, q)


def path_cli(X, k, tmp, args):
    from edgekm.sync.wire.version import decode_version

    data, version, out = (os.path.join(tmp, f) for f in ("X.npy", "v.msgpack", "out.csv"))
    np.save(data, X)
    py = [sys.executable, "-m", "edgekm"]
    subprocess.run(py + ["fit", data, "--k", str(k), "-o", version, "--no-progress"],
                   check=True, capture_output=True)
    subprocess.run(py + ["assign", "--version", version, data, "-o", out, "--no-progress"],
                   check=True, capture_output=True)
    v = decode_version(Path(version).read_bytes())
    with open(out) as f:
        header = f.readline().strip().split(",")
    cols = np.loadtxt(out, delimiter=",", skiprows=1,
                      usecols=(header.index("label"), header.index("sqdist"),
                               header.index("score")), ndmin=2)
    labels, d2, score = cols[:, 0].astype(np.int64), cols[:, 1], cols[:, 2]
    return fractions(labels, d2, v.quantiles), bool(np.isfinite(score).all())


def path_dask(X, k, tmp, args):
    from edgekm.dask import fit_coreset

    result = fit_coreset(X, k, random_state=0)
    _, q = result.cluster_statistics()
    return _score(X, result.centers, q)


def path_fleet(X, k, tmp, args):
    from edgekm.sync.cloud import http as server_mod
    from edgekm.sync.cloud.aggregator import Aggregator
    from edgekm.sync.device.agent import DeviceAgent

    agg = Aggregator(os.path.join(tmp, "agg.db"), coreset_size=200, random_state=0)
    server = None
    agents = []
    try:
        agg.add_model("bench", X.shape[1], dtype="float32")
        names = [f"dev-{i:03d}" for i in range(args.devices)]
        keys = {name: agg.add_device(name) for name in names}
        server = server_mod.BackgroundServer(
            server_mod.create_app(agg, admin_token="t" * 32, policy_interval=None),
            name="bench-aggregator")
        server.start()
        for i, name in enumerate(names):
            agents.append(DeviceAgent(server.url, "bench", name, keys[name],
                                      os.path.join(tmp, name), n_clusters=k, coreset_size=200,
                                      max_retries=3, backoff_base=0.05, timeout=60.0,
                                      random_state=1 + i))
        shares = np.array_split(np.arange(len(X)), args.devices)
        for r in range(args.rounds):
            for agent, idx in zip(agents, shares):
                part = np.array_split(idx, args.rounds)[r]
                if part.size:
                    agent.ingest(X[part[0]:part[-1] + 1])
            for agent in agents:
                rep = agent.sync()
                if rep["pending"] or rep["rejected"]:
                    raise RuntimeError(f"sync left frames: {rep}")
        cv = agg.version("bench", agg.publish("bench", k, n_init=10, random_state=0))
        if agg.aggregate("bench").total_weight != len(X):
            raise RuntimeError("the aggregate does not weigh the data")
    finally:
        for agent in agents:
            agent.close()
        if server is not None:
            server.stop()
        agg.close()
    return _score(X, cv.centers, cv.quantiles)


def run(case, paths, args):
    loader, k = CASES[case]
    X, desc = loader()
    rows = []
    for path in paths:
        if path == "cli" and X.nbytes > args.cli_max_bytes:
            continue
        with tempfile.TemporaryDirectory(prefix="edgekm-calib-") as tmp:
            t0 = time.perf_counter()
            frac, finite = globals()[f"path_{path}"](X, k, tmp, args)
        ok = finite and all(lo <= f <= hi for f, (lo, hi) in zip(frac, TARGETS))
        rows.append({"case": case, "data": desc, "n": int(len(X)), "d": int(X.shape[1]),
                     "k": k, "path": path, "beyond_p50": frac[0], "beyond_p95": frac[1],
                     "beyond_p99": frac[2], "all_finite": finite, "in_targets": ok,
                     "seconds": time.perf_counter() - t0})
        r = rows[-1]
        print(f"{case:<20} {r['n']:>10,} {r['d']:>4} {k:>3} {path:<10} "
              f"{100 * frac[0]:>7.2f} {100 * frac[1]:>7.2f} {100 * frac[2]:>7.2f} "
              f"{'yes' if finite else 'NO':>6}  {'yes' if ok else 'NO':>3} "
              f"{r['seconds']:>7.1f}", flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paths", default=",".join(PATHS))
    ap.add_argument("--cases", default=",".join(DEFAULT_CASES),
                    help=f"comma-separated, of {', '.join(CASES)}")
    ap.add_argument("--devices", type=int, default=6, help="devices of the fleet path")
    ap.add_argument("--rounds", type=int, default=4, help="sync rounds of the fleet path")
    ap.add_argument("--cli-max-bytes", type=int, default=200 << 20,
                    help="skip the cli path above this data size (its CSV is large)")
    ap.add_argument("--json")
    ap.add_argument("--doc", help="rewrite the calibration section of this markdown file")
    ap.add_argument("--render", nargs="+", metavar="JSON",
                    help="do not measure: render these result files (rows concatenated) "
                         "into --doc")
    args = ap.parse_args(argv)
    if args.render:
        parts = [json.loads(Path(f).read_text()) for f in args.render]
        res = dict(parts[0], command="; ".join(p["command"] for p in parts),
                   load_after=parts[-1]["load_after"],
                   rows=[r for p in parts for r in p["rows"]])
        _write_doc(res, args.doc)
        return
    paths = [p for p in args.paths.split(",") if p]
    started = time.time()
    print(f"{'case':<20} {'n':>10} {'d':>4} {'k':>3} {'path':<10} {'>p50 %':>7} "
          f"{'>p95 %':>7} {'>p99 %':>7} {'finite':>6}  ok  {'s':>6}")
    rows = []
    for case in [c for c in args.cases.split(",") if c]:
        rows += run(case, paths, args)
    res = {"command": "python benchmarks/calibration_paths.py " + " ".join(
               sys.argv[1:] if argv is None else argv),
           "machine": machine(), "load_before": os.getloadavg(), "started": started,
           "finished": time.time(), "devices": args.devices, "rounds": args.rounds,
           "rows": rows}
    res["load_after"] = os.getloadavg()
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    if args.doc:
        _write_doc(res, args.doc)


def _write_doc(res, path):
    from render import calibration_md, replace_section

    doc = Path(path)
    doc.write_text(replace_section(doc.read_text(), "calibration", calibration_md(res)))


if __name__ == "__main__":
    main()
