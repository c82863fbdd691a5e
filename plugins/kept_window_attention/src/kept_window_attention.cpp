// KeptWindowAttention: Swin window attention evaluated for the kept queries only.
//
// A pruned Video Swin stage fills every window with the nearest kept tokens, runs the unmodified
// window attention and keeps the outputs at the kept positions.  Only the rows of kept queries are
// ever read, so this kernel computes exactly those: per (sample, window, head) it gathers the
// window's keys and values once (through window_index, which folds fill, padding, shift and
// partition), then runs scores + additive bias + softmax + weighted sum for each kept query of the
// window with the scores held in cache.  The result equals
//     take_rows(attend(take_rows(q), take_rows(k), take_rows(v), additive), back_index)
// of sta_deploy.models.swin_attention, up to float32 rounding.
//
// C ABI (see include/kept_window_attention.h); no dependencies beyond the C++17 standard library.

#include "kept_window_attention.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <thread>
#include <vector>

namespace {

// Register tiles sized for the vector registers there are: 32 with AVX-512 (16 floats each), 16
// with AVX2 (8 floats).  The score tile holds kQueryBlock x kKeyTile accumulators, the value tile
// kQueryBlock x (head_dim / kLanes); both must stay in registers (a spilled accumulator halves speed).
#if defined(__AVX512F__)
constexpr int kLanes = 16;
constexpr int kQueryBlock = 8;  // queries sharing every key and value load
constexpr int kKeyTile = 3;     // vectors of keys per score tile: 8 x 3 accumulators
#else
constexpr int kLanes = 8;
constexpr int kQueryBlock = 4;
constexpr int kKeyTile = 2;
#endif

typedef float vfloat __attribute__((vector_size(kLanes * sizeof(float))));
typedef int vint __attribute__((vector_size(kLanes * sizeof(int))));

inline vfloat load(const float* p) {
    vfloat v;
    std::memcpy(&v, p, sizeof(v));
    return v;
}
inline void store(float* p, vfloat v) { std::memcpy(p, &v, sizeof(v)); }
inline vfloat splat(float x) { return vfloat{} + x; }

// exp for x <= 0 (softmax after subtracting the row maximum): Cody-Waite reduction to
// r in [-ln2/2, ln2/2], a degree-6 polynomial (relative error < 2e-7), then scaling by 2^n.
inline vfloat exp_nonpositive(vfloat x) {
    x = x < splat(-87.0f) ? splat(-87.0f) : x;
    vfloat n = x * 1.44269504088896341f;
    n = __builtin_convertvector(__builtin_convertvector(n + (n < 0.0f ? splat(-0.5f) : splat(0.5f)), vint), vfloat);
    vfloat r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    vfloat p = splat(1.0f / 720.0f);
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    vint bits = (__builtin_convertvector(n, vint) + 127) << 23;
    vfloat scale;
    std::memcpy(&scale, &bits, sizeof(scale));
    return p * scale;
}

struct Problem {
    const float* q;
    const float* k;
    const float* v;
    const int64_t* window_index;
    const int64_t* back_index;
    const float* additive;
    const int64_t* window_type;  // per window
    int64_t batch, heads, rows, head_dim, slots, kept, volume;
    int index_batched;
    float scale;
    float* out;
};

// Kept queries of every window of one sample, bucketed: order[offset[w] .. offset[w + 1]).
struct Buckets {
    std::vector<int64_t> offset;
    std::vector<int64_t> order;
};

Buckets bucket_queries(const int64_t* back, int64_t kept, int64_t windows, int64_t volume) {
    Buckets b;
    b.offset.assign(windows + 1, 0);
    for (int64_t i = 0; i < kept; ++i) b.offset[back[i] / volume + 1]++;
    for (int64_t w = 0; w < windows; ++w) b.offset[w + 1] += b.offset[w];
    b.order.resize(kept);
    std::vector<int64_t> fill(b.offset.begin(), b.offset.end() - 1);
    for (int64_t i = 0; i < kept; ++i) b.order[fill[back[i] / volume]++] = i;
    return b;
}

struct Scratch {
    std::vector<float> keys_t;  // head_dim x padded volume (keys transposed; padding columns stay 0)
    std::vector<float> values;  // volume x head_dim
    std::vector<float> scores;  // kQueryBlock x padded volume
    std::vector<float> queries; // kQueryBlock x head_dim
};

// scores[i][j0, j0 + KT * kLanes) = queries[i] . keys[j] for the block's queries: compile-time tile
// sizes, so the accumulators live in registers.
template <int KT>
inline void score_tile(const float* queries, const float* keys_t, int64_t D, int64_t Vp, int64_t j0, float* scores) {
    vfloat acc[kQueryBlock][KT] = {};
    for (int64_t d = 0; d < D; ++d) {
        const float* krow = keys_t + d * Vp + j0;
        vfloat kv[KT];
        for (int t = 0; t < KT; ++t) kv[t] = load(krow + t * kLanes);
        for (int i = 0; i < kQueryBlock; ++i) {
            const vfloat qv = splat(queries[i * D + d]);
            for (int t = 0; t < KT; ++t) acc[i][t] += qv * kv[t];
        }
    }
    for (int i = 0; i < kQueryBlock; ++i)
        for (int t = 0; t < KT; ++t) store(scores + i * Vp + j0 + t * kLanes, acc[i][t]);
}

// out[i] = (sum_j weights[i][j] * values[j]) * inverse_sum[i] for the first nq queries, head_dim =
// VECS * kLanes.
template <int VECS>
inline void weighted_values(const float* weights, const float* values, int64_t V, int64_t Vp, int nq,
                            const float* inverse_sum, float* const* out) {
    vfloat acc[kQueryBlock][VECS] = {};
    for (int64_t j = 0; j < V; ++j) {
        const float* vrow = values + j * VECS * kLanes;
        vfloat vv[VECS];
        for (int t = 0; t < VECS; ++t) vv[t] = load(vrow + t * kLanes);
        for (int i = 0; i < kQueryBlock; ++i) {
            const vfloat pj = splat(weights[i * Vp + j]);
            for (int t = 0; t < VECS; ++t) acc[i][t] += pj * vv[t];
        }
    }
    for (int i = 0; i < nq; ++i)
        for (int t = 0; t < VECS; ++t) store(out[i] + t * kLanes, acc[i][t] * inverse_sum[i]);
}

void window_head(const Problem& P, const Buckets& B, int64_t b, int64_t w, int64_t h, Scratch& S) {
    const int64_t first = B.offset[w], last = B.offset[w + 1];
    if (first == last) return;
    const int64_t V = P.volume, D = P.head_dim, Vp = (V + kLanes - 1) / kLanes * kLanes;
    const int64_t* win = P.window_index + (P.index_batched ? b * P.slots : 0) + w * V;
    const int64_t* back = P.back_index + (P.index_batched ? b * P.kept : 0);
    const int64_t plane = (b * P.heads + h) * P.rows * D;
    const float* kp = P.k + plane;
    const float* vp = P.v + plane;
    const float* qp = P.q + plane;
    if (static_cast<int64_t>(S.keys_t.size()) != D * Vp) S.keys_t.assign(D * Vp, 0.0f);  // padding columns: 0 once
    S.values.resize(V * D);
    // Transpose the window's keys in blocks of kLanes rows, so that every store is a run of kLanes
    // floats and the block's rows stay in L1 (row by row, each row's D stores hit D cache lines).
    for (int64_t j0 = 0; j0 < V; j0 += kLanes) {
        const int64_t rows_here = std::min<int64_t>(kLanes, V - j0);
        const float* krows[kLanes];
        for (int64_t r = 0; r < rows_here; ++r) krows[r] = kp + win[j0 + r] * D;
        for (int64_t d = 0; d < D; ++d) {
            float* dst = &S.keys_t[d * Vp + j0];
            for (int64_t r = 0; r < rows_here; ++r) dst[r] = krows[r][d];
        }
        for (int64_t r = 0; r < rows_here; ++r) std::memcpy(&S.values[(j0 + r) * D], vp + win[j0 + r] * D, D * sizeof(float));
    }
    S.scores.resize(kQueryBlock * Vp);
    S.queries.resize(kQueryBlock * D);
    const float* additive_head = P.additive + (P.window_type[w] * P.heads + h) * V * V;
    float* outp = P.out + (b * P.heads + h) * P.kept * D;
    const int64_t key_vectors = Vp / kLanes;
    const int64_t full_tiles = key_vectors / kKeyTile;
    const int remainder = static_cast<int>(key_vectors % kKeyTile);

    for (int64_t start = first; start < last; start += kQueryBlock) {
        const int nq = static_cast<int>(std::min<int64_t>(kQueryBlock, last - start));
        int64_t position[kQueryBlock];
        float* out_row[kQueryBlock];
        for (int i = 0; i < kQueryBlock; ++i) {
            // Pad a short block with its first query: computed, never written.
            const int64_t kept_row = B.order[start + (i < nq ? i : 0)];
            out_row[i] = outp + kept_row * D;
            position[i] = back[kept_row] % V;
            const float* src = qp + win[position[i]] * D;
            for (int64_t d = 0; d < D; ++d) S.queries[i * D + d] = src[d] * P.scale;
        }
        // scores = q . k over register tiles of kKeyTile vectors x kQueryBlock queries
        for (int64_t tile = 0; tile < full_tiles; ++tile)
            score_tile<kKeyTile>(S.queries.data(), S.keys_t.data(), D, Vp, tile * kKeyTile * kLanes, S.scores.data());
        const int64_t tail = full_tiles * kKeyTile * kLanes;
        if (remainder == 1) score_tile<1>(S.queries.data(), S.keys_t.data(), D, Vp, tail, S.scores.data());
#if defined(__AVX512F__)
        if (remainder == 2) score_tile<2>(S.queries.data(), S.keys_t.data(), D, Vp, tail, S.scores.data());
#endif
        // + additive, softmax (normalised at the end); padding columns get -inf, so exp gives ~0
        float inverse_sum[kQueryBlock];
        for (int i = 0; i < kQueryBlock; ++i) {
            float* s = &S.scores[i * Vp];
            const float* add = additive_head + position[i] * V;
            vfloat row_max = splat(-std::numeric_limits<float>::infinity());
            for (int64_t j = 0; j < Vp; j += kLanes) {
                vfloat a;
                if (j + kLanes <= V) {
                    a = load(add + j);
                } else {
                    a = splat(-std::numeric_limits<float>::infinity());
                    for (int l = 0; l < kLanes && j + l < V; ++l) a[l] = add[j + l];
                }
                const vfloat x = load(s + j) + a;
                store(s + j, x);
                row_max = row_max > x ? row_max : x;
            }
            float m = row_max[0];
            for (int l = 1; l < kLanes; ++l) m = std::max(m, row_max[l]);
            vfloat total = {};
            for (int64_t j = 0; j < Vp; j += kLanes) {
                const vfloat e = exp_nonpositive(load(s + j) - m);
                store(s + j, e);
                total += e;
            }
            // the padding columns added exp(-87) ~ 1e-38 each: nothing at float precision once the
            // row maximum has contributed its 1
            float sum = 0.0f;
            for (int l = 0; l < kLanes; ++l) sum += total[l];
            inverse_sum[i] = 1.0f / sum;
        }
        // weighted sum of values, all queries of the block at once (independent accumulator chains)
        switch (D % kLanes == 0 ? D / kLanes : 0) {
            case 1: weighted_values<1>(S.scores.data(), S.values.data(), V, Vp, nq, inverse_sum, out_row); break;
            case 2: weighted_values<2>(S.scores.data(), S.values.data(), V, Vp, nq, inverse_sum, out_row); break;
            case 4: weighted_values<4>(S.scores.data(), S.values.data(), V, Vp, nq, inverse_sum, out_row); break;
            default:
                for (int i = 0; i < nq; ++i) {
                    for (int64_t d = 0; d < D; ++d) {
                        float acc = 0.0f;
                        for (int64_t j = 0; j < V; ++j) acc += S.scores[i * Vp + j] * S.values[j * D + d];
                        out_row[i][d] = acc * inverse_sum[i];
                    }
                }
        }
    }
}

}  // namespace

extern "C" {

KWA_API int kwa_forward(const float* q, const float* k, const float* v, const int64_t* window_index,
                        const int64_t* back_index, const float* additive, const int64_t* windows_per_type,
                        int64_t num_types, int64_t batch, int64_t heads, int64_t rows, int64_t head_dim,
                        int64_t slots, int64_t kept, int64_t volume, int index_batched, float scale,
                        int num_threads, float* out) {
    if (!q || !k || !v || !window_index || !back_index || !additive || !windows_per_type || !out) return KWA_BAD_ARGUMENT;
    if (batch < 1 || heads < 1 || rows < 1 || head_dim < 1 || volume < 1 || kept < 0 || num_types < 1) return KWA_BAD_ARGUMENT;
    if (slots % volume != 0) return KWA_BAD_ARGUMENT;
    const int64_t windows = slots / volume;
    std::vector<int64_t> window_type;
    for (int64_t t = 0; t < num_types; ++t)
        for (int64_t n = 0; n < windows_per_type[t]; ++n) window_type.push_back(t);
    if (static_cast<int64_t>(window_type.size()) != windows) return KWA_BAD_ARGUMENT;
    const int64_t index_batches = index_batched ? batch : 1;
    for (int64_t i = 0; i < index_batches * slots; ++i)
        if (window_index[i] < 0 || window_index[i] >= rows) return KWA_INDEX_OUT_OF_RANGE;
    for (int64_t i = 0; i < index_batches * kept; ++i)
        if (back_index[i] < 0 || back_index[i] >= slots) return KWA_INDEX_OUT_OF_RANGE;

    Problem P{q, k, v, window_index, back_index, additive, window_type.data(), batch, heads, rows, head_dim,
              slots, kept, volume, index_batched, scale, out};
    std::vector<Buckets> buckets;
    for (int64_t b = 0; b < index_batches; ++b)
        buckets.push_back(bucket_queries(back_index + b * kept, kept, windows, volume));

    const int64_t tasks = batch * windows * heads;
    std::atomic<int64_t> next{0};
    auto worker = [&]() {
        Scratch scratch;
        for (int64_t task; (task = next.fetch_add(1)) < tasks;) {
            const int64_t h = task % heads, w = (task / heads) % windows, b = task / (heads * windows);
            window_head(P, buckets[index_batched ? b : 0], b, w, h, scratch);
        }
    };
    const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(num_threads, tasks)));
    std::vector<std::thread> pool;
    for (int t = 1; t < threads; ++t) pool.emplace_back(worker);
    worker();
    for (auto& t : pool) t.join();
    return KWA_OK;
}

KWA_API const char* kwa_error_string(int code) {
    switch (code) {
        case KWA_OK: return "ok";
        case KWA_BAD_ARGUMENT: return "bad argument (null pointer, non-positive size, or window counts that do not add up)";
        case KWA_INDEX_OUT_OF_RANGE: return "an index is out of range";
        default: return "unknown error";
    }
}

}  // extern "C"
