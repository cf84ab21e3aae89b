"""Poisoning measurement (mixture): centre movement with and without a malicious device.

The figures of docs/reliability.md, section 5; run `python tools/poison_mixture.py`.
"""
import time, tempfile, os
import numpy as np
from scipy.optimize import linear_sum_assignment
from edgekm.sync import encode_frame
from edgekm.sync.cloud.aggregator import Aggregator, WeightCapError

K, D, SIGMA = 5, 8, 1.0
def mixture(seed):
    rng = np.random.default_rng(seed)
    means = rng.uniform(-10, 10, size=(K, D))
    return means, rng

def run(attack, policy, trim, seed=0, devices=10, frames=3, n=400, cap=1200.0, fit_seed=0):
    means, rng = mixture(seed)
    tmp = tempfile.mkdtemp()
    agg = Aggregator(os.path.join(tmp, "a.db"), random_state=0, coreset_size=100,
                     max_device_weight=cap, weight_cap_policy=policy, checkpoint_interval=None)
    for i in range(devices):
        agg.add_device(f"d{i}")
    agg.add_device("evil")
    for f in range(frames):
        for i in range(devices):
            lab = rng.integers(0, K, size=n)
            X = means[lab] + rng.normal(scale=SIGMA, size=(n, D))
            agg.accept("m", f"d{i}", encode_frame(model="m", device=f"d{i}", boot=1, seq=f, span=(0, n-1),
                       points=X.astype(np.float32), weights=np.ones(n), level=0, created=0.0))
    info = None
    if attack == "weight":      # honest-looking points claiming 1e12
        lab = rng.integers(0, K, size=n)
        X = means[lab] + rng.normal(scale=SIGMA, size=(n, D))
        w = np.full(n, 1e12 / n)
    elif attack == "outlier":   # a tight cluster far away, within the cap
        X = np.full((n, D), 1000.0) + rng.normal(scale=0.1, size=(n, D))
        w = np.full(n, cap / n)
    elif attack == "weight_outlier":
        X = np.full((n, D), 1000.0) + rng.normal(scale=0.1, size=(n, D))
        w = np.full(n, 1e12 / n)
    if attack:
        try:
            info = agg.accept("m", "evil", encode_frame(model="m", device="evil", boot=1, seq=0, span=(0, n-1),
                       points=X.astype(np.float32), weights=w, level=0, created=0.0))
        except WeightCapError as e:
            info = type(e).__name__
    v = agg.publish("m", K, trim=trim, random_state=fit_seed)
    C = agg.version("m", v).centers.astype(np.float64)
    agg.close()
    return C, info, means

def move(A, B):
    d = np.linalg.norm(A[:, None] - B[None], axis=2)
    r, c = linear_sum_assignment(d)
    return d[r, c].max()

for trim in (0.0, 0.1):
    for policy in ("reject", "clip"):
        base, _, means = run(None, policy, trim)
        print("trim", trim, policy, "baseline vs truth", round(move(base, means), 4))
        for attack in ("weight", "outlier", "weight_outlier"):
            t = time.time()
            C, info, _ = run(attack, policy, trim)
            print(f"  {attack:15s} move={move(C, base):.4f} info={info if isinstance(info,str) else (info or {}).get('clipped_weight')} {time.time()-t:.2f}s")
print("seeds")
for seed in range(5):
    b0, _, means = run(None, "clip", 0.1, seed=seed)
    b1, _, _ = run(None, "clip", 0.1, seed=seed, fit_seed=1)
    c_out, _, _ = run("outlier", "clip", 0.1, seed=seed)
    c_w, _, _ = run("weight", "clip", 0.1, seed=seed)
    c_w0, _, _ = run("weight", "clip", 0.0, seed=seed)
    p0, _, _ = run(None, "clip", 0.0, seed=seed)
    print(seed, "fitseed", round(move(b0,b1),4), "outlier", round(move(c_out,b0),4), "weight(trim)", round(move(c_w,b0),4), "weight(plain)", round(move(c_w0,p0),4), "mindist", round(min(np.linalg.norm(means[i]-means[j]) for i in range(K) for j in range(i)),2))
