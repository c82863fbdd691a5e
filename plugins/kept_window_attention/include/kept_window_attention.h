// C ABI of the KeptWindowAttention CPU kernel (plugins/kept_window_attention).
#pragma once
#include <stdint.h>

#if defined(_WIN32)
#define KWA_API __declspec(dllexport)
#else
#define KWA_API __attribute__((visibility("default")))
#endif

#define KWA_OK 0
#define KWA_BAD_ARGUMENT 1
#define KWA_INDEX_OUT_OF_RANGE 2

#ifdef __cplusplus
extern "C" {
#endif

// q, k, v: (batch, heads, rows, head_dim) float32, rows = the stage's kept tokens (+1 padding row).
// window_index: (slots,) or, with index_batched, (batch, slots): the row filling every window slot,
//   slots = windows * volume, windows grouped by type (windows_per_type[0] of type 0, ...).
// back_index: (kept,) or (batch, kept): the slot of every kept token; its query is the row at that slot.
// additive: (num_types, heads, volume, volume): relative position bias + shift mask per window type.
// out: (batch, heads, kept, head_dim): softmax(scale * q k^T + additive) v for every kept token.
KWA_API int kwa_forward(const float* q, const float* k, const float* v, const int64_t* window_index,
                        const int64_t* back_index, const float* additive, const int64_t* windows_per_type,
                        int64_t num_types, int64_t batch, int64_t heads, int64_t rows, int64_t head_dim,
                        int64_t slots, int64_t kept, int64_t volume, int index_batched, float scale,
                        int num_threads, float* out);

KWA_API const char* kwa_error_string(int code);

#ifdef __cplusplus
}
#endif
