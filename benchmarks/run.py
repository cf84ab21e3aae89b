"""The edgekm benchmark: cost, throughput, query time and memory, against peers.

Run from the repository root::

    python benchmarks/run.py --quick    # subsets, a few minutes at most: a check
    python benchmarks/run.py --full     # the real run (about half an hour on 2 cores)

Results go to ``benchmarks/results/<mode>-<UTC time>.json`` (gitignored) and
are rendered to markdown by ``benchmarks/render.py``: a ``--full`` run writes
``docs/benchmarks.md``, a ``--quick`` run ``benchmarks/results/benchmarks-quick.md``
(``--doc PATH`` overrides either).  See ``benchmarks/README.md``.
"""

import argparse
import datetime
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import datasets as D  # noqa: E402
from common import Stopwatch, batches, loadavg, machine, sq_cost  # noqa: E402

import edgekm  # noqa: E402
from edgekm._validation import check_params  # noqa: E402

ALGORITHMS = ("ct", "cc", "rcc", "onlinecc", "sequential")
BATCH = 1024
SEED = 0
REFERENCE = dict(n_init=10, random_state=0)

MODES = {
    "quick": dict(
        ks=(10, 20, 30),
        limits={"power": 100_000, "kdd99": 50_000, "shuttle": None},
        drift_n=50_000,
        river_prefix=5_000,
        throughput_passes=2, throughput_reps=3, learn_one_points=20_000, river_reps=1,
        query_n=50_000, query_qs=(100, 1_000, 10_000), query_reps=1,
        memory_n=1_000_000, memory_algorithms=ALGORITHMS,
        ingest_seconds=5,
    ),
    "full": dict(
        ks=(10, 20, 30),
        limits={"power": None, "kdd99": None, "shuttle": None},
        drift_n=200_000,
        river_prefix=50_000,
        throughput_passes=10, throughput_reps=5, learn_one_points=None, river_reps=3,
        query_n=200_000, query_qs=(100, 1_000, 10_000), query_reps=3,
        memory_n=10_000_000, memory_algorithms=ALGORITHMS,
        ingest_seconds=20,
    ),
}


def log(msg):
    stamp = datetime.datetime.now().strftime("%H:%M:%S")
    print(f"[{stamp}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------- data
def load_dataset(name, cfg):
    """(X float32 in stream order, description dict)."""
    if name == "drift":
        X, info = D.drift_stream(n=cfg["drift_n"])
        return X, {"name": name, "rows": X.shape[0], "cols": X.shape[1], "shuffled": False,
                   "description": "drifting RBF-style Gaussian mixture (benchmarks/datasets.py)",
                   "generator": info, "full_rows": X.shape[0],
                   "default_rows": D.DRIFT_DEFAULTS["n"]}
    fname, rows, cols, desc = D.REAL[name]
    X = D.shuffled(D.load_real(name))
    limit = cfg["limits"][name]
    if limit is not None:
        X = np.ascontiguousarray(X[:limit])
    return X, {"name": name, "rows": X.shape[0], "cols": cols, "shuffled": True,
               "shuffle_seed": D.SHUFFLE_SEED, "description": desc, "file": fname,
               "full_rows": rows}


# --------------------------------------------------------------------- runners
def run_edgekm(X, k, algorithm, batch=BATCH):
    """Stream X through a default StreamingKMeans with partial_fit; query at the end."""
    est = edgekm.StreamingKMeans(n_clusters=k, algorithm=algorithm, random_state=SEED)
    upd = Stopwatch()
    for b in batches(X, batch):
        with upd:
            est.partial_fit(b)
    t0 = time.perf_counter()
    centers = est.cluster_centers_
    query_s = time.perf_counter() - t0
    cost = sq_cost(X, centers)
    score_cost = -est.score(X)
    return {
        "cost": cost,
        "cost_by_edgekm_score": score_cost,
        "cost_check_rel_diff": abs(score_cost - cost) / cost if cost > 0 else 0.0,
        "update_seconds": upd.seconds,
        "query_seconds": query_s,
        "memory_bytes": est.memory_bytes,
        "stats": est.stats(),
        "n_seen_": est.n_seen_,
        "params": {k_: (v if not isinstance(v, type) else v.__name__)
                   for k_, v in est.get_params().items()},
    }


def run_minibatch(X, k, batch=BATCH):
    """MiniBatchKMeans.partial_fit over the batches, limited to one native thread.

    On this shared 2-core machine, scikit-learn's OpenMP threads made
    ``partial_fit`` on 1,024-point batches several times slower than one thread
    (the throughput section measures both); the cost does not depend on it.
    """
    from sklearn.cluster import MiniBatchKMeans
    from threadpoolctl import threadpool_limits
    mbk = MiniBatchKMeans(n_clusters=k, random_state=SEED)
    upd = Stopwatch()
    with threadpool_limits(1):
        for b in batches(X, batch):
            with upd:
                mbk.partial_fit(b)
    return {"cost": sq_cost(X, mbk.cluster_centers_), "update_seconds": upd.seconds,
            "params": {k_: v for k_, v in mbk.get_params().items()
                       if isinstance(v, (int, float, str, type(None)))}}


def run_reference(X, k):
    from sklearn.cluster import KMeans
    t0 = time.perf_counter()
    km = KMeans(n_clusters=k, **REFERENCE).fit(X)
    secs = time.perf_counter() - t0
    return {"cost": sq_cost(X, km.cluster_centers_), "sklearn_inertia": float(km.inertia_),
            "seconds": secs, "n_iter": int(km.n_iter_)}


def river_centers(model, k, d):
    """River centres (dicts of feature -> value) as a (k, d) float64 array."""
    cs = model.centers
    return np.array([[float(cs[i][j]) for j in range(d)] for i in range(k)])


def run_river(dicts, Xp, k, which):
    from river import cluster
    d = Xp.shape[1]
    if which == "KMeans":
        params = dict(n_clusters=k, seed=SEED)
        model = cluster.KMeans(**params)
    else:
        params = dict(chunk_size=20 * k, n_clusters=k, seed=SEED)
        model = cluster.STREAMKMeans(**params)
    t0 = time.perf_counter()
    for x in dicts:
        model.learn_one(x)
    secs = time.perf_counter() - t0
    C = river_centers(model, k, d)
    full = dict(params)
    if which == "KMeans":
        full.update(halflife=model.halflife, mu=model.mu, sigma=model.sigma, p=model.p)
    else:
        inner = model._kmeans
        full.update(inner_halflife=inner.halflife, inner_mu=inner.mu, inner_sigma=inner.sigma,
                    inner_p=inner.p)
    return {"cost": sq_cost(Xp, C), "update_seconds": secs, "params": full}


# --------------------------------------------------------------------- sections
def section_cost(cfg, datasets, out, save):
    """Fill ``out`` (saved after every data set, so a partial run keeps its figures)."""
    out.update({"load_start": loadavg(), "datasets": {}})
    t_section = time.perf_counter()
    for name in datasets:
        t_ds = time.perf_counter()
        X, info = load_dataset(name, cfg)
        n, d = X.shape
        ds = {"info": info, "load_start": loadavg(), "k": {}}
        P = min(cfg["river_prefix"], n)
        Xp = np.ascontiguousarray(X[:P])
        dicts = [dict(enumerate(row)) for row in Xp.tolist()]
        for k in cfg["ks"]:
            log(f"[cost] {name} n={n} d={d} k={k}: batch KMeans(n_init=10)")
            res = {"reference": run_reference(X, k), "edgekm": {}}
            ref = res["reference"]["cost"]
            for alg in ALGORITHMS:
                r = run_edgekm(X, k, alg)
                r["ratio"] = r["cost"] / ref
                res["edgekm"][alg] = r
                log(f"[cost]   {alg:<10} ratio {r['ratio']:.4f}  "
                    f"update {r['update_seconds']:.2f}s")
            r = run_minibatch(X, k)
            r["ratio"] = r["cost"] / ref
            res["minibatch"] = r
            log(f"[cost]   MiniBatchKMeans ratio {r['ratio']:.4f} update {r['update_seconds']:.2f}s")
            # river, on a prefix, against batch k-means on the same prefix
            pre = {"prefix_points": P, "reference": run_reference(Xp, k)}
            pref = pre["reference"]["cost"]
            for which in ("KMeans", "STREAMKMeans"):
                r = run_river(dicts, Xp, k, which)
                r["ratio"] = r["cost"] / pref
                pre["river_" + which] = r
                log(f"[cost]   river {which} (prefix {P}) ratio {r['ratio']:.4f} "
                    f"{r['update_seconds']:.1f}s")
            for alg in ("cc", "onlinecc"):
                r = run_edgekm(Xp, k, alg)
                r["ratio"] = r["cost"] / pref
                pre["edgekm_" + alg] = r
            r = run_minibatch(Xp, k)
            r["ratio"] = r["cost"] / pref
            pre["minibatch"] = r
            res["prefix"] = pre
            ds["k"][str(k)] = res
        ds["load_end"] = loadavg()
        ds["seconds"] = time.perf_counter() - t_ds
        out["datasets"][name] = ds
        save()
        del X, Xp, dicts
    out["seconds"] = time.perf_counter() - t_section
    out["load_end"] = loadavg()
    return out


def _median_run(runs, key):
    """The run whose ``key`` is the median (lower median for even counts)."""
    order = sorted(runs, key=lambda r: r[key])
    return order[(len(order) - 1) // 2]


def section_throughput(cfg):
    from contextlib import nullcontext

    from river import cluster
    from sklearn.cluster import MiniBatchKMeans
    from threadpoolctl import threadpool_limits
    out = {"load_start": loadavg()}
    t_section = time.perf_counter()
    k = 10
    base = D.load_real("shuttle")
    passes = [D.shuffled(base, seed=SEED + p) for p in range(cfg["throughput_passes"])]
    X = np.ascontiguousarray(np.concatenate(passes))
    n, d = X.shape
    blist = list(batches(X, BATCH))
    out["data"] = {"name": "shuttle", "passes": cfg["throughput_passes"], "points": n,
                   "features": d, "k": k, "batch": BATCH, "dtype": "float32",
                   "note": "each pass is Shuttle under a different fixed permutation"}
    peers = ("minibatch", "minibatch_1thread")
    runs = {a: [] for a in ALGORITHMS + peers}
    for rep in range(cfg["throughput_reps"]):
        for alg in ALGORITHMS + peers:
            if alg in peers:
                est = MiniBatchKMeans(n_clusters=k, random_state=SEED)
            else:
                est = edgekm.StreamingKMeans(n_clusters=k, algorithm=alg, random_state=SEED)
            limit = threadpool_limits(1) if alg == "minibatch_1thread" else nullcontext()
            with limit:
                t0 = time.perf_counter()
                for b in blist:
                    est.partial_fit(b)
                secs = time.perf_counter() - t0
            runs[alg].append({"seconds": secs, "points_per_second": n / secs})
        log(f"[throughput] partial_fit rep {rep + 1}: " + ", ".join(
            f"{a} {runs[a][-1]['points_per_second'] / 1e6:.3f}M/s" for a in runs))
    pf = {}
    for alg, rs in runs.items():
        pps = [r["points_per_second"] for r in rs]
        pf[alg] = {"points_per_second_median": statistics.median(pps),
                   "points_per_second_best": max(pps), "runs": pps}
    # the target is judged against the faster MiniBatchKMeans configuration
    best_peer = max(peers, key=lambda a: pf[a]["points_per_second_median"])
    mb = pf[best_peer]["points_per_second_median"]
    out["minibatch_reference"] = best_peer
    for alg in ALGORITHMS:
        pf[alg]["ratio_vs_minibatch"] = pf[alg]["points_per_second_median"] / mb
        for peer in peers:
            pf[alg]["ratio_to_" + peer] = (pf[alg]["points_per_second_median"]
                                           / pf[peer]["points_per_second_median"])
    out["partial_fit"] = pf

    # learn_one: edgekm on 1-D float32 rows vs river KMeans on dicts, same points
    m = cfg["learn_one_points"] or base.shape[0]
    Xl = np.ascontiguousarray(passes[0][:m])
    rows = [Xl[i] for i in range(m)]          # C-contiguous float32 1-D views
    dicts = [dict(enumerate(r)) for r in Xl.tolist()]
    lo = {a: [] for a in ALGORITHMS}
    for rep in range(cfg["throughput_reps"]):
        for alg in ALGORITHMS:
            est = edgekm.StreamingKMeans(n_clusters=k, algorithm=alg, random_state=SEED)
            learn = est.learn_one
            t0 = time.perf_counter()
            for x in rows:
                learn(x)
            lo[alg].append(m / (time.perf_counter() - t0))
    river_pps = []
    for rep in range(cfg["river_reps"]):
        model = cluster.KMeans(n_clusters=k, seed=SEED)
        learn = model.learn_one
        t0 = time.perf_counter()
        for x in dicts:
            learn(x)
        river_pps.append(m / (time.perf_counter() - t0))
    river_med = statistics.median(river_pps)
    out["learn_one"] = {
        "points": m, "features": d, "k": k,
        "river_KMeans": {"points_per_second_median": river_med, "runs": river_pps,
                         "params": {"n_clusters": k, "seed": SEED, "halflife": 0.5,
                                    "mu": 0, "sigma": 1, "p": 2}},
        "edgekm": {a: {"points_per_second_median": statistics.median(v), "runs": v,
                       "ratio_vs_river": statistics.median(v) / river_med}
                   for a, v in lo.items()},
    }
    log("[throughput] learn_one: river %.0f/s; " % river_med + ", ".join(
        f"{a} {statistics.median(v) / 1e6:.3f}M/s" for a, v in lo.items()))
    out["seconds"] = time.perf_counter() - t_section
    out["load_end"] = loadavg()
    return out


def stream_with_queries(X, k, alg, q):
    """partial_fit in batches of min(1024, q) cut at every q-th point; query there."""
    est = edgekm.StreamingKMeans(n_clusters=k, algorithm=alg, random_state=SEED)
    n = X.shape[0]
    step = min(BATCH, q)
    upd = Stopwatch()
    qry = Stopwatch()
    n_queries = 0
    pos = 0
    next_q = q
    while pos < n:
        end = min(pos + step, next_q, n)
        b = X[pos:end]
        with upd:
            est.partial_fit(b)
        pos = end
        if pos == next_q:
            next_q += q
            if pos >= k:
                with qry:
                    est.cluster_centers_
                n_queries += 1
    centers = est.cluster_centers_
    return {
        "update_seconds": upd.seconds,
        "query_seconds": qry.seconds,
        "total_seconds": upd.seconds + qry.seconds,
        "n_queries": n_queries,
        "update_us_per_point": upd.seconds / n * 1e6,
        "query_us_per_point": qry.seconds / n * 1e6,
        "total_us_per_point": (upd.seconds + qry.seconds) / n * 1e6,
        "query_ms_per_query": qry.seconds / n_queries * 1e3 if n_queries else None,
        "stats": est.stats(),
        "memory_bytes": est.memory_bytes,
        "cost": sq_cost(X, centers),
    }


def section_query(cfg):
    out = {"load_start": loadavg()}
    t_section = time.perf_counter()
    k = 10
    X = np.ascontiguousarray(D.shuffled(D.load_real("power"))[:cfg["query_n"]])
    n, d = X.shape
    ref = run_reference(X, k)
    out["data"] = {"name": "power", "points": n, "features": d, "k": k, "shuffled": True,
                   "reference_cost": ref["cost"]}
    runs = {(a, q): [] for q in cfg["query_qs"] for a in ALGORITHMS}
    for rep in range(cfg["query_reps"]):
        for q in cfg["query_qs"]:
            for alg in ALGORITHMS:
                r = stream_with_queries(X, k, alg, q)
                r["cost_ratio"] = r["cost"] / ref["cost"]
                runs[(alg, q)].append(r)
                log(f"[query] rep {rep + 1} q={q} {alg:<10} update {r['update_seconds']:.2f}s "
                    f"query {r['query_seconds']:.2f}s")
    table = {}
    for (alg, q), rs in runs.items():
        med = dict(_median_run(rs, "total_seconds"))
        med["total_seconds_runs"] = [r["total_seconds"] for r in rs]
        table.setdefault(str(q), {})[alg] = med
    out["results"] = table
    ratios = {}
    for q in cfg["query_qs"]:
        t = table[str(q)]
        ct = t["ct"]["total_seconds"]
        ratios[str(q)] = {f"{a}/ct": t[a]["total_seconds"] / ct for a in ALGORITHMS}
        ratios[str(q)].update({f"{a}/ct query only": t[a]["query_seconds"] / t["ct"]["query_seconds"]
                               for a in ALGORITHMS})
    out["ratios"] = ratios
    out["seconds"] = time.perf_counter() - t_section
    out["load_end"] = loadavg()
    return out


def section_memory(cfg):
    t_section = time.perf_counter()
    cmd = [sys.executable, str(HERE / "memory_worker.py"), "--n", str(cfg["memory_n"]),
           "--algorithms", ",".join(cfg["memory_algorithms"])]
    log(f"[memory] {shlex.join(cmd)}")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(HERE) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, check=True, env=env)
    out = json.loads(proc.stdout)
    out["command"] = shlex.join(cmd)
    # memory_bytes per algorithm for the configurations of the other sections
    per_alg = {}
    for d in (7, 9, 10, 34, 68):
        for k in (10, 20, 30):
            for alg in ALGORITHMS:
                est = edgekm.StreamingKMeans(n_clusters=k, algorithm=alg, random_state=SEED)
                est.partial_fit(np.zeros((k, d), dtype=np.float32))
                st = est.stats()
                per_alg.setdefault(str(d), {}).setdefault(str(k), {})[alg] = {
                    "memory_bytes": est.memory_bytes,
                    "points_equiv": est.memory_bytes / (4 * d),
                    "bucket_capacity": st.get("bucket_capacity"),
                    "coreset_size": check_params(est.get_params())["coreset_size"],
                }
    out["layout"] = per_alg
    out["seconds"] = time.perf_counter() - t_section
    return out


# --------------------------------------------------------------------- main
def section_sync(cfg):
    """Issue 3: aggregator ingest (benchmarks/ingest.py, a real uvicorn server) and
    wire size of a coreset frame against its raw array bytes."""
    import subprocess
    import tempfile

    from edgekm.sync.wire.frame import encode_frame

    rng = np.random.default_rng(0)
    wire = []
    for m, d, dtype in ((200, 16, np.float32), (200, 16, np.float64), (20, 2, np.float32)):
        pts = rng.normal(size=(m, d)).astype(dtype)
        w = rng.integers(1, 50, m).astype(np.float64)
        body = encode_frame(model="telemetry", device="device-0001", boot=2**63 + 12345,
                            seq=123456, span=(10_000_000, 10_099_999), points=pts, weights=w,
                            level=7, created=1.7e9)
        raw = pts.nbytes + w.nbytes
        wire.append({"m": m, "d": d, "dtype": np.dtype(dtype).name, "frame_bytes": len(body),
                     "raw_bytes": raw, "overhead_bytes": len(body) - raw})
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ingest.json"
        cmd = [sys.executable, str(HERE / "ingest.py"), "--seconds", str(cfg["ingest_seconds"]),
               "--out", str(out)]
        log("sync: " + shlex.join(cmd))
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        ingest = json.loads(out.read_text())
    return {"wire": wire, "ingest": ingest, "ingest_command": shlex.join(
        ["python", "benchmarks/ingest.py", "--seconds", str(cfg["ingest_seconds"])])}


def section_assign(cfg):
    """Issue 4: offline assignment against KMeans.predict, assign_one latency, and
    the telemetry compression of a device with no drift (benchmarks/assign.py)."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "assign.json"
        cmd = [sys.executable, str(HERE / "assign.py"), "--out", str(out)]
        log("assign: " + shlex.join(cmd))
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        res = json.loads(out.read_text())
    res["command"] = "python benchmarks/assign.py"
    return res


def main(argv=None):
    p = argparse.ArgumentParser(description="edgekm benchmark (see benchmarks/README.md)")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--quick", action="store_true", help="subsets; a check, < 3 minutes")
    mode.add_argument("--full", action="store_true", help="the full run (<= 30 minutes)")
    p.add_argument("--sections", default="cost,throughput,query,memory,sync,assign",
                   help="comma-separated subset of cost,throughput,query,memory,sync,assign")
    p.add_argument("--datasets", default="power,kdd99,shuttle,drift",
                   help="comma-separated subset of power,kdd99,shuttle,drift (cost section)")
    p.add_argument("--doc", default=None, help="markdown output (default depends on the mode)")
    p.add_argument("--out", default=None, help="JSON output (default benchmarks/results/...)")
    args = p.parse_args(argv)
    mode_name = "full" if args.full else "quick"
    cfg = MODES[mode_name]
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    dsets = [s.strip() for s in args.datasets.split(",") if s.strip()]

    started = datetime.datetime.now(datetime.timezone.utc)
    results_dir = HERE / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    out_path = Path(args.out) if args.out else (
        results_dir / f"{mode_name}-{started.strftime('%Y%m%dT%H%M%SZ')}.json")
    argv_shown = sys.argv[1:] if argv is None else list(argv)
    from edgekm import _defaults as ed
    import inspect
    sig = inspect.signature(edgekm.StreamingKMeans.__init__).parameters
    edgekm_defaults = {
        "dtype": np.dtype(sig["dtype"].default).name,
        "coreset_size_per_cluster": ed.CORESET_SIZE_PER_CLUSTER,
        "merge_degree": sig["merge_degree"].default, "n_init": sig["n_init"].default,
        "max_iter": sig["max_iter"].default, "nesting_depth": sig["nesting_depth"].default,
        "switch_threshold": sig["switch_threshold"].default,
    }
    result = {
        "mode": mode_name,
        "config": {**{k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()},
                   "edgekm_defaults": edgekm_defaults},
        "command": shlex.join(["python", "benchmarks/run.py"] + argv_shown),
        "python_executable": sys.executable,
        "cwd": os.getcwd(),
        "started_utc": started.isoformat(timespec="seconds"),
        "load_start": loadavg(),
        "machine": machine(),
        "sections": {},
    }

    def save():
        tmp = out_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1))
        os.replace(tmp, out_path)

    t0 = time.perf_counter()
    log(f"edgekm benchmark, {mode_name} mode; load {result['load_start']}; -> {out_path}")
    if "cost" in sections:
        result["sections"]["cost"] = {}
        section_cost(cfg, dsets, result["sections"]["cost"], save)
        save()
    for name, section in (("throughput", section_throughput), ("query", section_query),
                          ("memory", section_memory), ("sync", section_sync),
                          ("assign", section_assign)):
        if name in sections:
            result["sections"][name] = section(cfg)
            save()
    result["seconds"] = time.perf_counter() - t0
    result["load_end"] = loadavg()
    result["finished_utc"] = datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds")
    save()
    log(f"done in {result['seconds']:.0f}s; load {result['load_end']}; JSON {out_path}")

    import render
    doc = Path(args.doc) if args.doc else (
        HERE.parent / "docs" / "benchmarks.md" if mode_name == "full"
        else results_dir / "benchmarks-quick.md")
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(render.render(result, json_path=out_path))
    log(f"markdown written to {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
