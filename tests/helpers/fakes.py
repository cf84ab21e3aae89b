"""The fakes several test modules share: a settable clock and a frame factory."""

import numpy as np

from edgekm.sync import encode_frame


class FakeClock:
    """A settable clock (Unix seconds): pass it as ``clock=`` and move ``now`` by hand."""

    def __init__(self, now=1_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


def make_frame(device="dev-a", model="m", seq=0, n=10, d=3, boot=1, seed=None, weights=None,
               dtype=np.float32, level=0, created=0.0):
    """An encoded frame of ``n`` random points in ``d`` dimensions.

    The points (and the weights, 1 to 5, unless given) come from ``seed``, or from ``seq``
    when no seed is given: the same arguments give the same bytes, and another seed gives
    a conflicting frame under the same id.
    """
    rng = np.random.default_rng(seq if seed is None else seed)
    points = rng.normal(size=(n, d)).astype(dtype)
    if weights is None:
        weights = rng.integers(1, 6, size=n).astype(np.float64)
    return encode_frame(model=model, device=device, boot=boot, seq=seq, span=(0, n - 1),
                        points=points, weights=weights, level=level, created=created)
