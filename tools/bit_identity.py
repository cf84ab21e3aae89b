"""Digests of the compiled core's outputs on a fixed workload, for cross-architecture checks.

``python tools/bit_identity.py`` prints one JSON object: for every case, the SHA-256 of the
raw bytes of what the compiled core returned (centres, coreset points and weights, labels,
distances, scores, an encoded frame).  The inputs are generated from integer arithmetic only,
so they are the same bytes on every machine; the outputs must then be too, since the build
disables floating-point contraction (``-ffp-contract=off``, setup.py) and the kernels make no
other architecture-dependent choice.  ``tests/golden/bit_identity.json`` holds the digests
computed on x86_64; ``tests/core/test_bit_identity.py`` recomputes them on whatever CPU runs the
tests (aarch64 under qemu in ``tools/aarch64.sh``), and ``--write`` regenerates the file.
"""

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

GOLDEN = Path(__file__).resolve().parent.parent / "tests" / "golden" / "bit_identity.json"


def _inputs(n, d, seed):
    """Points from a 64-bit LCG, mapped to [-8, 8) through exact integer-to-float steps."""
    state = np.uint64(seed * 2654435761 + 1)
    out = np.empty(n * d, dtype=np.uint64)
    a, c = np.uint64(6364136223846793005), np.uint64(1442695040888963407)
    with np.errstate(over="ignore"):
        for i in range(out.size):
            state = state * a + c
            out[i] = state >> np.uint64(40)          # 24 bits: exact in float32
    x = out.astype(np.float64) / float(1 << 24) * 16.0 - 8.0
    # a few clusters: shift every fifth block of rows
    x = x.reshape(n, d)
    x[:, 0] += (np.arange(n) % 5) * 20.0
    return x


def _digest(*arrays):
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def compute():
    """{case: sha256 hex} for the fixed workload (compiled backend required)."""
    import edgekm
    from edgekm import Assigner, StreamingKMeans, _backend
    from edgekm.sync.wire.frame import encode_frame
    from edgekm.sync.wire.version import CentroidVersion

    if _backend.NAME != "cython":
        raise SystemExit(f"bit_identity: the compiled core is not in use ({_backend.NAME})")
    results = {}
    X64 = _inputs(3000, 6, seed=7)
    for dtype in (np.float32, np.float64):
        X = X64.astype(dtype)
        name = np.dtype(dtype).name
        for algorithm in ("ct", "cc", "rcc", "onlinecc"):
            est = StreamingKMeans(n_clusters=5, algorithm=algorithm, coreset_size=60,
                                  dtype=dtype, random_state=3)
            for lo in range(0, X.shape[0], 250):
                est.partial_fit(X[lo:lo + 250])
            core = est.coreset()
            results[f"{algorithm}/{name}/centers"] = _digest(est.cluster_centers_)
            results[f"{algorithm}/{name}/coreset"] = _digest(core.points, core.weights)
            results[f"{algorithm}/{name}/predict"] = _digest(est.predict(X[:500]))
        centers = np.asarray(est.cluster_centers_, dtype=dtype)
        version = CentroidVersion(model="m", version=1, parent=None, created=0.0,
                                  centers=centers, cluster_weights=np.ones(5),
                                  quantiles=np.tile([0.5, 1.0, 2.0], (5, 1)),
                                  training_weight=5.0, cost=1.0)
        res = Assigner(version, n_threads=1).assign(X[:1000])
        results[f"assign/{name}"] = _digest(res.labels, res.distances, res.scores)
        body = encode_frame(model="m", device="d", boot=1, seq=1, span=[0.0, 1.0],
                            points=core.points, weights=core.weights, level=core.level,
                            created=1.0)
        results[f"frame/{name}"] = hashlib.sha256(body).hexdigest()
    results["_edgekm"] = edgekm.__version__
    return results


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    results = compute()
    if "--write" in argv:
        GOLDEN.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    print(json.dumps(results, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
