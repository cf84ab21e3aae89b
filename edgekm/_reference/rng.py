"""xoshiro256** seeded by splitmix64: the reference twin of ``cython_src/_rng.pxd``."""

import numpy as np

_MASK = (1 << 64) - 1


def _rotl(x, k):
    return ((x << k) | (x >> (64 - k))) & _MASK


def splitmix64(x):
    """Return ``(next_state, output)`` of one splitmix64 step."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    z = x
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return x, z ^ (z >> 31)


class Rng:
    """Seeded generator; ``state`` is four uint64 words."""

    __slots__ = ("s",)

    def __init__(self, seed=0):
        x = int(seed) & _MASK
        s = []
        for _ in range(4):
            x, z = splitmix64(x)
            s.append(z)
        self.s = s

    @property
    def state(self):
        return np.array(self.s, dtype=np.uint64)

    @state.setter
    def state(self, value):
        self.s = [int(v) for v in np.asarray(value, dtype=np.uint64)]

    def next_u64(self):
        s0, s1, s2, s3 = self.s
        result = (_rotl((s1 * 5) & _MASK, 7) * 9) & _MASK
        t = (s1 << 17) & _MASK
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        s3 = _rotl(s3, 45)
        self.s = [s0, s1, s2, s3]
        return result

    def uniform(self):
        return (self.next_u64() >> 11) * (1.0 / 9007199254740992.0)

    def randbelow(self, n):
        return min(int(self.uniform() * n), n - 1)

    def sample(self, values):
        """Index i with probability values[i] / sum(values) (sequential cumsum)."""
        cum = np.cumsum(values, dtype=np.float64)
        t = self.uniform() * cum[-1]
        i = int(np.searchsorted(cum, t, side="right"))
        return min(i, len(cum) - 1)
