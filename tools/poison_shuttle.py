"""Poisoning measurement (shuttle): centre movement with and without a malicious device.

The figures of docs/reliability.md, section 5; run `python tools/poison_shuttle.py`.
"""
import tempfile, os
import numpy as np
from scipy.optimize import linear_sum_assignment
from edgekm.datasets import load_shuttle
from edgekm.sync import encode_frame
from edgekm.sync.cloud.aggregator import Aggregator

X = load_shuttle().astype(np.float64)
X = (X - X.mean(0)) / X.std(0)
rng = np.random.default_rng(0)
X = X[rng.permutation(len(X))][:12000].astype(np.float32)
K = 5
def run(attack, trim, fit_seed=0, cap=1200.0, policy="clip"):
    tmp = tempfile.mkdtemp()
    agg = Aggregator(os.path.join(tmp, "a.db"), random_state=0, coreset_size=100,
                     max_device_weight=cap, weight_cap_policy=policy, checkpoint_interval=None)
    for i in range(10): agg.add_device(f"d{i}")
    agg.add_device("evil")
    parts = np.array_split(X, 30)
    for f in range(3):
        for i in range(10):
            P = parts[f * 10 + i]
            agg.accept("m", f"d{i}", encode_frame(model="m", device=f"d{i}", boot=1, seq=f, span=(0, len(P)-1),
                       points=P, weights=np.ones(len(P)), level=0, created=0.0))
    n = 400
    r = np.random.default_rng(1)
    if attack == "outlier":
        P = (np.full((n, X.shape[1]), 50.0) + r.normal(scale=0.1, size=(n, X.shape[1]))).astype(np.float32); w = np.full(n, cap / n)
    elif attack == "weight":
        P = X[r.integers(0, len(X), n)]; w = np.full(n, 1e12 / n)
    if attack:
        agg.accept("m", "evil", encode_frame(model="m", device="evil", boot=1, seq=0, span=(0, n-1), points=P, weights=w, level=0, created=0.0))
    v = agg.publish("m", K, trim=trim, random_state=fit_seed)
    C = agg.version("m", v).centers.astype(np.float64); agg.close(); return C
def move(A, B):
    d = np.linalg.norm(A[:, None] - B[None], axis=2); r, c = linear_sum_assignment(d); return d[r, c].max()
for trim in ():
    b = run(None, trim); b1 = run(None, trim, fit_seed=1)
    print(trim, "fitseed", move(b, b1), "outlier", move(run("outlier", trim), b), "weight", move(run("weight", trim), b))
for trim in (0.092, 0.15, 0.2):
    b = run(None, trim)
    print(trim, "outlier", move(run("outlier", trim), b))
from edgekm.solve import squared_distances, _trim_mask
# build attacked aggregate, compare trimmed cost of both solutions
tmp = tempfile.mkdtemp()
trim = 0.15
b = run(None, trim); a = run("outlier", trim)
# reconstruct attacked aggregate
agg = Aggregator(os.path.join(tmp, "a.db"), random_state=0, coreset_size=100, max_device_weight=1200.0, weight_cap_policy="clip", checkpoint_interval=None)
for i in range(10): agg.add_device(f"d{i}")
agg.add_device("evil")
parts = np.array_split(X, 30)
for f in range(3):
    for i in range(10):
        P = parts[f*10+i]; agg.accept("m", f"d{i}", encode_frame(model="m", device=f"d{i}", boot=1, seq=f, span=(0,len(P)-1), points=P, weights=np.ones(len(P)), level=0, created=0.0))
r = np.random.default_rng(1); n=400
P = (np.full((n, X.shape[1]), 50.0) + r.normal(scale=0.1, size=(n, X.shape[1]))).astype(np.float32)
agg.accept("m", "evil", encode_frame(model="m", device="evil", boot=1, seq=0, span=(0,n-1), points=P, weights=np.full(n, 3.0), level=0, created=0.0))
cs = agg.aggregate("m"); w = cs.weights; Xa = cs.points.astype(float)
for name, C in (("honest", b), ("captured", a)):
    _, d2 = squared_distances(Xa, C); keep = _trim_mask(d2, w, trim * w.sum())
    print(name, "trimmed cost", (w*d2)[keep].sum())
