"""The fleet demo's report as one self-contained HTML page with SVG plots.

Renders the dict returned by :func:`edgekm.demo.fleet.run_fleet_demo`.  The
page has no script, loads nothing (no external URL, no font, no library),
and draws its plots as inline SVG written here; every piece of text that
comes from the result is escaped with :func:`html.escape`.  The summary lines
are those of the text report (:mod:`edgekm.demo.text_report`).

Plots: cost over time (the fleet's centres against batch k-means on the
points seen so far, and the active version on each round's new points
against batch k-means on those points), cluster sizes per version, centre
movement per version and the devices' drift scores per round, and a 2-D
projection (PCA) of the aggregate's coreset points with every version's
centres.
"""

import html
import math
import os
import secrets

from edgekm.demo.text_report import _num, _summary_rows

__all__ = ["render_html", "write_html"]

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#17becf", "#7f7f7f", "#bcbd22")


def _esc(value):
    return html.escape(str(value), quote=True)


# ---------------------------------------------------------------- SVG


def _ticks(lo, hi, n=5):
    """Round tick values covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw)
    first = math.floor(lo / step) * step
    out, t = [], first
    while t <= hi + step * 1e-9:
        out.append(round(t, 12))
        t += step
    if out[-1] < hi:
        out.append(round(out[-1] + step, 12))
    return out


def _fmt_tick(t):
    if t == 0:
        return "0"
    a = abs(t)
    if a >= 1e5:
        return f"{t / 1e3:,.0f}k"
    if a >= 100:
        return f"{t:,.0f}"
    return f"{t:.3g}"


#: the colour of a threshold line (the CSS class ``thr``)
THRESHOLD_COLOR = "#c62828"

#: rows of rollout labels above a plot before they wrap round
_LABEL_ROWS = 8


class _Plot:
    """A plot area with axes; data coordinates map to SVG pixels."""

    W, H = 640, 300
    L, R, T, B = 64, 150, 34, 46

    def __init__(self, title, xlabel, ylabel, xlim, ylim, categorical=None):
        self.title, self.xlabel, self.ylabel = title, xlabel, ylabel
        self.categorical = categorical
        self.xt = None if categorical is not None else _ticks(*xlim)
        self.yt = _ticks(*ylim)
        self.x0, self.x1 = (xlim if categorical is not None else (self.xt[0], self.xt[-1]))
        self.y0, self.y1 = self.yt[0], self.yt[-1]
        self.parts = []
        self.legend = []

    def px(self, x):
        span = (self.x1 - self.x0) or 1.0
        return self.L + (x - self.x0) / span * (self.W - self.L - self.R)

    def py(self, y):
        span = (self.y1 - self.y0) or 1.0
        return self.H - self.B - (y - self.y0) / span * (self.H - self.T - self.B)

    def add(self, svg):
        self.parts.append(svg)

    def key(self, name, color, shape="line"):
        self.legend.append((name, color, shape))

    def render(self):
        W, H, L, R, T, B = self.W, self.H, self.L, self.R, self.T, self.B
        out = [f'<svg viewBox="0 0 {W} {H}" '
               f'width="{W}" height="{H}" role="img" aria-label="{_esc(self.title)}">',
               f'<text x="{W / 2:.0f}" y="18" class="t">{_esc(self.title)}</text>',
               f'<rect x="{L}" y="{T}" width="{W - L - R}" height="{H - T - B}" class="frame"/>']
        for t in self.yt:
            y = self.py(t)
            out.append(f'<line x1="{L}" x2="{W - R}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                       f'<text x="{L - 6}" y="{y + 4:.1f}" class="yt">{_esc(_fmt_tick(t))}</text>')
        if self.categorical is None:
            for t in self.xt:
                x = self.px(t)
                out.append(f'<text x="{x:.1f}" y="{H - B + 16}" class="xt">'
                           f'{_esc(_fmt_tick(t))}</text>')
        else:
            for pos, label in self.categorical:
                out.append(f'<text x="{self.px(pos):.1f}" y="{H - B + 16}" class="xt">'
                           f'{_esc(label)}</text>')
        out.append(f'<text x="{(L + W - R) / 2:.0f}" y="{H - 8}" class="xl">'
                   f'{_esc(self.xlabel)}</text>')
        out.append(f'<text x="14" y="{(T + H - B) / 2:.0f}" class="yl" '
                   f'transform="rotate(-90 14 {(T + H - B) / 2:.0f})">{_esc(self.ylabel)}</text>')
        out.extend(self.parts)
        for i, (name, color, shape) in enumerate(self.legend):
            y = T + 10 + 18 * i
            x = W - R + 12
            out.append(_glyph(shape, color, x, y))
            out.append(f'<text x="{x + 24}" y="{y + 4}" class="lg">{_esc(name)}</text>')
        out.append("</svg>")
        return "".join(out)


def _glyph(shape, color, x, y):
    """The legend's mark for ``shape``, drawn as the plot draws it, 18 px wide at (x, y)."""
    line = (f'<line x1="{x}" x2="{x + 18}" y1="{y}" y2="{y}" stroke="{color}" '
            'stroke-width="{w}"{dash}/>')
    if shape == "line":             # a polyline with dots at its points
        return (line.format(w=2, dash="") +
                f'<circle cx="{x + 9}" cy="{y}" r="2.5" fill="{color}"/>')
    if shape == "dash":
        return (line.format(w=2, dash=' stroke-dasharray="4 3"') +
                f'<circle cx="{x + 9}" cy="{y}" r="2.5" fill="{color}"/>')
    if shape == "threshold":
        return line.format(w=2, dash=' stroke-dasharray="8 4"')
    if shape == "cross":
        return (f'<path d="M{x + 4},{y - 5}L{x + 14},{y + 5}M{x + 4},{y + 5}L{x + 14},{y - 5}" '
                f'stroke="{color}" stroke-width="2.5"/>')
    if shape == "ring":
        return (f'<circle cx="{x + 9}" cy="{y}" r="5" fill="none" stroke="{color}" '
                'stroke-width="1.5"/>')
    if shape == "dot":
        return f'<circle cx="{x + 9}" cy="{y}" r="3.5" class="pt"/>'
    return f'<rect x="{x + 4}" y="{y - 5}" width="10" height="10" fill="{color}"/>'


def _polyline(plot, xs, ys, color, name, dash=False):
    pts = [(plot.px(x), plot.py(y)) for x, y in zip(xs, ys) if y is not None]
    if not pts:
        return
    style = ' stroke-dasharray="4 3"' if dash else ""
    plot.add(f'<polyline fill="none" stroke="{color}" stroke-width="2"{style} points="'
             + " ".join(f"{x:.1f},{y:.1f}" for x, y in pts) + '"/>')
    for x, y in pts:
        plot.add(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{color}"/>')
    plot.key(name, color, "dash" if dash else "line")


def _vlines(plot, events):
    """A dashed vertical line per rollout step, labelled; steps at the same x share a label."""
    at = {}
    for ev in events:
        at.setdefault(ev["points"], []).append(ev.get("short") or ev["text"])
    for i, (x_data, labels) in enumerate(sorted(at.items())):
        x = plot.px(x_data)
        plot.add(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{plot.T}" y2="{plot.H - plot.B}" '
                 'class="ev"/>')
        right = x > plot.W - plot.R - 80
        anchor, dx = ("end", -3) if right else ("start", 3)
        plot.add(f'<text x="{x + dx:.1f}" y="{plot.T + 12 + 11 * (i % _LABEL_ROWS)}" '
                 f'class="evt" text-anchor="{anchor}">{_esc(", ".join(labels))}</text>')


def _cost_plot(result):
    rounds = (result.get("series") or {}).get("rounds") or []
    if not rounds:
        return None
    xs = [r["points"] for r in rounds]
    a = [r["fleet_vs_batch"] for r in rounds]
    b = [r["active_vs_batch_new"] for r in rounds]
    vals = [v for v in a + b if v is not None] + [1.0]
    plot = _Plot("Cost over time (1 = as good as batch k-means)", "points ingested by the fleet",
                 "cost / batch k-means", (0, max(xs)), (min(vals + [0.9]), max(vals)))
    y1 = plot.py(1.0)
    plot.add(f'<line x1="{plot.L}" x2="{plot.W - plot.R}" y1="{y1:.1f}" y2="{y1:.1f}" '
             'class="ref"/>')
    _vlines(plot, result.get("events") or [])
    _polyline(plot, xs, a, PALETTE[0], "fleet fit (all seen)")
    _polyline(plot, xs, b, PALETTE[1], "active version (new)")
    return plot.render()


def _bars(plot, groups, series):
    n = max(len(series), 1)
    band = (plot.px(1) - plot.px(0)) * 0.8
    w = band / n
    for j, (name, values, color) in enumerate(series):
        for g, v in zip(groups, values):
            if v is None:
                continue
            x = plot.px(g) - band / 2 + j * w
            y0, y = plot.py(max(plot.y0, 0.0)), plot.py(v)
            plot.add(f'<rect x="{x:.1f}" y="{min(y, y0):.1f}" width="{max(w - 1, 1):.1f}" '
                     f'height="{abs(y0 - y):.1f}" fill="{color}"><title>{_esc(name)}: '
                     f'{_esc(format(v, ".4g"))}</title></rect>')
        plot.key(name, color, "box")


def _sizes_plot(result):
    versions = [v for v in result.get("versions") or [] if v.get("cluster_weights")]
    if not versions:
        return None
    k = max(len(v["cluster_weights"]) for v in versions)
    series = [(f"v{v['version']}", [100 * s for s in v["cluster_weights"]],
               PALETTE[i % len(PALETTE)]) for i, v in enumerate(versions)]
    top = max(max(vals) for _, vals, _ in series)
    plot = _Plot("Cluster sizes per version", "cluster label", "share of training weight (%)",
                 (-0.5, k - 0.5), (0, top), categorical=[(c, str(c)) for c in range(k)])
    _bars(plot, range(k), series)
    return plot.render()


def _movement_plot(result):
    movement = (result.get("series") or {}).get("movement") or {}
    if not movement:
        return None
    k = max(len(m) for m in movement.values())
    by_v = {str(v["version"]): v for v in result.get("versions") or []}
    series = [(f"v{v} vs v{by_v.get(v, {}).get('parent', '?')}", m,
               PALETTE[(i + 1) % len(PALETTE)]) for i, (v, m) in enumerate(movement.items())]
    top = max(max(vals) for _, vals, _ in series)
    plot = _Plot("Centre drift: how far each centre moved", "cluster label",
                 "distance to the parent's centre", (-0.5, k - 0.5), (0, top),
                 categorical=[(c, str(c)) for c in range(k)])
    _bars(plot, range(k), series)
    return plot.render()


def _drift_score_plot(result):
    rounds = [r for r in (result.get("series") or {}).get("rounds") or []
              if r.get("drift_mean") is not None]
    if not rounds:
        return None
    xs = [r["points"] for r in rounds]
    mean = [r["drift_mean"] for r in rounds]
    top = [r["drift_max"] for r in rounds]
    allr = (result.get("series") or {}).get("rounds")
    plot = _Plot("Devices' drift score (1 or more = drifting)", "points ingested by the fleet",
                 "drift score", (0, max(r["points"] for r in allr)),
                 (0, max([v for v in mean + top if v is not None] + [1.2])))
    y1 = plot.py(1.0)
    plot.add(f'<line x1="{plot.L}" x2="{plot.W - plot.R}" y1="{y1:.1f}" y2="{y1:.1f}" '
             'class="thr"/>')
    plot.key("drift threshold (1)", THRESHOLD_COLOR, "threshold")
    _vlines(plot, result.get("events") or [])
    _polyline(plot, xs, mean, PALETTE[2], "mean of devices")
    _polyline(plot, xs, top, PALETTE[3], "max of devices", dash=True)
    return plot.render()


def _projection_plot(result):
    proj = (result.get("series") or {}).get("projection")
    if not proj or not proj.get("points"):
        return None
    pts = proj["points"]
    centers = proj["centers"]
    xs = [p[0] for p in pts] + [c[0] for cs in centers.values() for c in cs]
    ys = [p[1] for p in pts] + [c[1] for cs in centers.values() for c in cs]
    plot = _Plot(f"Coreset points and centres, PCA to 2-D "
                 f"({100 * proj.get('explained', 0):.0f} % of the variance)",
                 "first principal component", "second principal component",
                 (min(xs), max(xs)), (min(ys), max(ys)))
    w = proj.get("weights") or [1.0] * len(pts)
    wmax = max(w) if w else 1.0
    for (x, y), wt in zip(pts, w):
        r = 1.2 + 3.0 * math.sqrt(wt / wmax) if wmax > 0 else 1.5
        plot.add(f'<circle cx="{plot.px(x):.1f}" cy="{plot.py(y):.1f}" r="{r:.1f}" '
                 'class="pt"/>')
    plot.key("coreset points", "#b0b0b0", "dot")
    names = [v for v in centers if v != "batch"]
    for i, v in enumerate(names):
        color = PALETTE[i % len(PALETTE)]
        for x, y in centers[v]:
            cx, cy = plot.px(x), plot.py(y)
            plot.add(f'<path d="M{cx - 5:.1f},{cy - 5:.1f}L{cx + 5:.1f},{cy + 5:.1f}'
                     f'M{cx - 5:.1f},{cy + 5:.1f}L{cx + 5:.1f},{cy - 5:.1f}" stroke="{color}" '
                     'stroke-width="2.5"/>')
        plot.key(f"v{v} centres", color, "cross")
    if len(names) > 1:                      # each label's path from version to version
        k = len(centers[names[0]])
        for c in range(k):
            path = [centers[v][c] for v in names if c < len(centers[v])]
            plot.add('<polyline fill="none" stroke="#555" stroke-width="1" '
                     'stroke-dasharray="2 2" points="' + " ".join(
                         f"{plot.px(x):.1f},{plot.py(y):.1f}" for x, y in path) + '"/>')
    if "batch" in centers:
        for x, y in centers["batch"]:
            plot.add(f'<circle cx="{plot.px(x):.1f}" cy="{plot.py(y):.1f}" r="5" fill="none" '
                     'stroke="#000" stroke-width="1.5"/>')
        plot.key("batch k-means", "#000000", "ring")
    return plot.render()


# ---------------------------------------------------------------- HTML

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;
max-width:min(1600px,96vw);color:#222;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.ok{color:#1a7f37}.bad{color:#c62828}
table{border-collapse:collapse;margin:6px 0}td,th{padding:3px 10px;border-bottom:1px solid #e4e4e4;
text-align:left;vertical-align:top}th{background:#f6f6f6}td.n{text-align:right;
font-variant-numeric:tabular-nums}
.plots{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:8px 24px}
.plots svg{display:block;margin:10px 0;width:100%;height:auto}
svg text{font:11px system-ui,sans-serif;fill:#333}svg .t{font-size:13px;font-weight:600;
text-anchor:middle}svg .yt{text-anchor:end}svg .xt,svg .xl{text-anchor:middle}
svg .yl{text-anchor:middle}svg .frame{fill:none;stroke:#999}svg .grid{stroke:#eee}
svg .ref{stroke:#444;stroke-dasharray:6 4}svg .thr{stroke:#c62828;stroke-width:2;
stroke-dasharray:8 4}svg .ev{stroke:#aaa;stroke-dasharray:3 3}
svg .evt{font-size:10px;fill:#666}svg .pt{fill:#b0b0b0;fill-opacity:.6}
ul.f li{color:#c62828}ul.w li{color:#a15c00}p.note{color:#555;font-size:13px}
"""


def _table(header, rows, numeric=()):
    out = ["<table><tr>" + "".join(f"<th>{_esc(h)}</th>" for h in header) + "</tr>"]
    for row in rows:
        out.append("<tr>" + "".join(
            f'<td class="n">{_esc(c)}</td>' if j in numeric else f"<td>{_esc(c)}</td>"
            for j, c in enumerate(row)) + "</tr>")
    out.append("</table>")
    return "".join(out)


def render_html(result):
    """The report as one self-contained HTML page (a str)."""
    ok = bool(result.get("ok"))
    title = f"edgekm fleet demo: {'OK' if ok else 'FAILED'}"
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width,initial-scale=1">',
             f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>",
             f'<h1>edgekm fleet demo: <span class="{"ok" if ok else "bad"}">'
             f'{"OK" if ok else "FAILED"}</span></h1>',
             f'<p class="note">{_esc(_num(result.get("seconds"), ".1f"))} s, seed '
             f'{_esc(result.get("seed"))}.</p>']
    failures = result.get("failures") or []
    if failures:
        parts.append("<h2>Failures</h2><ul class=\"f\">"
                     + "".join(f"<li>{_esc(f)}</li>" for f in failures) + "</ul>")
    warnings = result.get("warnings") or []
    if warnings:
        parts.append("<h2>Warnings</h2><ul class=\"w\">"
                     + "".join(f"<li>{_esc(w)}</li>" for w in warnings) + "</ul>")
    parts.append("<h2>Summary</h2>")
    parts.append(_table(("", ""), _summary_rows(result)))
    versions = result.get("versions") or []
    if versions:
        parts.append("<h2>Versions</h2>")
        rows = []
        for v in versions:
            canary = ("-" if v.get("canary_percent") is None else
                      f"{v['canary_percent']:g} % ({v.get('canary_devices')} devices)")
            rows.append((f"v{v['version']}", v["status"], v.get("published_round", "-"), canary,
                         v.get("promoted_round") if v.get("promoted_round") is not None else "-",
                         _num(v.get("training_weight"), ",.0f"), _num(v.get("drift"), ".4f"),
                         _num(v.get("share_change"), ".4f"),
                         _num(v.get("cost_ratio_all_data"), ".4f")))
        parts.append(_table(("version", "status", "published (round)", "canary",
                             "promoted (round)", "trained on (weight)",
                             "drift (largest centre move)", "largest share change",
                             "cost / batch, all points"), rows, numeric=(5, 6, 7, 8)))
    events = result.get("events") or []
    if events:
        parts.append("<h2>Rollout events</h2>")
        parts.append(_table(("after round", "points", "event"),
                            [(e["round"], f"{e['points']:,}", e["text"]) for e in events],
                            numeric=(0, 1)))
    plots = [p for p in (_cost_plot(result), _sizes_plot(result), _movement_plot(result),
                         _drift_score_plot(result), _projection_plot(result)) if p]
    if plots:
        parts.append('<h2>Plots</h2><div class="plots">' + "".join(plots) + "</div>")
        parts.append(
            '<p class="note">Cost over time: after each sync round, the cost of centres '
            "fitted on the aggregator's merged coresets, on every point seen so far, over "
            "batch k-means on those points; and the cost of the version the fleet uses on "
            "the round's new points over batch k-means fitted on those points alone (it "
            "rises as the clusters drift away from the deployed centres). The projection "
            "shows a sample of the aggregate's coreset points (area by weight), the centres "
            "of each version (crosses, dashed paths follow a label across versions) and "
            "batch k-means on all the points (circles).</p>")
    rounds = (result.get("series") or {}).get("rounds") or []
    if rounds:
        parts.append("<h2>Rounds</h2>")
        parts.append(_table(
            ("round", "points", "bytes uploaded", "fleet / batch (seen)",
             "active version", "active / batch (new)", "mean drift score", "anomalies"),
            [(r["round"], f"{r['points']:,}", f"{r['bytes_uploaded']:,}",
              _num(r["fleet_vs_batch"], ".4f"), r["active_version"] or "-",
              _num(r["active_vs_batch_new"], ".4f"), _num(r["drift_mean"], ".3f"),
              f"{r['anomalies']:,}") for r in rounds], numeric=(0, 1, 2, 3, 5, 6, 7)))
    parts.append("</body></html>\n")
    return "".join(parts)


def write_html(result, path):
    """Write :func:`render_html` to ``path`` atomically (a temporary file, then rename).

    The file gets the usual permissions (``0o666`` less the umask).
    """
    text = render_html(result)
    path = os.path.abspath(os.fspath(path))
    directory, name = os.path.split(path)
    tmp = os.path.join(directory, f".edgekm-report-{secrets.token_hex(6)}-{name}")
    try:
        with open(tmp, "x", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path
