// One clip -> the model's input views, as sta_deploy/video/clips.py load_views() + tensors(): decode the
// planned frames (video.h), resize the short side, cut the crops, normalise (sampling.h).
#pragma once

#include "sampling.h"

#include <cstdint>
#include <string>
#include <vector>

namespace sta_example
{

struct ClipViews
{
    int64_t totalFrames{0};
    int64_t numViews{0};
    std::vector<uint8_t> pixels; // (views, T, S, S, 3): what the model sees, before normalisation (if asked for)
    std::vector<float> tensors;  // (views, 3, T, S, S) float32, normalised: the model input
};

//! Throws VideoError (the reason; the caller names the file) for clips that cannot be used.
ClipViews loadViews(std::string const& path, Protocol const& protocol, bool keepPixels);

} // namespace sta_example
