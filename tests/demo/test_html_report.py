"""The HTML report's plots from a hand-made result (no fleet run): page width, threshold
line, legend glyphs, rollout notes."""

import re

from edgekm.demo.html_report import render_html


def _result(n_events=2):
    rounds = [{"round": i, "points": 1000 * i, "bytes_uploaded": 10 * i,
               "fleet_vs_batch": 1.01, "active_vs_batch_new": 1.02 + 0.01 * i,
               "active_version": 1, "drift_mean": 0.2 * i, "drift_max": 0.3 * i,
               "anomalies": i} for i in range(1, 6)]
    events = [{"round": 2, "points": 2000 + 10 * j, "text": f"event {j}", "short": f"e{j}"}
              for j in range(n_events)]
    projection = {"points": [[0.0, 0.0], [1.0, 1.0]], "weights": [1.0, 2.0], "explained": 0.9,
                  "centers": {"1": [[0.1, 0.1]], "2": [[0.9, 0.9]], "batch": [[0.5, 0.5]]}}
    return {"ok": True, "seconds": 1.0, "events": events,
            "series": {"rounds": rounds, "projection": projection}}


def _svgs(html):
    return re.findall(r"<svg .*?</svg>", html)


def test_the_page_uses_its_width():
    html = render_html(_result())
    assert "max-width:1000px" not in html and "max-width:min(1600px,96vw)" in html
    assert "grid-template-columns" in html


def test_the_drift_threshold_line_is_visible_and_in_the_legend():
    drift = [s for s in _svgs(render_html(_result())) if "drift score" in s][0]
    assert drift.count('class="thr"') == 1 and "drift threshold (1)" in drift
    assert "svg .thr{stroke:#c62828" in render_html(_result())


def test_legend_glyphs_match_the_marks():
    proj = [s for s in _svgs(render_html(_result())) if "PCA" in s][0]
    legend = proj[proj.index("coreset points") - 200:]
    # centres are crosses (paths), batch k-means rings (unfilled circles), points dots
    assert legend.count('<path d="M') >= 2 and 'fill="none" stroke="#000000"' in legend
    assert 'class="pt"/><text' in legend
    cost = [s for s in _svgs(render_html(_result())) if "Cost over time" in s][0]
    # a polyline with dots: its legend is a line with a dot
    assert re.search(r'<line x1="\d+" x2="\d+" y1="\d+" y2="\d+" stroke="[^"]+" '
                     r'stroke-width="2"/><circle', cost)


def test_rollout_notes_close_together_do_not_overlap():
    cost = [s for s in _svgs(render_html(_result(n_events=5))) if "Cost over time" in s][0]
    ys = [float(y) for y in re.findall(r'<text x="[\d.]+" y="([\d.]+)" class="evt"', cost)]
    assert len(ys) == 5 and len(set(ys)) == 5
