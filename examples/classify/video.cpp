// FFmpeg decoding for classify (see video.h); mirrors sta_deploy/video/decode.py step by step.
#include "video.h"

extern "C"
{
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/avutil.h>
#include <libavutil/log.h>
#include <libavutil/pixdesc.h>
#include <libswscale/swscale.h>
}

#include <algorithm>
#include <filesystem>
#include <memory>
#include <set>

namespace sta_example
{
namespace
{

std::string avError(int code)
{
    char text[AV_ERROR_MAX_STRING_SIZE] = {0};
    av_strerror(code, text, sizeof(text));
    return text;
}

//! An opened container and its first video stream (PyAV's container.streams.video[0]).
class Demuxer
{
public:
    explicit Demuxer(std::string const& path)
    {
        int ret = avformat_open_input(&mFormat, path.c_str(), nullptr, nullptr);
        if (ret >= 0)
        {
            ret = avformat_find_stream_info(mFormat, nullptr);
        }
        if (ret < 0)
        {
            throw VideoError("not a readable video (" + avError(ret) + ")");
        }
        for (unsigned i = 0; i < mFormat->nb_streams; ++i)
        {
            if (mFormat->streams[i]->codecpar->codec_type == AVMEDIA_TYPE_VIDEO)
            {
                mStream = static_cast<int>(i);
                break;
            }
        }
        if (mStream < 0)
        {
            throw VideoError("the file has no video stream");
        }
    }
    ~Demuxer()
    {
        avformat_close_input(&mFormat);
    }
    Demuxer(Demuxer const&) = delete;
    Demuxer& operator=(Demuxer const&) = delete;

    AVFormatContext* format() const { return mFormat; }
    AVStream* stream() const { return mFormat->streams[mStream]; }
    int index() const { return mStream; }

private:
    AVFormatContext* mFormat{nullptr};
    int mStream{-1};
};

struct PacketDeleter
{
    void operator()(AVPacket* p) const { av_packet_free(&p); }
};
struct FrameDeleter
{
    void operator()(AVFrame* f) const { av_frame_free(&f); }
};
struct CodecDeleter
{
    void operator()(AVCodecContext* c) const { avcodec_free_context(&c); }
};
struct SwsDeleter
{
    void operator()(SwsContext* s) const { sws_freeContext(s); }
};

void quietLogs()
{
    // FFmpeg's own warnings ("moov atom not found", ...) would break the one-line errors; PyAV
    // silences them too.
    static bool const done = [] {
        av_log_set_level(AV_LOG_QUIET);
        return true;
    }();
    (void) done;
}

//! The container's frame count, or (webm/mkv often have none) the number of video packets.
int64_t estimateFrames(std::string const& path)
{
    Demuxer demuxer(path);
    if (demuxer.stream()->nb_frames > 0)
    {
        return demuxer.stream()->nb_frames;
    }
    std::unique_ptr<AVPacket, PacketDeleter> packet(av_packet_alloc());
    int64_t count = 0;
    while (true)
    {
        int const ret = av_read_frame(demuxer.format(), packet.get());
        if (ret == AVERROR_EOF)
        {
            break;
        }
        if (ret < 0)
        {
            throw VideoError("cannot demux (" + avError(ret) + ")");
        }
        if (packet->stream_index == demuxer.index() && packet->size > 0)
        {
            ++count;
        }
        av_packet_unref(packet.get());
    }
    return count;
}

//! RGB24 conversion as PyAV's VideoFrame.to_ndarray(format="rgb24"): SWS_BILINEAR, the frame's
//! colour space and range in, full-range RGB out.
class RgbConverter
{
public:
    RgbView convert(AVFrame const* frame)
    {
        mContext.reset(sws_getCachedContext(mContext.release(), frame->width, frame->height, static_cast<AVPixelFormat>(frame->format),
            frame->width, frame->height, AV_PIX_FMT_RGB24, SWS_BILINEAR, nullptr, nullptr, nullptr));
        if (!mContext)
        {
            char const* name = av_get_pix_fmt_name(static_cast<AVPixelFormat>(frame->format));
            throw VideoError(std::string("cannot convert frames of pixel format ") + (name != nullptr ? name : "?") + " to RGB");
        }
        int* inverse = nullptr;
        int* table = nullptr;
        int srcRange = 0, dstRange = 0, brightness = 0, contrast = 0, saturation = 0;
        sws_getColorspaceDetails(mContext.get(), &inverse, &srcRange, &table, &dstRange, &brightness, &contrast, &saturation);
        int colorspace = frame->colorspace;
        if (colorspace == AVCOL_SPC_UNSPECIFIED || colorspace == AVCOL_SPC_RGB)
        {
            colorspace = SWS_CS_DEFAULT;
        }
        int const* coefficients = sws_getCoefficients(colorspace);
        bool const fullRange = frame->color_range == AVCOL_RANGE_JPEG || srcRange != 0; // yuvj* formats are full range
        sws_setColorspaceDetails(mContext.get(), coefficients, fullRange ? 1 : 0, coefficients, 1, brightness, contrast, saturation);
        // swscale's SIMD converters write whole blocks of pixels, past the end of a row whose width is
        // not a multiple of the block: rows are padded to 64 bytes and the buffer has a padded tail.
        int64_t const stride = (static_cast<int64_t>(frame->width) * 3 + 63) / 64 * 64;
        mBuffer.resize(static_cast<size_t>(stride * frame->height + kTailPadding));
        uint8_t* planes[4] = {mBuffer.data(), nullptr, nullptr, nullptr};
        int strides[4] = {static_cast<int>(stride), 0, 0, 0};
        sws_scale(mContext.get(), frame->data, frame->linesize, 0, frame->height, planes, strides);
        return RgbView{mBuffer.data(), frame->height, frame->width, stride};
    }

private:
    static constexpr int64_t kTailPadding = 1024;
    std::unique_ptr<SwsContext, SwsDeleter> mContext;
    std::vector<uint8_t> mBuffer;
};

struct Decoded
{
    std::map<int64_t, std::vector<uint8_t>> frames;
    int64_t count{0};
    int64_t height{0}, width{0};
};

//! Decode up to the last needed index (everything when `needed` is null), as _decode() in decode.py:
//! a decoder or demuxer error before the first frame makes the clip unreadable, a later one ends it.
Decoded decode(std::string const& path, std::set<int64_t> const* needed, FrameTransform const* transform)
{
    Demuxer demuxer(path);
    AVCodecParameters const* parameters = demuxer.stream()->codecpar;
    AVCodec const* codec = avcodec_find_decoder(parameters->codec_id);
    if (codec == nullptr)
    {
        throw VideoError("cannot decode (" + avError(AVERROR_DECODER_NOT_FOUND) + ")"); // PyAV's words
    }
    std::unique_ptr<AVCodecContext, CodecDeleter> context(avcodec_alloc_context3(codec));
    avcodec_parameters_to_context(context.get(), parameters);
    context->thread_count = 0; // PyAV's defaults: as many threads as CPUs, slice threading
    context->thread_type = FF_THREAD_SLICE;
    int ret = avcodec_open2(context.get(), codec, nullptr);
    if (ret < 0)
    {
        throw VideoError("cannot decode (" + avError(ret) + ")");
    }

    Decoded out;
    int64_t const last = needed != nullptr && !needed->empty() ? *needed->rbegin() : -1;
    std::unique_ptr<AVPacket, PacketDeleter> packet(av_packet_alloc());
    std::unique_ptr<AVFrame, FrameDeleter> frame(av_frame_alloc());
    RgbConverter converter;

    // Returns false once the frames up to `last` are in.
    auto receive = [&]() -> bool {
        bool received = false;
        while (true)
        {
            int const got = avcodec_receive_frame(context.get(), frame.get());
            if (got == AVERROR(EAGAIN) || got == AVERROR_EOF)
            {
                return true;
            }
            if (got < 0)
            {
                if (got == AVERROR_INVALIDDATA && received)
                {
                    return true; // PyAV keeps the frames this packet gave before the error
                }
                throw VideoError("cannot decode (" + avError(got) + ")");
            }
            received = true;
            if (needed != nullptr && needed->count(out.count) != 0)
            {
                RgbView const rgb = converter.convert(frame.get());
                if (out.height == 0)
                {
                    out.height = rgb.height;
                    out.width = rgb.width;
                }
                out.frames[out.count] = (*transform)(rgb);
            }
            av_frame_unref(frame.get());
            ++out.count;
            if (last >= 0 && out.count > last)
            {
                return false;
            }
        }
    };

    try
    {
        while (true)
        {
            ret = av_read_frame(demuxer.format(), packet.get());
            if (ret == AVERROR_EOF)
            {
                break;
            }
            if (ret < 0)
            {
                throw VideoError("cannot decode (" + avError(ret) + ")");
            }
            if (packet->stream_index == demuxer.index())
            {
                ret = avcodec_send_packet(context.get(), packet.get());
                av_packet_unref(packet.get());
                if (ret < 0)
                {
                    throw VideoError("cannot decode (" + avError(ret) + ")");
                }
                if (!receive())
                {
                    return out;
                }
            }
            else
            {
                av_packet_unref(packet.get());
            }
        }
        ret = avcodec_send_packet(context.get(), nullptr); // flush the decoder's delayed frames
        if (ret < 0)
        {
            throw VideoError("cannot decode (" + avError(ret) + ")");
        }
        receive();
    }
    catch (VideoError const&)
    {
        if (out.count == 0)
        {
            throw;
        }
        // A damaged tail: the frames before it are usable, the clip ends there.
    }
    return out;
}

void checkLength(int64_t total, int64_t minFrames)
{
    if (total <= 0)
    {
        throw VideoError("the clip has no frames");
    }
    if (total < minFrames)
    {
        throw VideoError("too short: " + std::to_string(total) + " frame(s), the sampling protocol needs at least " + std::to_string(minFrames));
    }
}

} // namespace

ClipFrames readClip(std::string const& path, FramePlan const& plan, int64_t minFrames, FrameTransform const& transform)
{
    quietLogs();
    std::error_code error;
    if (!std::filesystem::exists(path, error))
    {
        throw VideoError("no such file or folder");
    }
    if (std::filesystem::is_directory(path, error))
    {
        throw VideoError("a folder: this app reads video files (and .npy views), not frame folders");
    }
    if (std::filesystem::file_size(path, error) == 0)
    {
        throw VideoError("the file is empty (0 bytes)");
    }
    int64_t total = estimateFrames(path);
    if (total < std::max<int64_t>(minFrames, 1))
    {
        total = decode(path, nullptr, nullptr).count; // metadata can under-count; a short clip is cheap to count
    }
    for (int attempt = 0; attempt < 2; ++attempt)
    {
        checkLength(total, minFrames);
        std::vector<int64_t> indices = plan(total);
        if (indices.empty() || *std::min_element(indices.begin(), indices.end()) < 0
            || *std::max_element(indices.begin(), indices.end()) >= total)
        {
            throw std::logic_error("frame plan returned indices outside 0.." + std::to_string(total - 1));
        }
        std::set<int64_t> const needed(indices.begin(), indices.end());
        Decoded decoded = decode(path, &needed, &transform);
        if (decoded.frames.size() == needed.size())
        {
            ClipFrames clip;
            clip.totalFrames = total;
            clip.indices = std::move(indices);
            clip.frames = std::move(decoded.frames);
            clip.sourceHeight = decoded.height;
            clip.sourceWidth = decoded.width;
            return clip;
        }
        total = decoded.count; // the container promised more frames than it holds: plan again
    }
    throw VideoError("the number of decodable frames changed between two reads");
}

std::string ffmpegVersions()
{
    auto version = [](char const* name, unsigned v) {
        return std::string(name) + " " + std::to_string(AV_VERSION_MAJOR(v)) + "." + std::to_string(AV_VERSION_MINOR(v)) + "."
            + std::to_string(AV_VERSION_MICRO(v));
    };
    return version("libavformat", avformat_version()) + ", " + version("libavcodec", avcodec_version()) + ", "
        + version("libswscale", swscale_version());
}

} // namespace sta_example
