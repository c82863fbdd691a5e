// classify's clip -> views (see views.h).
#include "views.h"

#include "video.h"

#include <cstring>

namespace sta_example
{

ClipViews loadViews(std::string const& path, Protocol const& protocol, bool keepPixels)
{
    int64_t const size = protocol.cropSize;
    std::pair<int64_t, int64_t> resized{0, 0};
    std::vector<std::pair<int64_t, int64_t>> boxes;
    Region region{};
    ResizePlan plan;
    // Resized (as the first frame sets the size, like load_views): only the region the crops cover.
    FrameTransform const transform = [&](RgbView const& rgb) {
        if (boxes.empty())
        {
            resized = resizedSize(protocol, rgb.height, rgb.width);
            boxes = cropBoxes(protocol, resized.first, resized.second);
            region = cropUnion(boxes, size);
        }
        if (plan.inHeight != rgb.height || plan.inWidth != rgb.width)
        {
            plan = resizePlan(rgb.height, rgb.width, resized.first, resized.second, region);
        }
        std::vector<uint8_t> out(static_cast<size_t>(region.height() * region.width() * 3));
        resizeBilinear(plan, rgb.data, rgb.stride, out.data());
        return out;
    };
    auto const planIndices = [&](int64_t total) { return temporalIndices(protocol, total); };
    ClipFrames const clip = readClip(path, planIndices, protocol.minFrames, transform);

    ClipViews views;
    views.totalFrames = clip.totalFrames;
    views.numViews = protocol.numViews();
    int64_t const frames = protocol.numFrames;
    int64_t const plane = size * size;
    int64_t const rowBytes = region.width() * 3;
    views.tensors.resize(static_cast<size_t>(views.numViews * 3 * frames * plane));
    if (keepPixels)
    {
        views.pixels.resize(static_cast<size_t>(views.numViews * frames * plane * 3));
    }
    Normaliser const normaliser(protocol);
    for (int64_t k = 0; k < protocol.temporalViews; ++k)
    {
        for (size_t j = 0; j < boxes.size(); ++j)
        {
            int64_t const view = k * protocol.spatialCrops + static_cast<int64_t>(j); // temporal-major
            int64_t const top = boxes[j].first - region.top;
            int64_t const left = boxes[j].second - region.left;
            for (int64_t t = 0; t < frames; ++t)
            {
                uint8_t const* frame = clip.frames.at(clip.indices[static_cast<size_t>(k * frames + t)]).data();
                float* channel[3];
                for (int c = 0; c < 3; ++c)
                {
                    channel[c] = views.tensors.data() + ((view * 3 + c) * frames + t) * plane;
                }
                for (int64_t y = 0; y < size; ++y)
                {
                    uint8_t const* row = frame + (top + y) * rowBytes + left * 3;
                    if (keepPixels)
                    {
                        std::memcpy(views.pixels.data() + ((view * frames + t) * plane + y * size) * 3, row, static_cast<size_t>(size * 3));
                    }
                    for (int64_t x = 0; x < size; ++x)
                    {
                        for (int c = 0; c < 3; ++c)
                        {
                            channel[c][y * size + x] = normaliser.table[c][row[x * 3 + c]];
                        }
                    }
                }
            }
        }
    }
    return views;
}

} // namespace sta_example
