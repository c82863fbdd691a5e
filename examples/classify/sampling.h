// Test-time sampling as each backbone was evaluated, exactly as sta_deploy/video/sampling.py does it:
// frame indices per temporal window, the short-side resize (bilinear, no antialias), the crops and
// the normalisation.  Header only, no FFmpeg: tests/postprocess_check drives it against Python.
//
// Bit-exactness: the resize reproduces PyTorch's CPU kernel for float channels-last images (what
// F.interpolate(..., mode="bilinear", align_corners=False) runs on a uint8 HWC frame converted to
// float with one thread): source index fmaf(scale, o + 0.5, -0.5), weights h*w, and the sum
// fma(i11, w11, fma(i10, w10, fma(i00, w00, i01 * w01))), then rounded half to even.  With more
// threads PyTorch runs another kernel whose float rounding differs in a few pixels per million.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace sta_example
{

//! One dataset protocol: the fields of sta_deploy.video.sampling.SamplingProtocol.
struct Protocol
{
    std::string name;
    std::string temporal{"dense"}; // "dense" | "segment" | "mmaction"
    int64_t numFrames{16};
    int64_t stride{4};
    int64_t temporalViews{1};
    int64_t spatialCrops{1};
    int64_t cropSize{224};
    std::string cropStyle{"videomae"};    // "videomae" | "mmaction"
    std::string resizeRounding{"floor"}; // "floor" | "round"
    double mean[3]{0.485, 0.456, 0.406};
    double std[3]{0.229, 0.224, 0.225};
    std::string average{"logits"}; // "logits" | "prob"
    int64_t minFrames{1};

    int64_t numViews() const
    {
        return temporalViews * spatialCrops;
    }

    std::string views() const
    {
        return std::to_string(temporalViews) + "x" + std::to_string(spatialCrops);
    }

    //! As SamplingProtocol.describe().
    std::string describe() const
    {
        std::string const how = temporal == "segment" ? "segments of " + std::to_string(numFrames)
                                                      : std::to_string(numFrames) + " frames, stride " + std::to_string(stride);
        return name + ": " + how + ", " + views() + " views, " + std::to_string(cropSize) + "px crops";
    }
};

// ----------------------------------------------------------------------------- temporal
//! (temporalViews x numFrames) frame indices, row-major, for a clip of `total` frames.
inline std::vector<int64_t> temporalIndices(Protocol const& p, int64_t total)
{
    std::vector<int64_t> rows;
    if (total < 1)
    {
        throw std::invalid_argument("a clip needs at least one frame");
    }
    if (p.temporal == "dense")
    {
        std::vector<int64_t> sampled;
        for (int64_t i = 0; i < total; i += p.stride)
        {
            sampled.push_back(i);
        }
        while (static_cast<int64_t>(sampled.size()) < p.numFrames)
        {
            sampled.push_back(sampled.back());
        }
        int64_t const spare = static_cast<int64_t>(sampled.size()) - p.numFrames;
        double const step = p.temporalViews == 1 ? 0.0 : std::max(static_cast<double>(spare) / static_cast<double>(p.temporalViews - 1), 0.0);
        for (int64_t k = 0; k < p.temporalViews; ++k)
        {
            int64_t const start = p.temporalViews == 1 ? spare / 2 : static_cast<int64_t>(static_cast<double>(k) * step);
            rows.insert(rows.end(), sampled.begin() + start, sampled.begin() + start + p.numFrames);
        }
    }
    else if (p.temporal == "segment")
    {
        double const tick = static_cast<double>(total) / static_cast<double>(p.numFrames);
        for (int64_t k = 0; k < p.temporalViews; ++k)
        {
            double const offset = p.temporalViews == 1 ? 0.5 : static_cast<double>(k) / static_cast<double>(p.temporalViews);
            for (int64_t x = 0; x < p.numFrames; ++x)
            {
                rows.push_back(std::min(static_cast<int64_t>(tick * (static_cast<double>(x) + offset)), total - 1));
            }
        }
    }
    else if (p.temporal == "mmaction")
    {
        int64_t const span = p.numFrames * p.stride;
        double const average = static_cast<double>(total - span + 1) / static_cast<double>(p.temporalViews);
        for (int64_t k = 0; k < p.temporalViews; ++k)
        {
            int64_t const offset = total > span - 1 ? static_cast<int64_t>(static_cast<double>(k) * average + average / 2.0) : 0;
            for (int64_t t = 0; t < p.numFrames; ++t)
            {
                rows.push_back(((offset + t * p.stride) % total + total) % total);
            }
        }
    }
    else
    {
        throw std::invalid_argument("unknown temporal sampling '" + p.temporal + "'");
    }
    return rows;
}

// ----------------------------------------------------------------------------- spatial
//! (height, width) with the short side at the crop size, as short_side_size().
inline std::pair<int64_t, int64_t> resizedSize(Protocol const& p, int64_t height, int64_t width)
{
    auto scale = [&](double v) { return p.resizeRounding == "floor" ? static_cast<int64_t>(v) : static_cast<int64_t>(v + 0.5); };
    int64_t const s = p.cropSize;
    if (width < height)
    {
        return {scale(static_cast<double>(s * height) / static_cast<double>(width)), s};
    }
    return {s, scale(static_cast<double>(s * width) / static_cast<double>(height))};
}

inline std::vector<int64_t> cropOffsets(int64_t length, int64_t size, int64_t count, std::string const& style)
{
    if (size > length)
    {
        throw std::invalid_argument("crop of " + std::to_string(size) + " px does not fit in " + std::to_string(length) + " px");
    }
    if (count == 1)
    {
        return {(length - size) / 2};
    }
    if (style == "mmaction" && count == 3)
    {
        int64_t const step = (length - size) / 2;
        return {0, step, 2 * step};
    }
    double const step = static_cast<double>(length - size) / static_cast<double>(count - 1);
    std::vector<int64_t> offsets;
    for (int64_t j = 0; j < count; ++j)
    {
        offsets.push_back(static_cast<int64_t>(static_cast<double>(j) * step));
    }
    return offsets;
}

//! (top, left) of every crop in a frame already resized to (height, width), as crop_boxes().
inline std::vector<std::pair<int64_t, int64_t>> cropBoxes(Protocol const& p, int64_t height, int64_t width)
{
    std::vector<std::pair<int64_t, int64_t>> boxes;
    int64_t const size = p.cropSize;
    if (height >= width)
    {
        for (int64_t offset : cropOffsets(height, size, p.spatialCrops, p.cropStyle))
        {
            boxes.emplace_back(offset, (width - size) / 2);
        }
    }
    else
    {
        for (int64_t offset : cropOffsets(width, size, p.spatialCrops, p.cropStyle))
        {
            boxes.emplace_back((height - size) / 2, offset);
        }
    }
    return boxes;
}

//! Rows [top, bottom) and columns [left, right) of the resized frame that some crop covers.
struct Region
{
    int64_t top, bottom, left, right;
    int64_t height() const { return bottom - top; }
    int64_t width() const { return right - left; }
};

inline Region cropUnion(std::vector<std::pair<int64_t, int64_t>> const& boxes, int64_t size)
{
    Region r{boxes[0].first, boxes[0].first + size, boxes[0].second, boxes[0].second + size};
    for (auto const& box : boxes)
    {
        r.top = std::min(r.top, box.first);
        r.bottom = std::max(r.bottom, box.first + size);
        r.left = std::min(r.left, box.second);
        r.right = std::max(r.right, box.second + size);
    }
    return r;
}

// ----------------------------------------------------------------------------- resize
//! Source indices and weights of one axis, as PyTorch's compute_source_index_and_lambda (float).
struct LinearAxis
{
    std::vector<int64_t> i0, i1;
    std::vector<float> l0, l1;
};

inline LinearAxis linearAxis(int64_t inSize, int64_t outSize)
{
    LinearAxis axis;
    float const scale = static_cast<float>(inSize) / static_cast<float>(outSize);
    for (int64_t o = 0; o < outSize; ++o)
    {
        if (inSize == outSize)
        {
            axis.i0.push_back(o);
            axis.i1.push_back(o);
            axis.l0.push_back(1.0F);
            axis.l1.push_back(0.0F);
            continue;
        }
        float real = std::fmaf(scale, static_cast<float>(o) + 0.5F, -0.5F);
        real = real < 0.0F ? 0.0F : real;
        int64_t const index = std::min(static_cast<int64_t>(std::floor(real)), inSize - 1);
        float const lambda = std::min(std::max(real - static_cast<float>(index), 0.0F), 1.0F);
        axis.i0.push_back(index);
        axis.i1.push_back(index + (index < inSize - 1 ? 1 : 0));
        axis.l1.push_back(lambda);
        axis.l0.push_back(1.0F - lambda);
    }
    return axis;
}

//! The resize of one frame: the output rows and columns of `region` only (every output pixel depends
//! on its own coordinates alone, so a part of the output equals the same part of the whole).
struct ResizePlan
{
    int64_t inHeight{0}, inWidth{0};
    Region region{};
    LinearAxis rows, columns;
};

inline ResizePlan resizePlan(int64_t inHeight, int64_t inWidth, int64_t outHeight, int64_t outWidth, Region region)
{
    return ResizePlan{inHeight, inWidth, region, linearAxis(inHeight, outHeight), linearAxis(inWidth, outWidth)};
}

namespace detail
{
template <typename Fma>
inline void resizeRows(ResizePlan const& plan, uint8_t const* src, int64_t srcStride, uint8_t* dst, Fma fma)
{
    Region const& r = plan.region;
    for (int64_t y = r.top; y < r.bottom; ++y)
    {
        float const h0 = plan.rows.l0[y], h1 = plan.rows.l1[y];
        uint8_t const* row0 = src + plan.rows.i0[y] * srcStride;
        uint8_t const* row1 = src + plan.rows.i1[y] * srcStride;
        uint8_t* out = dst + (y - r.top) * r.width() * 3;
        for (int64_t x = r.left; x < r.right; ++x)
        {
            float const w0 = plan.columns.l0[x], w1 = plan.columns.l1[x];
            float const w00 = h0 * w0, w01 = h0 * w1, w10 = h1 * w0, w11 = h1 * w1;
            int64_t const c0 = plan.columns.i0[x] * 3, c1 = plan.columns.i1[x] * 3;
            for (int c = 0; c < 3; ++c)
            {
                float const i00 = row0[c0 + c], i01 = row0[c1 + c], i10 = row1[c0 + c], i11 = row1[c1 + c];
                float const value = fma(i11, w11, fma(i10, w10, fma(i00, w00, i01 * w01)));
                float const rounded = std::nearbyint(value); // half to even, as torch.round
                *out++ = static_cast<uint8_t>(std::min(std::max(rounded, 0.0F), 255.0F));
            }
        }
    }
}

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
__attribute__((target("fma"))) inline void resizeRowsFma(ResizePlan const& plan, uint8_t const* src, int64_t srcStride, uint8_t* dst)
{
    resizeRows(plan, src, srcStride, dst, [](float a, float b, float c) { return __builtin_fmaf(a, b, c); });
}

inline bool hasFma()
{
    static bool const has = __builtin_cpu_supports("fma");
    return has;
}
#endif
} // namespace detail

//! Bilinear resize (HWC uint8, `srcStride` bytes per row) into `dst`: region.height() rows of
//! region.width() RGB pixels.  Fused multiply-adds are exact on every CPU; where the CPU has FMA
//! instructions they run as such, elsewhere std::fmaf computes the same values (slowly).
inline void resizeBilinear(ResizePlan const& plan, uint8_t const* src, int64_t srcStride, uint8_t* dst)
{
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    if (detail::hasFma())
    {
        detail::resizeRowsFma(plan, src, srcStride, dst);
        return;
    }
#endif
    detail::resizeRows(plan, src, srcStride, dst, [](float a, float b, float c) { return std::fmaf(a, b, c); });
}

// ----------------------------------------------------------------------------- normalisation
//! uint8 -> float32 per channel as normalise(): (x / 255 - mean) / std in float32 arithmetic.
struct Normaliser
{
    float table[3][256];

    explicit Normaliser(Protocol const& p)
    {
        for (int c = 0; c < 3; ++c)
        {
            float const mean = static_cast<float>(p.mean[c]);
            float const std = static_cast<float>(p.std[c]);
            for (int v = 0; v < 256; ++v)
            {
                table[c][v] = (static_cast<float>(v) / 255.0F - mean) / std;
            }
        }
    }
};

} // namespace sta_example
