// Decoding a clip with FFmpeg (libavformat, libavcodec, libswscale) the way sta_deploy/video/decode.py
// does with PyAV: frames are addressed by their index in decoding order, the frame count comes from
// the container (or, when it has none, the number of video packets), and only the frames the
// sampling plan asks for are converted to RGB (swscale, bilinear flags, the frame's colour space and
// range: what PyAV's to_ndarray(format="rgb24") does) and handed to a transform (the resize).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace sta_example
{

//! A clip that cannot be used; what() is the reason, without the file name.
class VideoError : public std::runtime_error
{
public:
    using std::runtime_error::runtime_error;
};

//! An RGB frame, (height, width, 3) uint8, rows `stride` bytes apart.
struct RgbView
{
    uint8_t const* data;
    int64_t height;
    int64_t width;
    int64_t stride;
};

//! Keeps what it needs of one decoded RGB frame (e.g. its resized crops region).
using FrameTransform = std::function<std::vector<uint8_t>(RgbView const&)>;
//! total frames -> the frame indices to decode (any order, repeats allowed).
using FramePlan = std::function<std::vector<int64_t>(int64_t)>;

struct ClipFrames
{
    int64_t totalFrames{0};
    std::vector<int64_t> indices;                  // the plan's answer
    std::map<int64_t, std::vector<uint8_t>> frames; // every planned index -> transform(frame)
    int64_t sourceHeight{0};
    int64_t sourceWidth{0};
};

//! Decode what `plan(total)` asks for; refuses clips of fewer than `minFrames` frames.  Throws
//! VideoError (unreadable, empty, too short) with the reason; the caller names the file.
ClipFrames readClip(std::string const& path, FramePlan const& plan, int64_t minFrames, FrameTransform const& transform);

//! "libavformat 59.27.100, libavcodec ..." (for --version and the build summary).
std::string ffmpegVersions();

} // namespace sta_example
