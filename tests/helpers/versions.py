"""Centroid versions for the device-side tests (assignment, filter, pull)."""

import numpy as np

from tools.versions import make_version

__all__ = ["blobs", "make_version", "pull_during", "two_versions"]


def blobs(n, k=5, d=4, seed=0, shift=0.0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=10.0, size=(k, d))
    labels = rng.integers(0, k, n)
    X = centers[labels] + rng.normal(size=(n, d)) + shift
    return X.astype(dtype), centers


def pull_during(puller, changer, devices, bodies, rounds):
    """Pull from ``puller`` (an Aggregator) for every device in threads while
    ``changer(round)`` changes the rollout; returns the versions the pulls saw and checks
    that each pull got one whole stored version (its exact body and digest)."""
    import threading

    from edgekm.sync.wire.version import decode_version

    stop = threading.Event()
    seen, errors = [], []

    def pull(device):
        try:
            while not stop.is_set():
                cv, flags = puller.version_for("m", device)
                assert cv is not None
                assert (flags["body"], flags["digest"]) == bodies[cv.version]
                assert decode_version(flags["body"]).version == cv.version
                seen.append(cv.version)
        except BaseException as exc:      # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=pull, args=(d,)) for d in devices]
    for t in threads:
        t.start()
    try:
        for i in range(rounds):
            changer(i)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[0]
    return seen


def two_versions(agg, devices):
    """Publish versions 1 (k=4) and 2 (k=3) of model "m" (filled), make 2 active, add the
    pulling ``devices``; returns {version: (body, digest)}."""
    agg.publish("m", 4)
    agg.publish("m", 3)
    agg.promote("m", 2)
    for d in devices:
        agg.add_device(d)
    return {v: agg.version_body("m", v) for v in (1, 2)}
