// CUDA build of the STAStageSelect algorithm: one thread block per batch sample runs core.h's
// selectSample(); the threads of the block split each phase's independent elements.
// Compiled with --fmad=false (see CMakeLists.txt) so its results are bit-identical to the CPU reference.
#include "sta_stage_select/core.h"

#include <cuda_runtime.h>

namespace
{

constexpr int kThreadsPerBlock = 256;

//! A CUDA thread block as the Exec of core.h.
struct BlockExec
{
    STA_HD int begin() const
    {
#if defined(__CUDA_ARCH__)
        return static_cast<int>(threadIdx.x);
#else
        return 0;
#endif
    }
    STA_HD int stride() const
    {
#if defined(__CUDA_ARCH__)
        return static_cast<int>(blockDim.x);
#else
        return 1;
#endif
    }
    STA_HD bool leader() const
    {
#if defined(__CUDA_ARCH__)
        return threadIdx.x == 0;
#else
        return true;
#endif
    }
    STA_HD void sync() const
    {
#if defined(__CUDA_ARCH__)
        __syncthreads();
#endif
    }
};

//! Dynamic shared memory: acc, score, prevAcc, colSum (n floats each), total (1 float), order (n int32).
inline size_t sharedBytes(int n)
{
    return static_cast<size_t>(sta::tokenScratchValues(n)) * sizeof(float) + static_cast<size_t>(n) * sizeof(int32_t);
}

template <class M>
__global__ void __launch_bounds__(kThreadsPerBlock) staStageSelectKernel(M const* __restrict__ metric,
    float const* __restrict__ semantic, int G, int n, int D, int r, int backward, int32_t* __restrict__ out,
    float* __restrict__ simWorkspace)
{
    extern __shared__ float shared[];
    int64_t const b = blockIdx.x;
    sta::SampleScratch<float> w;
    w.sim = simWorkspace + b * n * n;
    w.acc = shared;
    w.score = w.acc + n;
    w.prevAcc = w.score + n;
    w.colSum = w.prevAcc + n;
    w.total = w.colSum + n;
    w.order = reinterpret_cast<int32_t*>(w.total + 1);
    int64_t const keep = n - r;
    sta::selectSample(BlockExec{}, metric + b * G * n * D, semantic + b * G * n, G, n, D, r, backward != 0,
        out + b * G * keep, w, static_cast<double*>(nullptr));
}

} // namespace

extern "C" STA_API int sta_stage_select_cuda_launch(const void* metric, int32_t metric_is_half, const float* semantic,
    int64_t B, int64_t G, int64_t n, int64_t D, int64_t r, int32_t backward, int32_t* out, void* workspace,
    size_t workspace_size, void* stream, int32_t* cuda_error)
{
    if (cuda_error != nullptr)
    {
        *cuda_error = 0;
    }
    if (metric == nullptr || semantic == nullptr || out == nullptr || workspace == nullptr)
    {
        return STA_ERR_NULL_POINTER;
    }
    int const status = sta::validate(B, G, n, D, r);
    if (status != STA_OK)
    {
        return status;
    }
    if (B > 2147483647LL)
    {
        return STA_ERR_BAD_SHAPE; // one block per sample: gridDim.x limit
    }
    if (workspace_size < sta_stage_select_workspace_size(B, n))
    {
        return STA_ERR_WORKSPACE;
    }
    dim3 const grid(static_cast<unsigned>(B));
    dim3 const block(kThreadsPerBlock);
    size_t const smem = sharedBytes(static_cast<int>(n));
    cudaStream_t const s = static_cast<cudaStream_t>(stream);
    if (metric_is_half)
    {
        staStageSelectKernel<sta::Half><<<grid, block, smem, s>>>(static_cast<sta::Half const*>(metric), semantic,
            static_cast<int>(G), static_cast<int>(n), static_cast<int>(D), static_cast<int>(r), backward, out,
            static_cast<float*>(workspace));
    }
    else
    {
        staStageSelectKernel<float><<<grid, block, smem, s>>>(static_cast<float const*>(metric), semantic,
            static_cast<int>(G), static_cast<int>(n), static_cast<int>(D), static_cast<int>(r), backward, out,
            static_cast<float*>(workspace));
    }
    cudaError_t const err = cudaGetLastError();
    if (err != cudaSuccess)
    {
        if (cuda_error != nullptr)
        {
            *cuda_error = static_cast<int32_t>(err);
        }
        return STA_ERR_CUDA;
    }
    return STA_OK;
}
