// CPU reference build of the STAStageSelect algorithm (core.h run by a serial "block" of one thread).
// Compiled with -ffp-contract=off so that its float32 results are bit-identical to the CUDA kernel.
#include "sta_stage_select/core.h"

#include <condition_variable>
#include <mutex>
#include <new>
#include <system_error>
#include <thread>
#include <vector>

namespace
{

//! One sample's scratch memory on the host, laid out as the kernel lays out its shared memory.
template <class T>
struct HostScratch
{
    std::vector<T> values;
    std::vector<int32_t> order;
    sta::SampleScratch<T> w;

    explicit HostScratch(int64_t n)
        : values(static_cast<size_t>(n * n + sta::tokenScratchValues(n)))
        , order(static_cast<size_t>(n))
    {
        w.sim = values.data();
        w.acc = w.sim + n * n;
        w.score = w.acc + n;
        w.prevAcc = w.score + n;
        w.colSum = w.prevAcc + n;
        w.total = w.colSum + n;
        w.order = order.data();
    }
    HostScratch(HostScratch const&) = delete; // w points into the vectors
    HostScratch& operator=(HostScratch const&) = delete;
};

template <class T, class M, class S>
int runReference(M const* metric, S const* semantic, int64_t B, int64_t G, int64_t n, int64_t D, int64_t r,
    int32_t backward, int32_t* out, double* margin)
{
    if (metric == nullptr || semantic == nullptr || out == nullptr)
    {
        return STA_ERR_NULL_POINTER;
    }
    int const status = sta::validate(B, G, n, D, r);
    if (status != STA_OK)
    {
        return status;
    }
    if (margin != nullptr)
    {
        *margin = 1.0;
    }
    try
    {
        HostScratch<T> scratch(n);
        sta::SampleScratch<T>& w = scratch.w;
        int64_t const keep = n - r;
        for (int64_t b = 0; b < B; ++b)
        {
            sta::selectSample(sta::SerialExec{}, metric + b * G * n * D, semantic + b * G * n, static_cast<int>(G),
                static_cast<int>(n), static_cast<int>(D), static_cast<int>(r), backward != 0, out + b * G * keep, w,
                margin);
        }
    }
    catch (std::bad_alloc const&)
    {
        return STA_ERR_OUT_OF_MEMORY;
    }
    return STA_OK;
}

//! Reusable barrier for the threaded emulation of a CUDA block.
class Barrier
{
public:
    explicit Barrier(int count)
        : mCount(count)
    {
    }
    void wait()
    {
        std::unique_lock<std::mutex> lock(mMutex);
        int const generation = mGeneration;
        if (++mArrived == mCount)
        {
            mArrived = 0;
            ++mGeneration;
            mCondition.notify_all();
            return;
        }
        mCondition.wait(lock, [&] { return generation != mGeneration; });
    }

private:
    std::mutex mMutex;
    std::condition_variable mCondition;
    int const mCount;
    int mArrived = 0;
    int mGeneration = 0;
};

//! Thread `tid` of a block of `threads` host threads: the CUDA kernel's Exec, on the CPU.
struct ThreadExec
{
    int tid;
    int threads;
    Barrier* barrier;
    int begin() const
    {
        return tid;
    }
    int stride() const
    {
        return threads;
    }
    bool leader() const
    {
        return tid == 0;
    }
    void sync() const
    {
        barrier->wait();
    }
};

} // namespace

extern "C" {

// Emulates the kernel's thread block with `threads` host threads and a barrier (see the header).
STA_API int sta_stage_select_ref_f32_threads(const float* metric, const float* semantic, int64_t B, int64_t G,
    int64_t n, int64_t D, int64_t r, int32_t backward, int32_t* out, int32_t threads)
{
    if (metric == nullptr || semantic == nullptr || out == nullptr)
    {
        return STA_ERR_NULL_POINTER;
    }
    int const status = sta::validate(B, G, n, D, r);
    if (status != STA_OK)
    {
        return status;
    }
    if (threads < 1 || threads > 1024)
    {
        return STA_ERR_BAD_SHAPE;
    }
    try
    {
        HostScratch<float> scratch(n);
        sta::SampleScratch<float>& w = scratch.w;
        int64_t const keep = n - r;
        for (int64_t b = 0; b < B; ++b)
        {
            Barrier barrier(threads);
            std::vector<std::thread> block;
            block.reserve(static_cast<size_t>(threads));
            for (int t = 0; t < threads; ++t)
            {
                block.emplace_back([&, t] {
                    sta::selectSample(ThreadExec{t, threads, &barrier}, metric + b * G * n * D, semantic + b * G * n,
                        static_cast<int>(G), static_cast<int>(n), static_cast<int>(D), static_cast<int>(r),
                        backward != 0, out + b * G * keep, w, static_cast<double*>(nullptr));
                });
            }
            for (auto& thread : block)
            {
                thread.join();
            }
        }
    }
    catch (std::bad_alloc const&)
    {
        return STA_ERR_OUT_OF_MEMORY;
    }
    catch (std::system_error const&)
    {
        return STA_ERR_OUT_OF_MEMORY;
    }
    return STA_OK;
}


STA_API int sta_stage_select_ref_f32(const float* metric, const float* semantic, int64_t B, int64_t G, int64_t n,
    int64_t D, int64_t r, int32_t backward, int32_t* out)
{
    return runReference<float>(metric, semantic, B, G, n, D, r, backward, out, nullptr);
}

STA_API int sta_stage_select_ref_f16(const uint16_t* metric, const float* semantic, int64_t B, int64_t G, int64_t n,
    int64_t D, int64_t r, int32_t backward, int32_t* out)
{
    return runReference<float>(reinterpret_cast<sta::Half const*>(metric), semantic, B, G, n, D, r, backward, out,
        nullptr);
}

STA_API int sta_stage_select_ref_f64(const double* metric, const double* semantic, int64_t B, int64_t G, int64_t n,
    int64_t D, int64_t r, int32_t backward, int32_t* out, double* margin)
{
    return runReference<double>(metric, semantic, B, G, n, D, r, backward, out, margin);
}

} // extern "C"
