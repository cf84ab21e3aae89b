"""The device agent's footprint: import time against numpy's, and RSS after a stream.

    python benchmarks/agent_footprint.py [--points 300000] [--repeats 7] [--preset default|lean]

* **Import.**  In a fresh interpreter each time, the wall time of ``import numpy`` and of
  ``import edgekm, edgekm.sync.agent`` (perf_counter around the statement, after the
  interpreter's own start-up); best of ``--repeats`` each, alternating, and their ratio.
  Target: <= 1.2.
* **RSS.**  In a fresh interpreter, a ``DeviceAgent`` (CC, k = 10, d = 10, float32, its
  default coreset_size, or the ``lean`` preset of ``edgekm._defaults``) ingests ``--points``
  points of a Gaussian mixture in batches of 1000, nothing synced (no server: the frames
  stay in the outbox, as on a device offline); VmRSS is read at the end.  Target: <= 40 MiB.

Prints one JSON object.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

IMPORT_SNIPPET = ("import time; t = time.perf_counter(); {stmt}; "
                  "print(time.perf_counter() - t)")

RSS_SNIPPET = r"""
import json, sys, tempfile
import numpy as np
import edgekm, edgekm.sync.agent
from edgekm.sync.agent import DeviceAgent
n, preset = int(sys.argv[1]), sys.argv[2]
kwargs = {}
if preset == "lean":
    from edgekm._defaults import LEAN_AGENT
    kwargs = dict(LEAN_AGENT)

def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024

before = rss()
rng = np.random.default_rng(0)
centers = rng.normal(scale=5.0, size=(10, 10)).astype(np.float32)
with tempfile.TemporaryDirectory() as state:
    agent = DeviceAgent("http://127.0.0.1:9", "bench", "dev-1", "00" * 32, state,
                        n_clusters=10, algorithm="cc", random_state=0, **kwargs)
    buf = np.empty((1000, 10), dtype=np.float32)
    for lo in range(0, n, 1000):
        labels = rng.integers(0, 10, size=1000)
        buf[:] = centers[labels] + rng.standard_normal((1000, 10), dtype=np.float32)
        agent.ingest(buf)
        if (lo // 1000) % 50 == 49:
            agent.flush()           # a window per 50k points goes to the outbox
    after = rss()
    stats = agent.stats()
    agent.close()
print(json.dumps({"rss_after_bytes": after, "rss_after_import_bytes": before,
                  "coreset_size": agent.coreset_size, "max_pending": agent.max_pending,
                  "stats": {k: v for k, v in stats.items() if "pending" in k}}))
"""


def _import_seconds(stmt, env):
    out = subprocess.run([sys.executable, "-c", IMPORT_SNIPPET.format(stmt=stmt)],
                         capture_output=True, text=True, env=env, check=True)
    return float(out.stdout.strip())


def import_ratio(repeats):
    env = dict(os.environ)
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    numpy_s, edgekm_s = [], []
    for _ in range(repeats):
        numpy_s.append(_import_seconds("import numpy", env))
        edgekm_s.append(_import_seconds("import edgekm, edgekm.sync.agent", env))
    best_np, best_ek = min(numpy_s), min(edgekm_s)
    return {"import_numpy_best_s": best_np, "import_edgekm_agent_best_s": best_ek,
            "ratio": best_ek / best_np, "repeats": repeats}


def rss_after(points, preset):
    out = subprocess.run([sys.executable, "-c", RSS_SNIPPET, str(points), preset],
                         capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    result["rss_after_mib"] = result["rss_after_bytes"] / 2 ** 20
    result["points"] = points
    result["preset"] = preset
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--points", type=int, default=300_000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--preset", choices=["default", "lean", "both"], default="both")
    args = ap.parse_args()
    presets = ["default", "lean"] if args.preset == "both" else [args.preset]
    result = {"import": import_ratio(args.repeats),
              "rss": [rss_after(args.points, p) for p in presets],
              "loadavg": [round(x, 2) for x in os.getloadavg()],
              "python": sys.version.split()[0]}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
