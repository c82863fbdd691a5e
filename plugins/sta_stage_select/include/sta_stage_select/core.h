// The one source of the STAStageSelect algorithm.
//
// Everything here is __host__ __device__: the CUDA kernel (src/kernel.cu) runs selectSample() with
// one thread block per batch sample, the CPU reference (src/reference.cpp) runs the very same function
// with a serial "block" of one thread.  It computes sta_deploy.sta.group_kept_indices for one sample.
//
// Bit-exactness between the two builds.  Every reduction is a sequential loop whose order does not
// depend on the number of threads (threads only split the independent elements of a phase), the
// exponential is the polynomial below (basic IEEE operations only, no libm), and both builds forbid
// contraction into fused multiply-adds (nvcc --fmad=false, g++ -ffp-contract=off).  Hence the float32
// CPU reference and the GPU kernel produce the same bits and select the same tokens.
//
// Agreement with PyTorch.  The quantities are PyTorch's (matmul, softmax over the current tokens
// with max subtraction, row sums / products with the previous accumulated scores, score =
// accumulated * (1 - F), stable ascending selection, L1 normalisation of the kept scores), but the
// summation order inside a BLAS call is PyTorch's own business, so float32 results agree with
// PyTorch to rounding error, not to the bit.  The selection is identical wherever no two values that
// decide it are closer than that rounding error; exact ties (duplicated tokens) stay exact in both
// and go to the earlier token.  The float64 instantiation (T = double) is the verification build:
// it agrees with PyTorch run in float64 on every input the tests draw, and reports the decision
// margin so the float32 path can be checked against PyTorch where the answer is well defined.
#ifndef STA_STAGE_SELECT_CORE_H
#define STA_STAGE_SELECT_CORE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <math.h>

#include "sta_stage_select.h"

#if defined(__CUDACC__)
#define STA_HD __host__ __device__
#else
#define STA_HD
#endif

namespace sta
{

constexpr int kMaxTokens = STA_STAGE_SELECT_MAX_TOKENS;
constexpr int kMaxDim = STA_STAGE_SELECT_MAX_DIM;

//! IEEE binary16 storage (bit pattern); layout-compatible with __half.
struct Half
{
    uint16_t bits;
};

STA_HD inline float bitsToFloat(uint32_t bits)
{
    float value;
    memcpy(&value, &bits, sizeof(value));
    return value;
}

//! Exact binary16 -> binary32 conversion (normals, subnormals, infinities, NaN).
STA_HD inline float halfToFloat(uint16_t h)
{
    uint32_t const sign = static_cast<uint32_t>(h & 0x8000u) << 16;
    uint32_t exponent = (h >> 10) & 0x1fu;
    uint32_t mantissa = h & 0x3ffu;
    if (exponent == 0x1fu)
    {
        return bitsToFloat(sign | 0x7f800000u | (mantissa << 13));
    }
    if (exponent == 0)
    {
        if (mantissa == 0)
        {
            return bitsToFloat(sign);
        }
        // Subnormal: normalise the mantissa.
        exponent = 1;
        while ((mantissa & 0x400u) == 0)
        {
            mantissa <<= 1;
            --exponent;
        }
        mantissa &= 0x3ffu;
    }
    return bitsToFloat(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

template <class T>
STA_HD inline T toCompute(float v)
{
    return static_cast<T>(v);
}
template <class T>
STA_HD inline T toCompute(double v)
{
    return static_cast<T>(v);
}
template <class T>
STA_HD inline T toCompute(Half v)
{
    return static_cast<T>(halfToFloat(v.bits));
}

template <class T>
STA_HD inline bool isNaN(T x)
{
    return x != x;
}

//! max that propagates NaN (as torch.amax / softmax's max do).
template <class T>
STA_HD inline T nanMax(T a, T b)
{
    if (isNaN(a))
    {
        return a;
    }
    if (isNaN(b))
    {
        return b;
    }
    return b > a ? b : a;
}

//! exp for float32 from basic IEEE operations only, so host and device round identically.
//! Cody-Waite reduction x = k ln2 + r, |r| <= ln2 / 2, degree-7 Taylor polynomial (truncation error
//! below 1e-8 relative), exact scaling by 2^k.  Accuracy about 1-2 ulp.
STA_HD inline float expF32(float x)
{
    if (isNaN(x))
    {
        return x;
    }
    if (x > 88.72283905206835f)
    {
        return bitsToFloat(0x7f800000u);
    }
    if (x < -103.97207708f)
    {
        return 0.0f;
    }
    float const k = floorf(x * 1.44269504088896341f + 0.5f);
    // ln2 split: the high part has 16 trailing zero bits, so k * kLn2Hi is exact for |k| <= 256.
    float const kLn2Hi = 0.693145751953125f;
    float const kLn2Lo = 1.42860682030941723212e-6f;
    float const r = (x - k * kLn2Hi) - k * kLn2Lo;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int ki = static_cast<int>(k);
    if (ki > 127)
    {
        p = p * 2.0f;
        ki -= 1;
    }
    if (ki < -126)
    {
        p = p * bitsToFloat(static_cast<uint32_t>(127 - 64) << 23); // * 2^-64, exact
        ki += 64;
    }
    return p * bitsToFloat(static_cast<uint32_t>(ki + 127) << 23);
}

STA_HD inline float expCompute(float x)
{
    return expF32(x);
}
STA_HD inline double expCompute(double x)
{
    return exp(x); // verification build only (host)
}

//! Ordering used by every selection: ascending, NaN after all numbers (as torch.sort), ties stable.
template <class T>
STA_HD inline bool keyLess(T a, T b)
{
    return !isNaN(a) && (isNaN(b) || a < b);
}
template <class T>
STA_HD inline bool keyEqual(T a, T b)
{
    return a == b || (isNaN(a) && isNaN(b));
}

//! Position of values[i] in a stable ascending sort of values[0, count): the number of entries that are
//! smaller, or equal and earlier.  A permutation, computable for every i independently.
template <class T>
STA_HD inline int stableRank(T const* values, int count, int i)
{
    T const vi = values[i];
    int rank = 0;
    for (int j = 0; j < count; ++j)
    {
        T const vj = values[j];
        if (keyLess(vj, vi) || (j < i && keyEqual(vj, vi)))
        {
            ++rank;
        }
    }
    return rank;
}

template <class T, class M>
STA_HD inline T dot(M const* a, M const* b, int D)
{
    T sum = T(0);
    for (int d = 0; d < D; ++d)
    {
        sum = sum + toCompute<T>(a[d]) * toCompute<T>(b[d]);
    }
    return sum;
}

//! Relative gap of two neighbours in a decisive ordering (verification build only).
template <class T>
STA_HD inline void trackMargin(double* margin, T a, T b, double floor)
{
    if (margin == nullptr || isNaN(a) || isNaN(b) || a == b)
    {
        return;
    }
    double const x = static_cast<double>(a);
    double const y = static_cast<double>(b);
    double scale = fabs(x) > fabs(y) ? fabs(x) : fabs(y);
    scale = scale > floor ? scale : floor;
    double const gap = fabs(x - y) / scale;
    if (gap < *margin)
    {
        *margin = gap;
    }
}

//! Scratch memory of one sample.  On the GPU `sim` is global workspace and the rest shared memory.
template <class T>
struct SampleScratch
{
    T* sim;         //!< n * n   similarities, then exp(sim - column max)
    T* acc;         //!< n       accumulated score of the current group's tokens
    T* score;       //!< n       selection key (best match for the first group)
    T* prevAcc;     //!< n       L1-normalised accumulated scores of the previous group's kept tokens
    T* colSum;      //!< n       softmax denominators
    T* total;       //!< 1       sum of the kept accumulated scores
    int32_t* order; //!< n       current token order (indices within the group)
};

//! Number of T elements / int32 elements of SampleScratch apart from `sim`.
STA_HD inline int64_t tokenScratchValues(int64_t n)
{
    return 4 * n + 1;
}

//! Serial execution: the CPU reference is a block of one thread.
struct SerialExec
{
    STA_HD int begin() const
    {
        return 0;
    }
    STA_HD int stride() const
    {
        return 1;
    }
    STA_HD bool leader() const
    {
        return true;
    }
    STA_HD void sync() const {}
};

//! STA selection for one sample: group_kept_indices(metric[b], semantic[b], r, backward).
//!
//! metric (G, n, D), semantic (G, n), out (G, n - r).  Exec supplies the thread index, the stride,
//! a leader test and a barrier.  `margin` is only used by the verification build (may be null).
template <class Exec, class T, class M, class S>
STA_HD void selectSample(Exec const& ex, M const* metric, S const* semantic, int G, int n, int D, int r,
    bool backward, int32_t* out, SampleScratch<T> const& w, double* margin)
{
    int const keep = n - r;
    int const numA = (n + 1) / 2; // even positions
    int const numB = n / 2;       // odd positions
    int const first = backward ? G - 1 : 0;
    M const* const firstMetric = metric + static_cast<int64_t>(first) * n * D;

    // ---- First processed group: image-style order (no semantics). ----
    // score[a] = highest similarity of A token 2a to any B token.
    for (int a = ex.begin(); a < numA; a += ex.stride())
    {
        M const* const xa = firstMetric + static_cast<int64_t>(2 * a) * D;
        T best = dot<T>(xa, firstMetric + static_cast<int64_t>(1) * D, D);
        for (int b = 1; b < numB; ++b)
        {
            best = nanMax(best, dot<T>(xa, firstMetric + static_cast<int64_t>(2 * b + 1) * D, D));
        }
        w.score[a] = best;
    }
    ex.sync();
    // order = B positions in order, then A positions by ascending best match.
    for (int a = ex.begin(); a < numA; a += ex.stride())
    {
        w.order[numB + stableRank(w.score, numA, a)] = 2 * a;
    }
    for (int b = ex.begin(); b < numB; b += ex.stride())
    {
        w.order[b] = 2 * b + 1;
    }
    ex.sync();
    for (int j = ex.begin(); j < keep; j += ex.stride())
    {
        out[static_cast<int64_t>(first) * keep + j] = w.order[j];
    }
    if (margin != nullptr && ex.leader())
    {
        // Neighbouring A tokens whose order decides which A tokens are kept and in which order.
        int const keptA = keep - numB;
        int const last = keptA < numA - 1 ? keptA : numA - 1;
        for (int j = 0; j < last; ++j)
        {
            trackMargin(margin, w.score[w.order[numB + j] / 2], w.score[w.order[numB + j + 1] / 2], 1.0);
        }
    }
    ex.sync();

    // ---- Later groups: semantic-aware temporal accumulation. ----
    // The previous tokens are previous[order[k]], k < numPrev.  The first transition looks at the
    // first group's full n tokens in image-style order (the reference code's quirk), later ones at
    // the previous group's kept tokens in their kept order.
    M const* previous = firstMetric;
    int numPrev = n;
    for (int step = 1; step < G; ++step)
    {
        int const group = backward ? G - 1 - step : step;
        M const* const current = metric + static_cast<int64_t>(group) * n * D;
        S const* const sem = semantic + static_cast<int64_t>(group) * n;

        // sim[i, k] = current_i . previous_k
        int const numSim = n * numPrev;
        for (int e = ex.begin(); e < numSim; e += ex.stride())
        {
            int const i = e / numPrev;
            int const k = e - i * numPrev;
            w.sim[e] = dot<T>(current + static_cast<int64_t>(i) * D, previous + static_cast<int64_t>(w.order[k]) * D, D);
        }
        ex.sync();
        // Softmax over the current tokens (column-wise), with max subtraction.
        for (int k = ex.begin(); k < numPrev; k += ex.stride())
        {
            T colMax = w.sim[k];
            for (int i = 1; i < n; ++i)
            {
                colMax = nanMax(colMax, w.sim[i * numPrev + k]);
            }
            T sum = T(0);
            for (int i = 0; i < n; ++i)
            {
                T const e = expCompute(w.sim[i * numPrev + k] - colMax);
                w.sim[i * numPrev + k] = e;
                sum = sum + e;
            }
            w.colSum[k] = sum;
        }
        ex.sync();
        // accumulated_i = sum_k P[i, k] (first transition: unit mass) or P @ previous accumulated.
        for (int i = ex.begin(); i < n; i += ex.stride())
        {
            T acc = T(0);
            for (int k = 0; k < numPrev; ++k)
            {
                T const p = w.sim[i * numPrev + k] / w.colSum[k];
                acc = acc + (step == 1 ? p : p * w.prevAcc[k]);
            }
            w.acc[i] = acc;
            w.score[i] = acc * (T(1) - toCompute<T>(sem[i]));
        }
        ex.sync();
        // Stable ascending order of the scores; the first `keep` tokens survive in that order.
        for (int i = ex.begin(); i < n; i += ex.stride())
        {
            w.order[stableRank(w.score, n, i)] = i;
        }
        ex.sync();
        for (int j = ex.begin(); j < keep; j += ex.stride())
        {
            out[static_cast<int64_t>(group) * keep + j] = w.order[j];
        }
        if (ex.leader())
        {
            T total = T(0);
            for (int j = 0; j < keep; ++j)
            {
                total = total + w.acc[w.order[j]];
            }
            *w.total = total;
            if (margin != nullptr)
            {
                int const last = keep < n - 1 ? keep : n - 1;
                for (int j = 0; j < last; ++j)
                {
                    trackMargin(margin, w.score[w.order[j]], w.score[w.order[j + 1]], 0.0);
                }
            }
        }
        ex.sync();
        for (int j = ex.begin(); j < keep; j += ex.stride())
        {
            w.prevAcc[j] = w.acc[w.order[j]] / *w.total;
        }
        ex.sync();
        previous = current;
        numPrev = keep;
    }
}

//! Shape check shared by the C ABI, the CUDA launcher and the TensorRT wrapper.
STA_HD inline int validate(int64_t B, int64_t G, int64_t n, int64_t D, int64_t r)
{
    if (B < 1 || G < 1 || n < 2 || D < 1)
    {
        return STA_ERR_BAD_SHAPE;
    }
    if (n > kMaxTokens)
    {
        return STA_ERR_TOO_MANY_TOKENS;
    }
    if (D > kMaxDim)
    {
        return STA_ERR_DIM_TOO_LARGE;
    }
    if (r < 0 || r >= n)
    {
        return STA_ERR_BAD_R;
    }
    return STA_OK;
}

} // namespace sta

#endif // STA_STAGE_SELECT_CORE_H
