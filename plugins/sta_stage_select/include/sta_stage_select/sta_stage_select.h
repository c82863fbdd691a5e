/*
 * STAStageSelect: the selection step of one STA stage (sta_deploy.sta.group_kept_indices).
 *
 * C ABI shared by the two builds of the one algorithm source (core.h):
 *   - libsta_stage_select_ref.so   CPU reference (always built)
 *   - libsta_stage_select_cuda.so  CUDA kernel launcher (built wherever nvcc exists)
 * The TensorRT wrapper (libsta_stage_select_trt.so) calls the same launcher.
 *
 * Layout (all row-major, contiguous):
 *   metric   (B, G, n, D)  L2-normalised token metric, float32 or float16 (IEEE binary16 bits)
 *   semantic (B, G, n)     min-max normalised semantic score F in [0, 1], float32
 *   out      (B, G, n - r) int32 kept token indices within each group, in the reference order
 */
#ifndef STA_STAGE_SELECT_H
#define STA_STAGE_SELECT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define STA_API __declspec(dllexport)
#else
#define STA_API __attribute__((visibility("default")))
#endif

#define STA_STAGE_SELECT_VERSION "1"

/* Limits (see README "Limits"). */
#define STA_STAGE_SELECT_MAX_TOKENS 2048 /* n: per-token state lives in shared memory, 20 bytes a token */
#define STA_STAGE_SELECT_MAX_DIM 4096    /* D: not a memory bound; caps the per-thread dot-product loop */

/* Return codes. */
#define STA_OK 0
#define STA_ERR_NULL_POINTER 1   /* a required pointer is NULL */
#define STA_ERR_BAD_SHAPE 2      /* B < 1, G < 1, n < 2 or D < 1 */
#define STA_ERR_BAD_R 3          /* r < 0 or r >= n */
#define STA_ERR_TOO_MANY_TOKENS 4 /* n > STA_STAGE_SELECT_MAX_TOKENS */
#define STA_ERR_DIM_TOO_LARGE 5  /* D > STA_STAGE_SELECT_MAX_DIM */
#define STA_ERR_OUT_OF_MEMORY 6  /* host allocation failed (CPU reference) */
#define STA_ERR_WORKSPACE 7      /* workspace smaller than sta_stage_select_workspace_size() */
#define STA_ERR_CUDA 8           /* a CUDA call failed; see the cuda_error out-parameter */

/* Human-readable text for a return code (static storage). */
STA_API const char* sta_stage_select_error_string(int code);

/* Shape check shared by every entry point: STA_OK or one of the codes above. */
STA_API int sta_stage_select_validate(int64_t B, int64_t G, int64_t n, int64_t D, int64_t r);

/* Bytes of device scratch memory the CUDA kernel needs: B * n * n * sizeof(float).
 * (The per-token state, 20 * n + 4 bytes per sample, lives in shared memory.) */
STA_API size_t sta_stage_select_workspace_size(int64_t B, int64_t n);

/* ---- CPU reference (libsta_stage_select_ref.so) ---------------------------------------------- */

/* Production semantics: float32 accumulation, bit-identical to the CUDA kernel. */
STA_API int sta_stage_select_ref_f32(const float* metric, const float* semantic, int64_t B, int64_t G, int64_t n,
    int64_t D, int64_t r, int32_t backward, int32_t* out);

/* Same with a float16 metric (binary16 bit patterns); scores still accumulate in float32. */
STA_API int sta_stage_select_ref_f16(const uint16_t* metric, const float* semantic, int64_t B, int64_t G, int64_t n,
    int64_t D, int64_t r, int32_t backward, int32_t* out);

/* Verification build of the same source in float64.  If margin is not NULL it receives the smallest
 * relative gap between two distinct neighbouring values in any ordering that decides the output
 * (1.0 if there is none): a run with a margin well above float32 rounding error selects the same
 * tokens in float32. */
STA_API int sta_stage_select_ref_f64(const double* metric, const double* semantic, int64_t B, int64_t G, int64_t n,
    int64_t D, int64_t r, int32_t backward, int32_t* out, double* margin);

/* Test aid: the float32 build run by `threads` host threads per sample that split each phase and meet
 * at a barrier exactly like the CUDA block does (threadIdx.x / blockDim.x / __syncthreads).  Same
 * result as sta_stage_select_ref_f32 for any thread count: checks the kernel's phase decomposition
 * (coverage, barriers, leader-only sections) without a GPU. */
STA_API int sta_stage_select_ref_f32_threads(const float* metric, const float* semantic, int64_t B, int64_t G,
    int64_t n, int64_t D, int64_t r, int32_t backward, int32_t* out, int32_t threads);

/* ---- CUDA launcher (libsta_stage_select_cuda.so, and linked into the TensorRT wrapper) ---------- */

/* Enqueue the kernel on `stream` (a cudaStream_t). All pointers are device pointers; metric_is_half
 * selects float16 metric input. workspace must hold sta_stage_select_workspace_size(B, n) bytes.
 * On STA_ERR_CUDA, *cuda_error (if not NULL) receives the cudaError_t value. */
STA_API int sta_stage_select_cuda_launch(const void* metric, int32_t metric_is_half, const float* semantic, int64_t B,
    int64_t G, int64_t n, int64_t D, int64_t r, int32_t backward, int32_t* out, void* workspace,
    size_t workspace_size, void* stream, int32_t* cuda_error);

#ifdef __cplusplus
}
#endif

#endif /* STA_STAGE_SELECT_H */
