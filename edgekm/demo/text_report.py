"""The fleet demo's compact text report, and the summary lines the HTML report shares.

Renders the dict returned by :func:`edgekm.demo.fleet.run_fleet_demo`; the
HTML page is :mod:`edgekm.demo.html_report`.
"""

import math

from edgekm.demo._settings import BATCH_N_INIT

__all__ = ["format_text"]


def _num(x, spec=",.0f", none="-"):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return none
    return format(x, spec)


def _size(n):
    if n is None:
        return "-"
    for unit, scale in (("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


# ---------------------------------------------------------------- shared lines


def _summary_rows(result):
    """(label, text) pairs shared by the text and HTML reports."""
    rows = []
    data = result.get("data") or {}
    order = "shuffled" if data.get("shuffled") else "stream order"
    rows.append(("data", f"{data.get('name', '-')}: {data.get('description', '')}; {order}"
                 if data.get("kind") == "generator" else
                 f"{data.get('name', '-')} ({order})"))
    agg = result.get("aggregator") or {}
    rows.append(("fleet", f"{result.get('n_devices')} devices, {result.get('rounds')} sync "
                 f"rounds, k = {result.get('n_clusters')}, {result.get('n_features')} "
                 f"features; aggregator {agg.get('url', '-')} "
                 f"(SQLite: {agg.get('database', '-')})"))
    merged = result.get("merged_weight")
    exact = ("" if merged is None else
             f" (merged weight {merged:,.0f}: "
             f"{'exact' if merged == result.get('points') else 'MISMATCH'})")
    rows.append(("points ingested", f"{result.get('points', 0):,}{exact}"))
    up, raw = result.get("bytes_uploaded") or 0, result.get("bytes_raw") or 0
    traffic = result.get("traffic") or {}
    parts = []
    for kind in ("frames", "telemetry"):
        t = traffic.get(kind)
        if t:
            parts.append(f"{kind} {_size(t['request_bytes'])} in {t['requests']} requests")
    share = "-"
    if up and raw:      # a small device can upload more than its raw points: say so
        share = (f"{100 * up / raw:.1f} % of raw, "
                 + (f"{raw / up:.1f}x less" if up <= raw else f"{up / raw:.1f}x more"))
    rows.append(("bytes uploaded", f"{up:,} B for {raw:,} B of raw float32 points ({share})"
                 + (f": {', '.join(parts)}" if parts else "")))
    rows.append(("cost vs batch", f"{_num(result.get('cost_ratio'), '.4f')}  (cost on all the "
                 f"points of the final version / of batch k-means, best of {BATCH_N_INIT}, "
                 "on all the points; 1 = as good)"))
    checked = result.get("points_checked")
    rows.append(("anomalies flagged", f"{result.get('anomalies', 0):,}"
                 + (f" of {checked:,} points checked by the devices' filters" if checked else "")
                 + f" ({result.get('anomalies_forwarded', 0):,} forwarded raw, the rest over "
                 "the per-window cap, counted)"))
    rounds = (result.get("series") or {}).get("rounds") or []
    scores = [(r["round"], r["drift_mean"]) for r in rounds if r.get("drift_mean") is not None]
    if scores:
        rows.append(("device drift", "mean drift score by round: " + ", ".join(
            f"{rn}: {s:.2f}" for rn, s in scores) + "  (1 or more = drifting)"))
    off = result.get("offline")
    if off:
        versions = ", ".join(f"v{v}" for v in off["versions"]) or "-"
        verdict = ("every label is the nearest centre" if not off["mismatches"]
                   else f"{off['mismatches']} labels are NOT the nearest centre")
        rows.append(("offline assignment", f"server stopped; {result.get('n_devices')} devices "
                     f"labelled {off['points']:,} points with {versions} in "
                     f"{off['seconds'] * 1e3:.1f} ms; {verdict}"))
        if off.get("beyond_p99_all") is not None:
            rows.append(("calibration", f"{100 * off['beyond_p99_all']:.1f} % of all the points "
                         f"lie beyond their cluster's 99th percentile under {versions}, which "
                         "was fitted on them (about 1 % expected)"))
    return rows


def _version_line(v):
    when = f"published round {v.get('published_round', '-')}"
    if v.get("canary_percent") is not None:
        when += (f", canary {v['canary_percent']:g} % ({v.get('canary_devices')}/"
                 f"{v.get('fleet_size', '?')} devices)")
    if v.get("promoted_round") is not None:
        when += (f", promoted round {v['promoted_round']}"
                 if v.get("canary_percent") is not None or v["promoted_round"] !=
                 v.get("published_round") else ", promoted at once")
    return (f"v{v['version']}  {v['status']:<8} {when}; drift {_num(v.get('drift'), '.3f')}, "
            f"cost/batch {_num(v.get('cost_ratio_all_data'), '.3f')}")


def format_text(result):
    """The compact plain-text report of a fleet demo result."""
    verdict = "OK" if result.get("ok") else "FAILED"
    lines = [f"edgekm fleet demo: {verdict} in {_num(result.get('seconds'), '.1f')} s"]
    rows = _summary_rows(result)
    versions = result.get("versions") or []
    if versions:
        rows[5:5] = [("versions", "(drift: largest centre movement against the parent "
                      "version; cost/batch: on all the points)")] + [
            ("", _version_line(v)) for v in versions]
    if result.get("report"):
        rows.append(("report", result["report"]))
    width = max(len(label) for label, _ in rows)
    for label, text in rows:
        lines.append(f"  {label:<{width}}  {text}")
    for w in result.get("warnings") or []:
        lines.append(f"WARNING: {w}")
    failures = result.get("failures") or []
    if failures:
        lines.append(f"FAILURES ({len(failures)}):")
        lines.extend(f"  - {f}" for f in failures)
    return "\n".join(lines) + "\n"
