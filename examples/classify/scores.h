// Turning per-view logits into a clip's top classes, as `sta-deploy predict` does
// (sta_deploy/video/predict.py): VideoMAE averages logits then applies softmax, Video Swin averages
// softmax scores; ties list the lower class first.  Header only, no TensorRT: tested on the CPU.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <vector>

namespace sta_example
{

//! IEEE half -> float on the host (fp16 exports may return fp16 logits).
inline float halfToFloat(uint16_t h)
{
    uint32_t const sign = static_cast<uint32_t>(h & 0x8000U) << 16;
    uint32_t exponent = (h >> 10) & 0x1FU;
    uint32_t mantissa = h & 0x3FFU;
    uint32_t bits;
    if (exponent == 0x1FU)
    {
        bits = sign | 0x7F800000U | (mantissa << 13); // inf / nan
    }
    else if (exponent != 0)
    {
        bits = sign | ((exponent + 112U) << 23) | (mantissa << 13);
    }
    else if (mantissa == 0)
    {
        bits = sign;
    }
    else
    {
        // Subnormal half: shift the mantissa up until its leading bit is the implicit one.
        exponent = 113U;
        while ((mantissa & 0x400U) == 0)
        {
            mantissa <<= 1;
            --exponent;
        }
        bits = sign | (exponent << 23) | ((mantissa & 0x3FFU) << 13);
    }
    float value;
    std::memcpy(&value, &bits, sizeof(value));
    return value;
}

inline std::vector<double> softmax(std::vector<double> const& logits)
{
    double const top = *std::max_element(logits.begin(), logits.end());
    std::vector<double> scores(logits.size());
    double total = 0.0;
    for (size_t i = 0; i < logits.size(); ++i)
    {
        scores[i] = std::exp(logits[i] - top);
        total += scores[i];
    }
    for (double& score : scores)
    {
        score /= total;
    }
    return scores;
}

//! Accumulates one view's logits at a time; scores() is the clip's class probabilities.
class ViewAverage
{
public:
    ViewAverage(int64_t numClasses, bool averageScores)
        : mSum(static_cast<size_t>(numClasses), 0.0)
        , mAverageScores(averageScores)
    {
    }

    void add(std::vector<double> const& logits)
    {
        std::vector<double> const contribution = mAverageScores ? softmax(logits) : logits;
        for (size_t c = 0; c < mSum.size(); ++c)
        {
            mSum[c] += contribution[c];
        }
        ++mViews;
    }

    std::vector<double> scores() const
    {
        std::vector<double> mean(mSum.size());
        for (size_t c = 0; c < mSum.size(); ++c)
        {
            mean[c] = mSum[c] / static_cast<double>(mViews);
        }
        return mAverageScores ? mean : softmax(mean);
    }

private:
    std::vector<double> mSum;
    bool mAverageScores;
    int64_t mViews{0};
};

//! The k best classes, best first; equal scores keep the lower class first.
inline std::vector<int64_t> topClasses(std::vector<double> const& scores, int64_t k)
{
    std::vector<int64_t> order(scores.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return scores[a] > scores[b]; });
    order.resize(static_cast<size_t>(std::min<int64_t>(k, static_cast<int64_t>(order.size()))));
    return order;
}

} // namespace sta_example
