# xoshiro256** seeded by splitmix64.  Header-only: every function is inline,
# so cimporting this file adds no runtime import.  The twin is
# edgekm/_reference/rng.py; the two must draw identical streams.
from libc.stdint cimport uint64_t

ctypedef struct rng_t:
    uint64_t s0
    uint64_t s1
    uint64_t s2
    uint64_t s3


cdef inline uint64_t _rotl(uint64_t x, int k) noexcept nogil:
    return (x << k) | (x >> (64 - k))


cdef inline uint64_t _splitmix64(uint64_t* x) noexcept nogil:
    cdef uint64_t z
    x[0] += <uint64_t>0x9E3779B97F4A7C15ULL
    z = x[0]
    z = (z ^ (z >> 30)) * <uint64_t>0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * <uint64_t>0x94D049BB133111EBULL
    return z ^ (z >> 31)


cdef inline void rng_seed(rng_t* r, uint64_t seed) noexcept nogil:
    cdef uint64_t x = seed
    r.s0 = _splitmix64(&x)
    r.s1 = _splitmix64(&x)
    r.s2 = _splitmix64(&x)
    r.s3 = _splitmix64(&x)


cdef inline uint64_t rng_next(rng_t* r) noexcept nogil:
    cdef uint64_t result = _rotl(r.s1 * 5, 7) * 9
    cdef uint64_t t = r.s1 << 17
    r.s2 ^= r.s0
    r.s3 ^= r.s1
    r.s1 ^= r.s2
    r.s0 ^= r.s3
    r.s2 ^= t
    r.s3 = _rotl(r.s3, 45)
    return result


cdef inline double rng_uniform(rng_t* r) noexcept nogil:
    """Uniform double in [0, 1) from the top 53 bits."""
    return <double>(rng_next(r) >> 11) * (1.0 / 9007199254740992.0)


cdef inline Py_ssize_t rng_randbelow(rng_t* r, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i = <Py_ssize_t>(rng_uniform(r) * n)
    return i if i < n - 1 else n - 1


cdef inline Py_ssize_t rng_sample(rng_t* r, const double* values, Py_ssize_t n,
                                  double* cumsum) noexcept nogil:
    """Index i with probability values[i] / sum(values); cumsum is workspace (n)."""
    cdef Py_ssize_t i
    cdef double acc = 0.0, t
    for i in range(n):
        acc = acc + values[i]
        cumsum[i] = acc
    t = rng_uniform(r) * acc
    for i in range(n):
        if cumsum[i] > t:
            return i
    return n - 1
