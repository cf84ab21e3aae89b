/* Nearest centre of one point, vectorised across clusters (four at a time).
 *
 * The arithmetic of every (point, centre) pair is that of sqdist_pc in
 * _kernels.pxd: feature j goes to partial sum j % 4, in increasing j
 * (t = x[j] - c[j]; s[j % 4] += t * t, in float64), and the distance is
 * (s0 + s1) + (s2 + s3).  Each SIMD lane runs exactly this sequence for one
 * centre, and the build has -ffp-contract=off, so the results are
 * bit-identical to the scalar kernel and to the NumPy twin.  Ties go to the
 * lowest label.
 *
 * Layout: ct holds the centres transposed, (n_features, kp) with kp the
 * number of clusters rounded up to a multiple of 4 (padding lanes are
 * ignored).  x is the point in float64.
 *
 * Two instances: a baseline one (GCC vector extensions lower 4-wide vectors
 * to SSE2 pairs on x86_64, NEON on aarch64) and, on x86_64 with GCC or
 * clang, an AVX2 one chosen at run time (__builtin_cpu_supports), so that
 * wheels never need -march=native.  Other compilers get no SIMD kernel
 * (EDGEKM_HAVE_SIMD == 0) and the Cython code uses its scalar loop.
 */
#ifndef EDGEKM_ASSIGN_SIMD_H
#define EDGEKM_ASSIGN_SIMD_H

#include <stddef.h>

#if defined(__GNUC__) || defined(__clang__)
#define EDGEKM_HAVE_SIMD 1

typedef double edgekm_v4d __attribute__((vector_size(32), aligned(8)));

#define EDGEKM_NEAREST_BODY                                                           \
    ptrdiff_t cb, j, c, label = 0;                                                    \
    double best = 0.0, s;                                                             \
    int first = 1;                                                                    \
    for (cb = 0; cb < kp; cb += 4) {                                                  \
        edgekm_v4d a0 = {0, 0, 0, 0}, a1 = a0, a2 = a0, a3 = a0, t0, t1, t2, t3;      \
        edgekm_v4d r[4];                                                              \
        const double *col = ct + cb;                                                  \
        for (j = 0; j + 4 <= d; j += 4) {                                             \
            t0 = x[j] - *(const edgekm_v4d *)(col + j * kp);                          \
            t1 = x[j + 1] - *(const edgekm_v4d *)(col + (j + 1) * kp);                \
            t2 = x[j + 2] - *(const edgekm_v4d *)(col + (j + 2) * kp);                \
            t3 = x[j + 3] - *(const edgekm_v4d *)(col + (j + 3) * kp);                \
            a0 = a0 + t0 * t0;                                                        \
            a1 = a1 + t1 * t1;                                                        \
            a2 = a2 + t2 * t2;                                                        \
            a3 = a3 + t3 * t3;                                                        \
        }                                                                             \
        if (j < d) {                                                                  \
            t0 = x[j] - *(const edgekm_v4d *)(col + j * kp);                          \
            a0 = a0 + t0 * t0;                                                        \
        }                                                                             \
        if (j + 1 < d) {                                                              \
            t1 = x[j + 1] - *(const edgekm_v4d *)(col + (j + 1) * kp);                \
            a1 = a1 + t1 * t1;                                                        \
        }                                                                             \
        if (j + 2 < d) {                                                              \
            t2 = x[j + 2] - *(const edgekm_v4d *)(col + (j + 2) * kp);                \
            a2 = a2 + t2 * t2;                                                        \
        }                                                                             \
        r[0] = (a0 + a1) + (a2 + a3);                                                 \
        for (c = 0; c < 4 && cb + c < k; c++) {                                       \
            s = r[0][c];                                                              \
            if (first || s < best) {                                                  \
                best = s;                                                             \
                label = cb + c;                                                       \
                first = 0;                                                            \
            }                                                                         \
        }                                                                             \
    }                                                                                 \
    *best_out = best;                                                                 \
    return label;

/* Points in lanes: four points at once (xt is the block transposed, (d, 4)),
 * one centre at a time (centres (k, d), row-major).  Same per-pair arithmetic;
 * the running argmin is branch-free and strict (<), so ties keep the lowest
 * label.  Writes the label and squared distance of each of the 4 points. */
typedef long long edgekm_v4i __attribute__((vector_size(32), aligned(8)));

#define EDGEKM_BLOCK4_BODY                                                            \
    ptrdiff_t c, j;                                                                   \
    const edgekm_v4d *xv = (const edgekm_v4d *)xt;                                    \
    edgekm_v4d best = {0, 0, 0, 0};                                                   \
    edgekm_v4i lab = {0, 0, 0, 0};                                                    \
    for (c = 0; c < k; c++) {                                                         \
        const double *cc = centers + c * d;                                           \
        edgekm_v4d a0 = {0, 0, 0, 0}, a1 = a0, a2 = a0, a3 = a0, t0, t1, t2, t3, s;   \
        edgekm_v4i m, cv = {c, c, c, c};                                              \
        for (j = 0; j + 4 <= d; j += 4) {                                             \
            t0 = xv[j] - cc[j];                                                       \
            t1 = xv[j + 1] - cc[j + 1];                                               \
            t2 = xv[j + 2] - cc[j + 2];                                               \
            t3 = xv[j + 3] - cc[j + 3];                                               \
            a0 = a0 + t0 * t0;                                                        \
            a1 = a1 + t1 * t1;                                                        \
            a2 = a2 + t2 * t2;                                                        \
            a3 = a3 + t3 * t3;                                                        \
        }                                                                             \
        if (j < d) { t0 = xv[j] - cc[j]; a0 = a0 + t0 * t0; }                         \
        if (j + 1 < d) { t1 = xv[j + 1] - cc[j + 1]; a1 = a1 + t1 * t1; }             \
        if (j + 2 < d) { t2 = xv[j + 2] - cc[j + 2]; a2 = a2 + t2 * t2; }             \
        s = (a0 + a1) + (a2 + a3);                                                    \
        if (c == 0) {                                                                 \
            best = s;                                                                 \
            continue;                                                                 \
        }                                                                             \
        m = (edgekm_v4i)(s < best);                                                   \
        best = (edgekm_v4d)(((edgekm_v4i)s & m) | ((edgekm_v4i)best & ~m));           \
        lab = (cv & m) | (lab & ~m);                                                  \
    }                                                                                 \
    for (j = 0; j < 4; j++) {                                                         \
        labels_out[j] = (ptrdiff_t)lab[j];                                            \
        best_out[j] = best[j];                                                        \
    }

static void edgekm_block4_base(const double *xt, const double *centers, ptrdiff_t k,
                               ptrdiff_t d, ptrdiff_t *labels_out, double *best_out)
{
    EDGEKM_BLOCK4_BODY
}

/* The float32 filter: eight float32 points in lanes (xt, (d, 8)), centres
 * rounded to float32 (c32, (k, d)).  Per lane: the smallest approximate
 * squared distance, the second smallest, and the label of the smallest
 * (strict <, so the lowest label on ties).  Only a filter: the caller
 * accepts the label when the second smallest exceeds the smallest by more
 * than twice a rigorous bound on the float32 error, and then recomputes the
 * winner's distance exactly in float64; otherwise it assigns the point
 * exactly.  So labels and distances never depend on this arithmetic. */
typedef float edgekm_v8f __attribute__((vector_size(32), aligned(4)));
typedef int edgekm_v8i __attribute__((vector_size(32), aligned(4)));

#define EDGEKM_BLOCK8F_BODY                                                           \
    ptrdiff_t c, j;                                                                   \
    const edgekm_v8f *xv = (const edgekm_v8f *)xt;                                    \
    const float inf = __builtin_inff();                                               \
    edgekm_v8f best = {0, 0, 0, 0, 0, 0, 0, 0};                                       \
    edgekm_v8f second = {inf, inf, inf, inf, inf, inf, inf, inf};                     \
    edgekm_v8i lab = {0, 0, 0, 0, 0, 0, 0, 0};                                        \
    for (c = 0; c < k; c++) {                                                         \
        const float *cc = c32 + c * d;                                                \
        edgekm_v8f a0 = {0, 0, 0, 0, 0, 0, 0, 0}, a1 = a0, t0, t1, s, hi;             \
        edgekm_v8i m, m2, cv;                                                         \
        for (j = 0; j + 2 <= d; j += 2) {                                             \
            t0 = xv[j] - cc[j];                                                       \
            t1 = xv[j + 1] - cc[j + 1];                                               \
            a0 = a0 + t0 * t0;                                                        \
            a1 = a1 + t1 * t1;                                                        \
        }                                                                             \
        if (j < d) { t0 = xv[j] - cc[j]; a0 = a0 + t0 * t0; }                         \
        s = a0 + a1;                                                                  \
        if (c == 0) {                                                                 \
            best = s;                                                                 \
            continue;                                                                 \
        }                                                                             \
        cv = lab - lab + (int)c;                                                      \
        m = (edgekm_v8i)(s < best);                                                   \
        /* the larger of (best, s) competes for second place */                       \
        hi = (edgekm_v8f)(((edgekm_v8i)best & m) | ((edgekm_v8i)s & ~m));              \
        m2 = (edgekm_v8i)(hi < second);                                               \
        second = (edgekm_v8f)(((edgekm_v8i)hi & m2) | ((edgekm_v8i)second & ~m2));     \
        best = (edgekm_v8f)(((edgekm_v8i)s & m) | ((edgekm_v8i)best & ~m));            \
        lab = (cv & m) | (lab & ~m);                                                  \
    }                                                                                 \
    for (j = 0; j < 8; j++) {                                                         \
        labels_out[j] = (ptrdiff_t)lab[j];                                            \
        best_out[j] = best[j];                                                        \
        second_out[j] = second[j];                                                    \
    }

static void edgekm_block8f_base(const float *xt, const float *c32, ptrdiff_t k, ptrdiff_t d,
                                ptrdiff_t *labels_out, float *best_out, float *second_out)
{
    EDGEKM_BLOCK8F_BODY
}

static ptrdiff_t edgekm_nearest_base(const double *x, const double *ct, ptrdiff_t k,
                                     ptrdiff_t kp, ptrdiff_t d, double *best_out)
{
    EDGEKM_NEAREST_BODY
}

#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx2")))
static ptrdiff_t edgekm_nearest_avx2(const double *x, const double *ct, ptrdiff_t k,
                                     ptrdiff_t kp, ptrdiff_t d, double *best_out)
{
    EDGEKM_NEAREST_BODY
}

__attribute__((target("avx2")))
static void edgekm_block4_avx2(const double *xt, const double *centers, ptrdiff_t k,
                               ptrdiff_t d, ptrdiff_t *labels_out, double *best_out)
{
    EDGEKM_BLOCK4_BODY
}

__attribute__((target("avx2")))
static void edgekm_block8f_avx2(const float *xt, const float *c32, ptrdiff_t k, ptrdiff_t d,
                                ptrdiff_t *labels_out, float *best_out, float *second_out)
{
    EDGEKM_BLOCK8F_BODY
}

static int edgekm_cpu_has_avx2(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") ? 1 : 0;
}
#else
static ptrdiff_t edgekm_nearest_avx2(const double *x, const double *ct, ptrdiff_t k,
                                     ptrdiff_t kp, ptrdiff_t d, double *best_out)
{
    return edgekm_nearest_base(x, ct, k, kp, d, best_out);
}

static void edgekm_block4_avx2(const double *xt, const double *centers, ptrdiff_t k,
                               ptrdiff_t d, ptrdiff_t *labels_out, double *best_out)
{
    edgekm_block4_base(xt, centers, k, d, labels_out, best_out);
}

static void edgekm_block8f_avx2(const float *xt, const float *c32, ptrdiff_t k, ptrdiff_t d,
                                ptrdiff_t *labels_out, float *best_out, float *second_out)
{
    edgekm_block8f_base(xt, c32, k, d, labels_out, best_out, second_out);
}

static int edgekm_cpu_has_avx2(void) { return 0; }
#endif

#else /* no GCC vector extensions: the Cython scalar loop runs */
#define EDGEKM_HAVE_SIMD 0
static ptrdiff_t edgekm_nearest_base(const double *x, const double *ct, ptrdiff_t k,
                                     ptrdiff_t kp, ptrdiff_t d, double *best_out)
{
    (void)x; (void)ct; (void)k; (void)kp; (void)d; *best_out = 0.0; return 0;
}
#define edgekm_nearest_avx2 edgekm_nearest_base
static void edgekm_block4_base(const double *xt, const double *centers, ptrdiff_t k,
                               ptrdiff_t d, ptrdiff_t *labels_out, double *best_out)
{
    (void)xt; (void)centers; (void)k; (void)d; (void)labels_out; (void)best_out;
}
#define edgekm_block4_avx2 edgekm_block4_base
static void edgekm_block8f_base(const float *xt, const float *c32, ptrdiff_t k, ptrdiff_t d,
                                ptrdiff_t *labels_out, float *best_out, float *second_out)
{
    (void)xt; (void)c32; (void)k; (void)d; (void)labels_out; (void)best_out; (void)second_out;
}
#define edgekm_block8f_avx2 edgekm_block8f_base
static int edgekm_cpu_has_avx2(void) { return 0; }
#endif

#endif
