"""Render a benchmark JSON (from ``run.py``) as markdown.

    python benchmarks/render.py benchmarks/results/full-....json [-o docs/benchmarks.md]

Every figure in the output comes from the JSON; nothing is typed by hand.
"""

import argparse
import json
import sys
from pathlib import Path

ALGORITHMS = ("ct", "cc", "rcc", "onlinecc", "sequential")
NAMES = {"ct": "CT", "cc": "CC", "rcc": "RCC", "onlinecc": "OnlineCC", "sequential": "Sequential"}
DATASET_TITLES = {"power": "Power", "kdd99": "KDD99 (Intrusion)", "shuttle": "Shuttle",
                  "drift": "Drift (synthetic)"}

#: The targets, as (limit, description).
COST_LIMITS = {"ct": 1.03, "cc": 1.03, "rcc": 1.03, "onlinecc": 1.10}
PARTIAL_FIT_MIN_RATIO = 2.0
LEARN_ONE_MIN_RATIO = 100.0
QUERY_LIMITS = {"cc": 0.5, "onlinecc": 0.05}
QUERY_Q = "100"
INGEST_MIN_FPS = 1000.0
INGEST_MAX_P99_MS = 50.0
WIRE_MAX_OVERHEAD = 200
ASSIGN_MIN_SPEEDUP = 1.5
ASSIGN_ONE_MAX_US = 2.0
FORWARD_MAX_RATIO = 0.01
RSS_FLAT_TOLERANCE = 1 << 20   # bytes: max - min of RSS after warm-up


def _met(ok):
    return "**MET**" if ok else "**MISSED**"


def _num(x, digits=0):
    if x is None:
        return "n/a"
    return f"{x:,.{digits}f}"


def _sci(x):
    return "n/a" if x is None else f"{x:.4g}"


def _ratio(x, digits=4):
    return "n/a" if x is None else f"{x:.{digits}f}"


def _mib(x):
    return "n/a" if x is None else f"{x / 2**20:,.1f} MiB"


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _load(x):
    return "n/a" if not x else " / ".join(f"{v:.2f}" for v in x)


# ----------------------------------------------------------------------- targets
def targets(res):
    """A list of (area, what, target, measured, ok) rows."""
    rows = []
    secs = res["sections"]
    cost = secs.get("cost", {}).get("datasets", {})
    for name, ds in cost.items():
        for k, r in ds["k"].items():
            for alg, limit in COST_LIMITS.items():
                ratio = r["edgekm"][alg]["ratio"]
                rows.append(("Cost", f"{NAMES[alg]}, {DATASET_TITLES.get(name, name)}, k={k}",
                             f"<= {limit:.2f}x batch KMeans", f"{ratio:.4f}x", ratio <= limit))
    tp = secs.get("throughput")
    if tp:
        peer = {"minibatch": "default threads", "minibatch_1thread": "1 thread"}[
            tp.get("minibatch_reference", "minibatch")]
        for alg in ALGORITHMS:
            ratio = tp["partial_fit"][alg]["ratio_vs_minibatch"]
            rows.append(("Throughput", f"{NAMES[alg]} partial_fit / MiniBatchKMeans.partial_fit "
                         f"({peer}, the faster)",
                         f">= {PARTIAL_FIT_MIN_RATIO:g}x", f"{ratio:.2f}x",
                         ratio >= PARTIAL_FIT_MIN_RATIO))
        for alg in ALGORITHMS:
            ratio = tp["learn_one"]["edgekm"][alg]["ratio_vs_river"]
            rows.append(("Throughput", f"{NAMES[alg]} learn_one / river KMeans.learn_one",
                         f">= {LEARN_ONE_MIN_RATIO:g}x", f"{ratio:.0f}x",
                         ratio >= LEARN_ONE_MIN_RATIO))
    qs = secs.get("query")
    if qs and QUERY_Q in qs["ratios"]:
        for alg, limit in QUERY_LIMITS.items():
            ratio = qs["ratios"][QUERY_Q][f"{alg}/ct"]
            rows.append(("Query", f"{NAMES[alg]} total time / CT total time, q={QUERY_Q}",
                         f"<= {limit:g}x", f"{ratio:.3f}x", ratio <= limit))
    sync = secs.get("sync")
    if sync:
        ing = sync["ingest"]
        rows.append(("Sync", f"aggregator ingest, durable frames/s (m={ing['m']}, d={ing['d']}, "
                     f"durability={ing['durability']}, {ing['uvicorn_http']}/{ing['uvicorn_loop']})",
                     f">= {INGEST_MIN_FPS:,.0f}", f"{ing['frames_per_second']:,.0f}",
                     ing["frames_per_second"] >= INGEST_MIN_FPS))
        rows.append(("Sync", "aggregator accept latency p99", f"< {INGEST_MAX_P99_MS:g} ms",
                     f"{ing['p99_ms']:.1f} ms", ing["p99_ms"] < INGEST_MAX_P99_MS))
        for w in sync["wire"]:
            rows.append(("Sync", f"frame bytes - raw array bytes (m={w['m']}, d={w['d']}, "
                         f"{w['dtype']})", f"<= {WIRE_MAX_OVERHEAD}",
                         f"{w['overhead_bytes']} ({w['frame_bytes']:,} vs {w['raw_bytes']:,})",
                         w["overhead_bytes"] <= WIRE_MAX_OVERHEAD))
    asg = secs.get("assign")
    if asg:
        for b in asg["batch"]:
            rows.append(("Assign", f"Assigner.assign / KMeans.predict speed, n={b['n']:,}, "
                         f"d={b['d']}, k={b['k']}", f">= {ASSIGN_MIN_SPEEDUP:g}x",
                         f"{b['speedup']:.2f}x", b["speedup"] >= ASSIGN_MIN_SPEEDUP))
        one = asg["assign_one"]
        rows.append(("Assign", f"assign_one from Python (d={one['d']}, k={one['k']})",
                     f"< {ASSIGN_ONE_MAX_US:g} us", f"{one['us_per_call']:.3f} us",
                     one["us_per_call"] < ASSIGN_ONE_MAX_US))
        comp = asg["compression"]
        rows.append(("Assign", f"bytes forwarded / raw bytes, no drift ({comp['data']}, "
                     f"k={comp['k']}, windows of {comp['window']:,})", f"<= {FORWARD_MAX_RATIO:.0%}",
                     f"{comp['ratio']:.3%}", comp["ratio"] <= FORWARD_MAX_RATIO))
    mem = secs.get("memory")
    if mem:
        for run in mem["runs"]:
            at = run["memory_bytes_at"]
            first, last = min(at, key=int), max(at, key=int)
            ok = len(run["memory_bytes_distinct_values"]) == 1
            rows.append(("Memory", f"{NAMES[run['algorithm']]} memory_bytes, {int(first):,} -> "
                         f"{int(last):,} points", "unchanged",
                         f"{at[first]:,} -> {at[last]:,} B "
                         f"({len(run['memory_bytes_distinct_values'])} distinct value(s) seen)",
                         ok))
        for run in mem["runs"]:
            spread = run["rss_spread_after_warmup"]
            rows.append(("Memory", f"{NAMES[run['algorithm']]} RSS during the stream, after "
                         f"warm-up", f"flat (max - min <= {_mib(RSS_FLAT_TOLERANCE)})",
                         f"{_mib(run['rss_min_after_warmup'])} .. "
                         f"{_mib(run['rss_max_after_warmup'])} (spread {spread / 1024:,.0f} KiB)",
                         spread <= RSS_FLAT_TOLERANCE))
    return rows


# ----------------------------------------------------------------------- sections
def _header(res, json_path):
    m = res["machine"]
    cfg = m.get("edgekm_config", {})
    pools = ", ".join(f"{p.get('internal_api')} ({p.get('num_threads')} threads)"
                      for p in m.get("threadpools", [])) or "n/a"
    mode = res["mode"]
    out = ["# edgekm benchmarks", ""]
    out.append(f"*Generated by `benchmarks/render.py` from `{json_path}` (written by "
               f"`benchmarks/run.py`). Do not edit the figures by hand: re-run the benchmark.*")
    out.append("")
    if mode != "full":
        out += ["> **This is a `--quick` run on subsets: a check that the script works, not the "
                "published figures.**", ""]
    out += [
        "## How these figures were taken", "",
        _table(["", ""], [
            ("command", f"`{res['command']}` (from the repository root; "
                        f"interpreter `{res['python_executable']}`)"),
            ("mode", mode),
            ("started (UTC)", res["started_utc"]),
            ("finished (UTC)", res.get("finished_utc", "n/a")),
            ("wall time", f"{res.get('seconds', 0) / 60:.1f} min"),
            ("load average at start (1/5/15 min)", _load(res["load_start"])),
            ("load average at end (1/5/15 min)", _load(res.get("load_end"))),
            ("CPU", f"{m['cpu_model']}, {m['logical_cpus']} logical CPUs "
                    f"({m['usable_cpus']} usable)"),
            ("RAM", _mib(m["ram_bytes"])),
            ("OS", m["platform"]),
            ("Python", m["python"]),
            ("NumPy / scikit-learn / river", f"{m['numpy']} / {m['sklearn']} / {m['river']}"),
            ("edgekm", f"{m['edgekm']}, backend `{cfg.get('backend')}` "
                       f"(EDGEKM_PUREPYTHON forced: {cfg.get('forced_by_EDGEKM_PUREPYTHON')})"),
            ("native thread pools (scikit-learn)", pools),
        ]),
        "",
        f"**Noise.** The machine has two cores; {_busy_sentence(res)} The load averages above "
        "and in each section show how busy it was. Ratios between methods timed in the same run "
        "are more trustworthy than absolute figures. Timings that matter for a target are "
        "repeated (see each section) and the median is reported. scikit-learn's batch `KMeans` "
        "uses its default threads (both cores); `MiniBatchKMeans` runs in one thread in section "
        "1 and both ways in section 2; edgekm and river use one core.",
        "",
        "Every edgekm estimator is `StreamingKMeans(n_clusters=k, algorithm=..., random_state=0)` "
        f"with the defaults: {_defaults_text(res)}. Each configuration is run once with seed 0 "
        "for the cost figures (the paper reports medians of 9 runs; this run does not).",
        "",
    ]
    return out


def _busy_sentence(res):
    loads = [x[0] for x in (res.get("load_start"), res.get("load_end")) if x]
    if loads and max(loads) < 1.5:
        return ("nothing else ran during this run (1-minute load average at most "
                f"{max(loads):.2f} at its start and end), so timings are as quiet as this "
                "machine gets.")
    return ("other work (test suites and builds of concurrent development) shared it during "
            "this run, so timings are noisy.")


def _defaults_text(res):
    d = res.get("config", {}).get("edgekm_defaults")
    if not d:
        return "(not recorded by this run)"
    return (f"{d['dtype']}, `coreset_size = {d['coreset_size_per_cluster']} k`, "
            f"`merge_degree = {d['merge_degree']}`, `n_init = {d['n_init']}`, "
            f"`max_iter = {d['max_iter']}` (RCC `nesting_depth = {d['nesting_depth']}`, "
            f"OnlineCC `switch_threshold = {d['switch_threshold']}`)")


def _targets_md(res):
    rows = targets(res)
    out = ["## Targets", ""]
    if not rows:
        return out + ["No section ran.", ""]
    missed = [r for r in rows if not r[4]]
    by_area = {}
    for r in rows:
        by_area.setdefault(r[0], [0, 0])
        by_area[r[0]][0 if r[4] else 1] += 1
    out.append("Summary: " + "; ".join(f"{a}: {v[0]} met, {v[1]} missed"
                                        for a, v in by_area.items()) + ".")
    out.append("")
    if missed:
        out.append("Missed: " + "; ".join(f"{r[1]} ({r[3]}, target {r[2]})" for r in missed)
                   + ".")
    else:
        out.append("Every target was met.")
    out.append("")
    out.append(_table(["area", "what", "target", "measured", "verdict"],
                      [(a, w, t, m, _met(ok)) for a, w, t, m, ok in rows]))
    out.append("")
    return out


def _cost_md(res):
    sec = res["sections"].get("cost")
    if not sec:
        return []
    out = ["## 1. Cost relative to batch k-means", ""]
    out += [
        "Each data set is streamed through `partial_fit` in batches of 1,024 points and queried "
        "once at the end (reading `cluster_centers_`). The cost is the sum over **all** points "
        "of the squared distance to the nearest final centre, computed in float64 with NumPy "
        "from coordinate differences (`benchmarks/common.py: sq_cost`), and divided by the same "
        "cost for scikit-learn `KMeans(n_clusters=k, n_init=10, random_state=0)` fitted on the "
        "whole (float32) data set. Below 1 means better than batch k-means. "
        "`MiniBatchKMeans(n_clusters=k, random_state=0)` (other parameters default) gets "
        "`partial_fit` over the same batches, limited to one native thread with threadpoolctl "
        "(see section 2 for why; its cost does not depend on it). Real data sets are shuffled with "
        "`numpy.random.default_rng(0).permutation` before streaming; the drift stream keeps its "
        "order.",
        "",
        f"Section wall time {sec.get('seconds', 0) / 60:.1f} min; load average "
        f"{_load(sec.get('load_start'))} at start, {_load(sec.get('load_end'))} at end.",
        "",
    ]
    max_check = 0.0
    for name, ds in sec["datasets"].items():
        info = ds["info"]
        title = DATASET_TITLES.get(name, name)
        out.append(f"### {title}")
        out.append("")
        desc = (f"{info['rows']:,} points x {info['cols']} features"
                + ("" if info["rows"] == info.get("full_rows") else
                   f" (the first {info['rows']:,} of {info['full_rows']:,} after shuffling)")
                + ("; shuffled with seed %d" % info["shuffle_seed"] if info["shuffled"]
                   else "; stream order"))
        out.append(f"{info['description']}: {desc}. Wall time {ds['seconds']:.0f} s; load "
                   f"{_load(ds['load_start'])} -> {_load(ds['load_end'])}.")
        if name == "drift":
            g = info["generator"]
            if info["rows"] != info.get("default_rows", info["rows"]):
                out.append(f"This run generated {info['rows']:,} points instead of the default "
                           f"{info['default_rows']:,}, at the same speed per point.")
            out.append("")
            out.append(
                f"Generator (`benchmarks/datasets.py: drift_stream`): {g['k_true']} centroids in "
                f"[0, 1]^{g['d']}, each moving along its own random direction at "
                f"{g['speed_per_point']:g} per point (reflected at the faces of the cube; "
                f"{g['distance_travelled']:.3g} in all), weights uniform in "
                f"[{g['weight_range'][0]}, {g['weight_range'][1]}], spreads sigma uniform in "
                f"[{g['sigma_range'][0]}, {g['sigma_range'][1]}], seed {g['seed']}.")
        out.append("")
        header = ["k", "batch KMeans cost", "KMeans time"] + [NAMES[a] for a in ALGORITHMS] + [
            "MiniBatchKMeans"]
        rows = []
        for k, r in ds["k"].items():
            ref = r["reference"]
            rows.append([k, _sci(ref["cost"]), f"{ref['seconds']:.1f} s"]
                        + [_ratio(r["edgekm"][a]["ratio"]) for a in ALGORITHMS]
                        + [_ratio(r["minibatch"]["ratio"])])
            for a in ALGORITHMS:
                max_check = max(max_check, r["edgekm"][a]["cost_check_rel_diff"])
        out.append("Cost / batch KMeans cost (full stream):")
        out.append("")
        out.append(_table(header, rows))
        out.append("")
        rows = []
        for k, r in ds["k"].items():
            n = info["rows"]
            rows.append([k] + [f"{r['edgekm'][a]['update_seconds'] / n * 1e6:.2f}"
                               for a in ALGORITHMS]
                        + [f"{r['minibatch']['update_seconds'] / n * 1e6:.2f}"]
                        + [f"{r['edgekm'][a]['query_seconds'] * 1e3:.1f}" for a in ALGORITHMS])
        out.append("Update time (µs per point, `partial_fit`) and the one final query (ms):")
        out.append("")
        out.append(_table(["k"] + [f"{NAMES[a]} µs/pt" for a in ALGORITHMS]
                          + ["MiniBatchKMeans µs/pt"]
                          + [f"{NAMES[a]} query ms" for a in ALGORITHMS], rows))
        out.append("")
        rows = []
        first = next(iter(ds["k"].values()))
        P = first["prefix"]["prefix_points"]
        for k, r in ds["k"].items():
            pre = r["prefix"]
            rows.append([k, _sci(pre["reference"]["cost"]),
                         _ratio(pre["river_KMeans"]["ratio"]),
                         _ratio(pre["river_STREAMKMeans"]["ratio"]),
                         _ratio(pre["edgekm_cc"]["ratio"]),
                         _ratio(pre["edgekm_onlinecc"]["ratio"]),
                         _ratio(pre["minibatch"]["ratio"]),
                         f"{pre['river_KMeans']['update_seconds']:.1f} / "
                         f"{pre['river_STREAMKMeans']['update_seconds']:.1f} s"])
        out.append(f"**River, on a prefix.** river learns one dict at a time and is slow, so it "
                   f"gets only the **first {P:,} points** of the stream above; its cost is "
                   f"measured on that prefix and divided by the cost of batch "
                   f"`KMeans(n_init=10, random_state=0)` fitted on the same prefix. edgekm CC, "
                   f"OnlineCC and MiniBatchKMeans were run on the same prefix for comparison "
                   f"(these ratios are **not** comparable with the full-stream table above).")
        out.append("")
        out.append(_table(["k", f"batch KMeans cost (prefix {P:,})", "river KMeans",
                           "river STREAMKMeans", "edgekm CC", "edgekm OnlineCC",
                           "MiniBatchKMeans", "river time KMeans / STREAMKMeans"], rows))
        out.append("")
        rk = first["prefix"]["river_KMeans"]["params"]
        rs = first["prefix"]["river_STREAMKMeans"]["params"]
        out.append(f"river parameters: `cluster.KMeans(n_clusters=k, halflife={rk['halflife']}, "
                   f"mu={rk['mu']}, sigma={rk['sigma']}, p={rk['p']}, seed=0)` (river's defaults "
                   f"except n_clusters and seed); `cluster.STREAMKMeans(chunk_size=20*k, "
                   f"n_clusters=k, seed=0)` (chunk_size={rs['chunk_size']} for k={k_first(ds)}: "
                   f"one chunk per edgekm bucket; its inner KMeans keeps halflife="
                   f"{rs['inner_halflife']}, mu={rs['inner_mu']}, sigma={rs['inner_sigma']}). "
                   f"Points are given as `dict(enumerate(row))` of Python floats; centres are "
                   f"read from `model.centers`.")
        out.append("")
    out.append(f"Cross-check: edgekm's own `score` agrees with the independent NumPy cost to a "
               f"relative difference of at most {max_check:.2e} over every edgekm run above.")
    out.append("")
    return out


def k_first(ds):
    return next(iter(ds["k"]))


def _throughput_md(res):
    tp = res["sections"].get("throughput")
    if not tp:
        return []
    data = tp["data"]
    pf = tp["partial_fit"]
    reps = len(pf["minibatch"]["runs"])
    out = ["## 2. Throughput", "",
           f"`partial_fit` on float32 batches of {data['batch']:,} points of Shuttle "
           f"({data['features']} features; {data['passes']} passes, each under a different fixed "
           f"permutation, {data['points']:,} points in all), k = {data['k']}, from a fresh "
           f"estimator (the first call allocates). Each method is timed {reps} times, "
           f"interleaved; the median is shown, with the best and the ratio of medians to "
           f"`MiniBatchKMeans(n_clusters=10, random_state=0).partial_fit` on the same batches. "
           f"No query is made.",
           "",
           f"Section wall time {tp['seconds']:.0f} s; load {_load(tp['load_start'])} -> "
           f"{_load(tp['load_end'])}.",
           ""]
    peers = [p for p in ("minibatch", "minibatch_1thread") if p in pf]
    peer_names = {"minibatch": "MiniBatchKMeans (default threads)",
                  "minibatch_1thread": "MiniBatchKMeans (1 thread)"}
    ref = tp.get("minibatch_reference", "minibatch")
    out.append(
        f"MiniBatchKMeans runs twice: with scikit-learn's default native threads (the pools "
        f"listed at the top) and inside `threadpoolctl.threadpool_limits(1)`. On this shared two-core machine the "
        f"threaded version is the slower one on 1,024-point batches; the ratio used for the "
        f"target is against the faster of the two, here **{peer_names[ref]}**.")
    out.append("")
    rows = []
    for alg in ALGORITHMS + tuple(peers):
        r = pf[alg]
        rows.append([NAMES.get(alg) or peer_names[alg], _num(r["points_per_second_median"]),
                     _num(r["points_per_second_best"])]
                    + [_ratio(r.get("ratio_to_" + p_), 2) if alg not in peers else ""
                       for p_ in peers]
                    + [_ratio(r.get("ratio_vs_minibatch"), 2) if alg not in peers else ""])
    out.append(_table(["method", "points/s (median)", "points/s (best)"]
                      + [f"ratio to {peer_names[p_]}" for p_ in peers]
                      + ["ratio used for the target"], rows))
    out.append("")
    lo = tp["learn_one"]
    rv = lo["river_KMeans"]
    out.append(f"`learn_one` on the first {lo['points']:,} points of the first pass: edgekm gets "
               f"each point as a C-contiguous float32 1-D NumPy array (a row view), river "
               f"`cluster.KMeans(n_clusters=10, seed=0)` (halflife 0.5, mu 0, sigma 1, p 2: "
               f"river's defaults) the same point as `dict(enumerate(row))` of Python floats. "
               f"Inputs are built before timing. edgekm: median of {len(lo['edgekm']['cc']['runs'])}"
               f" runs; river: median of {len(rv['runs'])}.")
    out.append("")
    rows = [["river KMeans", _num(rv["points_per_second_median"]), "1"]]
    for alg in ALGORITHMS:
        r = lo["edgekm"][alg]
        rows.append([f"edgekm {NAMES[alg]}", _num(r["points_per_second_median"]),
                     _ratio(r["ratio_vs_river"], 0)])
    out.append(_table(["method", "points/s (median)", "ratio to river KMeans"], rows))
    out.append("")
    out.append("`learn_one` adds the point to the current bucket; every `coreset_size` points the "
               "CT/CC/RCC/OnlineCC engines reduce a full bucket (and merge up the tree), the same "
               "per-point work as `partial_fit`, so their `learn_one` rate cannot exceed their "
               "`partial_fit` rate in the table above; Sequential does O(k d) work per point.")
    out.append("")
    return out


def _query_md(res):
    qs = res["sections"].get("query")
    if not qs:
        return []
    data = qs["data"]
    first_q = next(iter(qs["results"].values()))
    reps = len(first_q["ct"]["total_seconds_runs"])
    out = ["## 3. Query time", "",
           f"The first {data['points']:,} points of shuffled Power ({data['features']} features), "
           f"k = {data['k']}. `partial_fit` gets batches of min(1,024, q) points, cut so that a "
           f"query (reading `cluster_centers_`) falls after every q-th point. Update time "
           f"(`partial_fit`) and query time are measured separately; total = update + query. "
           f"Each (method, q) is run {reps} time(s), interleaved; the run with the median total "
           f"is shown. Stats are `stats()` at the end of that run. The cost ratio is the final "
           f"centres' cost on these points over batch `KMeans(n_init=10)` on them.",
           "",
           f"Section wall time {qs['seconds']:.0f} s; load {_load(qs['load_start'])} -> "
           f"{_load(qs['load_end'])}.",
           ""]
    for q, t in qs["results"].items():
        out.append(f"### q = {int(q):,}")
        out.append("")
        rows = []
        for alg in ALGORITHMS:
            r = t[alg]
            st = r["stats"]
            rows.append([NAMES[alg], f"{r['update_seconds']:.2f}", f"{r['query_seconds']:.2f}",
                         f"{r['total_seconds']:.2f}", f"{r['update_us_per_point']:.2f}",
                         f"{r['query_us_per_point']:.2f}", f"{r['total_us_per_point']:.2f}",
                         _ratio(r["query_ms_per_query"], 3), f"{r['n_queries']:,}",
                         f"{st.get('cache_hits', 0):,} / {st.get('cache_misses', 0):,}",
                         f"{st.get('fallbacks', 0):,}", _ratio(r["cost_ratio"], 4)])
        out.append(_table(["method", "update s", "query s", "total s", "update µs/pt",
                           "query µs/pt", "total µs/pt", "ms/query", "queries",
                           "cache hits / misses", "fallbacks", "cost ratio"], rows))
        out.append("")
    out.append("Ratios of total time (update + query) and of query time alone to CT's:")
    out.append("")
    rows = []
    for q, rt in qs["ratios"].items():
        rows.append([f"{int(q):,}"] + [_ratio(rt[f"{a}/ct"], 3) for a in ALGORITHMS]
                    + [_ratio(rt[f"{a}/ct query only"], 3) for a in ALGORITHMS])
    out.append(_table(["q"] + [f"{NAMES[a]}/CT total" for a in ALGORITHMS]
                      + [f"{NAMES[a]}/CT query" for a in ALGORITHMS], rows))
    out.append("")
    return out


#: The paper's Table IV (stored points, k = 30), for context.
PAPER_TABLE_IV = {"power": {"ct": 7150, "cc": 13750, "rcc": 68950, "onlinecc": 13780},
                  "kdd99": {"ct": 5950, "cc": 11350, "rcc": 32950, "onlinecc": 11380}}


def _memory_md(res):
    mem = res["sections"].get("memory")
    if not mem:
        return []
    out = ["## 4. Memory", ""]
    out += [
        "`memory_bytes` is what edgekm reports: the bytes of every buffer the estimator owns "
        "(bucket pool, per-slot float64 weights, index tables, the union/solver workspace and "
        "the output centres), allocated once at the first batch. \"Points\" below is "
        "`memory_bytes / (4 d)`, the number of float32 rows of d features those bytes would hold; "
        "it overstates stored points, since it counts weights and workspace too. The pool is "
        "sized for the default capacity of 2^24 buckets (`max_levels`), not for the stream at "
        "hand, so the figures do not depend on n. `bucket capacity` is the number of bucket "
        "slots from `stats()`; slots x m is the point capacity of the pool.",
        "",
    ]
    lay = mem["layout"]
    rows = []
    for d, byk in lay.items():
        for k, bya in byk.items():
            rows.append([d, k, bya["ct"]["coreset_size"]]
                        + [f"{bya[a]['memory_bytes']:,} ({bya[a]['points_equiv']:,.0f})"
                           for a in ALGORITHMS]
                        + [" / ".join(str(bya[a]["bucket_capacity"]) for a in ALGORITHMS)])
    out.append(_table(["d", "k", "m"] + [f"{NAMES[a]} bytes (points)" for a in ALGORITHMS]
                      + ["bucket capacity CT/CC/RCC/OnlineCC/Seq"], rows))
    out.append("")
    out.append("For context, the paper's Table IV (k = 30) counts the points actually stored at "
               "query time (maximum over the stream): Power CT 7,150, CC 13,750, RCC 68,950, "
               "OnlineCC 13,780; Intrusion CT 5,950, CC 11,350, RCC 32,950, OnlineCC 11,380. "
               "edgekm reserves its fixed maximum up front instead.")
    out.append("")
    p = mem["params"]
    out.append(f"### A stream of {p['n']:,} points")
    out.append("")
    out.append(
        f"A stationary Gaussian mixture ({p['d']} features, 10 components, float32), generated "
        f"in chunks of 65,536 into reused buffers (`benchmarks/datasets.py: "
        f"gaussian_mixture_chunks`) and fed to `partial_fit` in batches of {p['batch']:,}, "
        f"k = {p['k']}, with a query every {p['query_every']:,} points. It runs in a fresh "
        f"interpreter (`{mem['command']}`), so the resident set size (VmRSS from "
        f"`/proc/self/status`) is that of a process holding only edgekm, NumPy and the "
        f"generator. RSS is sampled every {p['sample_every']} batches; warm-up is the first "
        f"{p['warmup_fraction']:.0%} of the stream. `memory_bytes` is read at every sample and "
        f"at 10^4, 10^5, ... points. Load {_load(mem.get('load_start'))} -> "
        f"{_load(mem.get('load_end'))}; wall time {mem['seconds']:.0f} s.")
    out.append("")
    cps = sorted({int(c) for r in mem["runs"] for c in r["memory_bytes_at"]})
    rows = []
    for r in mem["runs"]:
        rows.append([NAMES[r["algorithm"]]]
                    + [f"{r['memory_bytes_at'].get(str(c), 0):,}" for c in cps]
                    + [str(len(r["memory_bytes_distinct_values"])),
                       _mib(r["rss_before_estimator"]),
                       _mib(r["rss_min_after_warmup"]), _mib(r["rss_max_after_warmup"]),
                       f"{r['rss_spread_after_warmup'] / 1024:,.0f} KiB",
                       f"{r['n_rss_samples_after_warmup']}",
                       _num(r["points_per_second"]),
                       str(r["stats"].get("absorptions", 0))])
    out.append(_table(["method"] + [f"memory_bytes at {c:,}" for c in cps]
                      + ["distinct memory_bytes", "RSS before estimator", "RSS min",
                         "RSS max", "RSS spread", "RSS samples", "points/s", "absorptions"],
                      rows))
    out.append("")
    out.append("RSS min/max/spread are over the samples after warm-up. The estimators run one "
               "after the other in the same worker process, so a later one's RSS also holds "
               "whatever the allocator kept from earlier ones.")
    out.append("")
    return out


def _sync_md(res):
    sync = res["sections"].get("sync")
    if not sync:
        return []
    ing = sync["ingest"]
    rows = [[k, ing[k]] for k in ("frames_per_second", "p50_ms", "p99_ms", "max_ms",
                                  "accepted_in_window", "frames_sent", "frames_stored",
                                  "db_integrity", "server_exit_status",
                                  "server_cpu_seconds_per_frame_ms", "client_processes",
                                  "threads_per_process", "durability", "uvicorn_http",
                                  "uvicorn_loop")]
    wire = [[w["m"], w["d"], w["dtype"], f"{w['raw_bytes']:,}", f"{w['frame_bytes']:,}",
             w["overhead_bytes"]] for w in sync["wire"]]
    return [
        "## Sync: aggregator ingest and wire size",
        "",
        f"Command: `{sync['ingest_command']}`. A real `edgekm serve` (uvicorn, SQLite WAL, "
        "group commit) on loopback; every client thread is one device with its own key and "
        "keep-alive connection, posting distinct signed frames back to back. A frame counts "
        "when the server answered 200 \"accepted\", i.e. after its transaction committed. The "
        "clients share the 2 cores with the server, so the figure is a lower bound for a "
        "dedicated aggregator.",
        "",
        _table(["measure", "value"], rows),
        "",
        "Wire size (ids `telemetry` / `device-0001`; the overhead grows by one byte per id "
        "character):",
        "",
        _table(["m", "d", "dtype", "raw array bytes", "frame bytes", "overhead"], wire),
        "",
    ]


def _assign_md(res):
    asg = res["sections"].get("assign")
    if not asg:
        return []
    rows = [[f"{b['n']:,}", b["d"], b["k"], f"{b['sklearn_predict_ms']:.2f}", f"{b['assign_ms']:.2f}",
             f"{b['assign_1thread_ms']:.2f}", f"{b['speedup']:.2f}", f"{b['speedup_1thread']:.2f}",
             f"{b['labels_agree']:.4f}"] for b in asg["batch"]]
    comp = asg["compression"]
    wins = [[w["n_points"], f"{w['raw_bytes']:,}", f"{w['forwarded_bytes']:,}", f"{w['ratio']:.3%}",
             w["anomalies"], w["anomalies_dropped"], f"{w['psi']:.5f}", f"{w['drift_score']:.4f}"]
            for w in comp["windows"]]
    return [
        "## Assign: offline assignment and telemetry compression",
        "",
        f"Command: `{asg['command']}` (kernel `{asg['machine'].get('assign_kernel')}`). Batch "
        "assignment of float64 points against the same centres as a fitted scikit-learn "
        "`KMeans`, whose `predict` uses BLAS and OpenMP threads; `Assigner.assign` uses its "
        "default threads, and the 1-thread column pins it to one.",
        "",
        _table(["n", "d", "k", "KMeans.predict ms", "assign ms", "assign 1-thread ms",
                "speed-up", "speed-up 1 thread", "labels agree"], rows),
        "",
        f"`assign_one`: {asg['assign_one']['us_per_call']:.3f} µs per call from Python "
        f"(d={asg['assign_one']['d']}, k={asg['assign_one']['k']}).",
        "",
        f"Compression with no drift: {comp['data']} through a version fitted on it, k={comp['k']}, "
        f"windows of {comp['window']:,} points, anomaly threshold {comp['anomaly_threshold']}, "
        f"at most {comp['max_anomalies']} raw anomalies forwarded per window "
        f"(the rest are counted in `anomalies_dropped`): {comp['ratio']:.3%} of the raw bytes.",
        "",
        _table(["points", "raw bytes", "forwarded bytes", "ratio", "anomalies sent",
                "anomalies dropped", "PSI", "drift score"], wins),
        "",
    ]


def render(res, json_path="(unknown)"):
    try:
        shown = Path(json_path).resolve().relative_to(Path(__file__).resolve().parent.parent)
    except ValueError:
        shown = json_path
    parts = _header(res, shown)
    parts += _targets_md(res)
    parts += _cost_md(res)
    parts += _throughput_md(res)
    parts += _query_md(res)
    parts += _memory_md(res)
    parts += _sync_md(res)
    parts += _assign_md(res)
    return "\n".join(parts).rstrip() + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("json")
    p.add_argument("-o", "--output", default=None)
    args = p.parse_args(argv)
    res = json.loads(Path(args.json).read_text())
    text = render(res, args.json)
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()


# ------------------------------------------------ calibration (benchmarks/calibration_paths.py)
def calibration_md(res):
    """The calibration section, from the JSON of ``benchmarks/calibration_paths.py``."""
    m = res["machine"]
    rows = [[r["case"], r["data"], f"{r['n']:,}", r["d"], r["k"], r["path"],
             f"{100 * r['beyond_p50']:.2f}", f"{100 * r['beyond_p95']:.2f}",
             f"{100 * r['beyond_p99']:.2f}", "yes" if r["all_finite"] else "NO",
             _met(r["in_targets"])] for r in res["rows"]]
    met = sum(r["in_targets"] for r in res["rows"])
    return [
        "## Calibration: anomaly thresholds through every path",
        "",
        f"Command: `{res['command']}`, rendered by `benchmarks/render.py` "
        "(`calibration_md`). Machine: "
        f"{m.get('cpu_model')}, {m.get('logical_cpus')} CPUs, {m.get('platform')}, Python "
        f"{m.get('python')}, NumPy {m.get('numpy')}, edgekm {m.get('edgekm')} (backend "
        f"`{m.get('backend')}`); load average before {_load(res['load_before'])}, after "
        f"{_load(res['load_after'])}.",
        "",
        "Fit on stationary data (shuffled), judge the same data: every point is scored "
        "against its cluster's p50/p95/p99 of the squared distance, as published by the "
        "path. Paths: `inprocess` (StreamingKMeans CC coreset, `fit_centers`, "
        "`edgekm.solve.cluster_statistics`), `cli` (`edgekm fit` to a `.msgpack` version "
        "then `edgekm assign` on the same `.npy`), `dask` (`edgekm.dask.fit_coreset`, then "
        f"`DaskFitResult.cluster_statistics`), `fleet` ({res['devices']} `DeviceAgent`s "
        f"against an aggregator served on loopback, {res['rounds']} sync rounds, frames v2 "
        "with the spread, then `Aggregator.publish`). Real sets are standardised per column "
        "(`benchmarks/spread_data.py`). Targets: beyond p50 45-55 %, p95 4-6 %, p99 "
        f"0.7-1.3 %, every score finite. {met} of {len(rows)} rows meet all three.",
        "",
        _table(["case", "data", "n", "d", "k", "path", "beyond p50 %", "beyond p95 %",
                "beyond p99 %", "all finite", "targets"], rows),
        "",
        "Each coreset point is modelled as an isotropic Gaussian around its leaf mean "
        "with the leaf's spread (`edgekm.solve.cluster_statistics`), so the thresholds are "
        "exact in the mean squared distance but not in the shape of a leaf. Misses come "
        "from data far from that model: many points at one distance (KDD99's duplicate "
        "rows, so no threshold leaves 50 % strictly beyond, `benchmarks/calibration.py`), "
        "and heavy-tailed or flat clusters (Power's median). Versions carry p50/p95/p99; "
        "`cluster_statistics(..., quantiles=...)` computes any level in (0, 1).",
        "",
    ]


def replace_section(text, name, lines):
    """``text`` with the block between ``<!-- name:begin -->`` and ``<!-- name:end -->``
    replaced by ``lines`` (appended with its markers when absent)."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = "\n".join([begin, *lines, end])
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        return head + block + rest.split(end, 1)[1]
    return text.rstrip() + "\n\n" + block + "\n"
