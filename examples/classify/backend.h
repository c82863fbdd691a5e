// The one interface classify runs models through, and the batching every backend shares (as
// sta_deploy/runtime/batching.py: a static batch of B takes B views per run, the last run padded with
// the last view and the padding's results dropped).
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace sta_example
{

class Backend
{
public:
    virtual ~Backend() = default;
    //! "openvino" | "tensorrt" (the "backend" of --json).
    virtual std::string kind() const = 0;
    //! One view's input shape: (3, T, H, W).
    virtual std::vector<int64_t> viewShape() const = 0;
    //! Views per run (a model with a dynamic batch runs one view at a time).
    virtual int64_t batch() const = 0;
    virtual int64_t numClasses() const = 0;
    //! batch() views in (batch() * view size floats), batch() * numClasses() logits out.
    virtual std::vector<double> run(float const* views) = 0;
};

//! OpenVINO's C++ runtime on the CPU, reading an exported .onnx directly (backend_openvino.cpp).
std::unique_ptr<Backend> makeOpenVinoBackend(std::string const& model, int threads);
//! A TensorRT engine (.plan) with the plugin libraries loaded first (backend_tensorrt.cpp).
std::unique_ptr<Backend> makeTensorRtBackend(std::string const& plan, std::vector<std::string> const& pluginLibs);

inline int64_t viewSize(Backend const& backend)
{
    int64_t size = 1;
    for (int64_t extent : backend.viewShape())
    {
        size *= extent;
    }
    return size;
}

//! Logits of `numViews` views laid out one after the other: (numViews, numClasses), row-major.
inline std::vector<double> runViews(Backend& backend, float const* views, int64_t numViews)
{
    int64_t const batch = backend.batch();
    int64_t const size = viewSize(backend);
    int64_t const classes = backend.numClasses();
    std::vector<double> logits;
    logits.reserve(static_cast<size_t>(numViews * classes));
    std::vector<float> padded;
    for (int64_t start = 0; start < numViews; start += batch)
    {
        int64_t const real = std::min(batch, numViews - start);
        float const* chunk = views + start * size;
        if (real < batch)
        {
            padded.assign(chunk, chunk + real * size);
            for (int64_t b = real; b < batch; ++b)
            {
                padded.insert(padded.end(), chunk + (real - 1) * size, chunk + real * size);
            }
            chunk = padded.data();
        }
        std::vector<double> const out = backend.run(chunk);
        logits.insert(logits.end(), out.begin(), out.begin() + real * classes);
    }
    return logits;
}

} // namespace sta_example
