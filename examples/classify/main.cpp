// classify: an STA-pruned video transformer from C++, video file in, top-k classes out.
//
//   classify MODEL CLIP... [--backend tensorrt|openvino] [--plugin-lib PATH]... [--labels FILE] [--top K]
//            [--views TxS] [--dataset k400|ssv2] [--json] [--protocol FILE] [--threads N] [--save-views DIR]
//
// MODEL is an exported .onnx (OpenVINO, CPU) or a TensorRT .plan; MODEL.protocol.json beside it
// (`sta-deploy protocol MODEL.onnx` writes it) says how the model samples clips.  Each CLIP is a video
// file (decoded with FFmpeg and sampled exactly as `sta-deploy predict` does) or a .npy of views
// (`sta-deploy predict --save-views`).  --json prints what `sta-deploy predict --json` prints.
// Errors are one line on stderr: exit code 2 for usage errors, 1 for failures (a clip that cannot be
// used is reported and the others are still classified).
#include "backend.h"
#include "npy.h"
#include "options.h"
#include "protocol.h"
#include "scores.h"
#ifdef STA_WITH_FFMPEG
#include "video.h"
#include "views.h"
#endif

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace
{

using namespace sta_example;

std::string oneLine(std::string text)
{
    for (char& c : text)
    {
        if (c == '\n' || c == '\r' || c == '\t')
        {
            c = ' ';
        }
    }
    return text;
}

bool hasSuffix(std::string const& path, std::string const& suffix)
{
    std::string const extension = std::filesystem::path(path).extension().string();
    std::string lower;
    for (char c : extension)
    {
        lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    return lower == suffix;
}

std::string shapeText(std::vector<int64_t> const& shape)
{
    std::string text = "(";
    for (size_t i = 0; i < shape.size(); ++i)
    {
        text += (i ? ", " : "") + std::to_string(shape[i]);
    }
    return text + ")";
}

std::unique_ptr<Backend> openBackend(Options const& options)
{
    bool const isPlan = hasSuffix(options.model, ".plan") || hasSuffix(options.model, ".engine") || hasSuffix(options.model, ".trt");
    std::string const kind = options.backend.empty() ? (isPlan ? "tensorrt" : "openvino") : options.backend;
    if (kind == "tensorrt")
    {
#ifdef STA_WITH_TENSORRT
        return makeTensorRtBackend(options.model, options.pluginLibs);
#else
        throw std::runtime_error("this classify was built without the TensorRT backend (CMake found no TensorRT): run an .onnx with --backend openvino");
#endif
    }
    if (!options.pluginLibs.empty())
    {
        throw UsageError("--plugin-lib loads TensorRT plugins; the openvino backend runs --sta-impl onnx exports without them");
    }
#ifdef STA_WITH_OPENVINO
    return makeOpenVinoBackend(options.model, options.threads);
#else
    throw std::runtime_error("this classify was built without the OpenVINO backend (CMake found no OpenVINO): run a .plan with --backend tensorrt");
#endif
}

struct Result
{
    std::string path;
    std::vector<int64_t> classes;
    std::vector<double> scores;
    int64_t views{0};
    int64_t frames{-1}; // -1: .npy views
    double seconds{0.0};
    double decodeSeconds{0.0};
};

double since(std::chrono::steady_clock::time_point start)
{
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

//! Writes --save-views files, numbering repeated clip names as predict's views_saver() does.
class ViewsSaver
{
public:
    explicit ViewsSaver(std::string folder)
        : mFolder(std::move(folder))
    {
    }

    void save(std::string const& clip, int64_t views, Protocol const& p, std::vector<float> const& tensors, std::vector<uint8_t> const& pixels)
    {
        std::filesystem::create_directories(mFolder);
        std::string const name = std::filesystem::path(clip).filename().string();
        std::string stem = name;
        for (int number = 2; mTaken.count(stem) != 0; ++number)
        {
            stem = name + "." + std::to_string(number);
        }
        mTaken.insert(stem);
        std::string const base = (std::filesystem::path(mFolder) / stem).string();
        int64_t const t = p.numFrames, s = p.cropSize;
        writeNpy(base + ".views.npy", {views, 3, t, s, s}, tensors.data(), tensors.size() * sizeof(float), "<f4");
        writeNpy(base + ".pixels.npy", {views, t, s, s, 3}, pixels.data(), pixels.size(), "|u1");
    }

private:
    std::string mFolder;
    std::set<std::string> mTaken;
};

struct Run
{
    Options const& options;
    Backend& backend;
    bool haveProtocol;
    Protocol protocol;
    bool averageScores;
    ViewsSaver saver;
};

//! One clip through the model; throws for a clip that cannot be used (the caller reports it).
Result classify(Run& run, std::string const& path)
{
    Result result;
    result.path = path;
    auto const start = std::chrono::steady_clock::now();
    std::vector<float> input;
    std::vector<int64_t> const view = run.backend.viewShape();
    if (hasSuffix(path, ".npy"))
    {
        NpyArray array = readNpyFloat32(path);
        if (array.shape.size() != 5 || std::vector<int64_t>(array.shape.begin() + 1, array.shape.end()) != view)
        {
            throw std::runtime_error("holds " + shapeText(array.shape) + " but the model takes views of " + shapeText(view) + " (as (views, 3, T, H, W))");
        }
        result.views = array.shape[0];
        input = std::move(array.data);
    }
    else
    {
#ifdef STA_WITH_FFMPEG
        if (!run.haveProtocol)
        {
            throw std::logic_error("no protocol");
        }
        ClipViews views = loadViews(path, run.protocol, !run.options.saveViews.empty());
        result.views = views.numViews;
        result.frames = views.totalFrames;
        if (!run.options.saveViews.empty())
        {
            run.saver.save(path, views.numViews, run.protocol, views.tensors, views.pixels);
        }
        input = std::move(views.tensors);
#else
        throw std::runtime_error("this classify was built without FFmpeg (pkg-config found no libavformat): pass .npy views");
#endif
    }
    result.decodeSeconds = since(start);
    if (result.views < 1)
    {
        throw std::runtime_error("has no views");
    }
    auto const modelStart = std::chrono::steady_clock::now();
    std::vector<double> const logits = runViews(run.backend, input.data(), result.views);
    result.seconds = since(modelStart);
    int64_t const classes = run.backend.numClasses();
    ViewAverage average(classes, run.averageScores);
    for (int64_t v = 0; v < result.views; ++v)
    {
        average.add(std::vector<double>(logits.begin() + v * classes, logits.begin() + (v + 1) * classes));
    }
    std::vector<double> const scores = average.scores();
    result.classes = topClasses(scores, run.options.top);
    for (int64_t c : result.classes)
    {
        result.scores.push_back(scores[static_cast<size_t>(c)]);
    }
    return result;
}

std::string resultJson(Result const& r, std::vector<std::string> const& labels)
{
    std::string top;
    for (size_t i = 0; i < r.classes.size(); ++i)
    {
        double const score = std::round(r.scores[i] * 1e6) / 1e6; // as predict: round(score, 6)
        top += std::string(i ? ", " : "") + "{\"class\": " + std::to_string(r.classes[i]) + ", \"label\": " + jsonQuote(labels[static_cast<size_t>(r.classes[i])])
            + ", \"score\": " + jsonNumber(score) + "}";
    }
    return "{\"path\": " + jsonQuote(r.path) + ", \"top\": [" + top + "], \"views\": " + std::to_string(r.views)
        + ", \"frames\": " + (r.frames < 0 ? std::string("null") : std::to_string(r.frames)) + ", \"seconds\": " + jsonNumber(std::round(r.seconds * 1e4) / 1e4)
        + ", \"decode_seconds\": " + jsonNumber(std::round(r.decodeSeconds * 1e4) / 1e4) + "}";
}

std::string protocolPathFor(std::string const& model)
{
    std::filesystem::path const path(model);
    return (path.parent_path() / (path.stem().string() + ".protocol.json")).string();
}

int run(Options const& options)
{
    for (auto const& library : options.pluginLibs)
    {
        if (!std::filesystem::is_regular_file(library))
        {
            throw std::runtime_error("plugin library " + library + " does not exist (build plugins/sta_stage_select, or drop --plugin-lib)");
        }
    }
    if (!std::filesystem::is_regular_file(options.model))
    {
        throw std::runtime_error("model " + options.model + " does not exist");
    }
    std::string const protocolPath = options.protocol.empty() ? protocolPathFor(options.model) : options.protocol;
    bool const haveProtocol = std::filesystem::is_regular_file(protocolPath);
    bool const needProtocol = std::any_of(options.clips.begin(), options.clips.end(), [](std::string const& c) { return !hasSuffix(c, ".npy"); });
    if (!haveProtocol && (needProtocol || !options.protocol.empty()))
    {
        throw std::runtime_error("no protocol file " + protocolPath + ": write it with 'sta-deploy protocol MODEL.onnx' (it says how the model samples clips)");
    }
    ProtocolFile file;
    Protocol protocol;
    if (haveProtocol)
    {
        file = readProtocolFile(protocolPath);
        protocol = selectProtocol(file, options.dataset, options.views);
    }
    std::unique_ptr<Backend> backend = openBackend(options);
    std::vector<int64_t> const view = backend->viewShape();
    if (haveProtocol)
    {
        std::vector<int64_t> const described(file.inputShape.begin() + (file.inputShape.empty() ? 0 : 1), file.inputShape.end());
        std::vector<int64_t> const sampled{3, protocol.numFrames, protocol.cropSize, protocol.cropSize};
        if (view != described || view != sampled)
        {
            throw std::runtime_error(options.model + " takes views of " + shapeText(view) + " but " + protocolPath + " describes " + shapeText(described)
                + " and samples " + shapeText(sampled) + ": the protocol file belongs to another export (write it again with 'sta-deploy protocol MODEL.onnx')");
        }
        if (backend->numClasses() != file.numClasses)
        {
            throw std::runtime_error(options.model + " has " + std::to_string(backend->numClasses()) + " classes but " + protocolPath + " describes "
                + std::to_string(file.numClasses) + ": the protocol file belongs to another export");
        }
    }
    int64_t const classes = backend->numClasses();
    std::vector<std::string> labels;
    std::string labelSource = "class indices";
    if (!options.labels.empty())
    {
        labels = readLabelsFile(options.labels);
        if (static_cast<int64_t>(labels.size()) != classes)
        {
            throw std::runtime_error("labels file " + options.labels + " has " + std::to_string(labels.size()) + " names but the model has " + std::to_string(classes) + " classes");
        }
        labelSource = options.labels;
    }
    else if (haveProtocol && static_cast<int64_t>(file.labels.size()) == classes)
    {
        labels = file.labels;
        labelSource = file.labelsSource;
    }
    else
    {
        for (int64_t c = 0; c < classes; ++c)
        {
            labels.push_back("class_" + std::to_string(c));
        }
    }
    std::string const averageRule = !options.average.empty() ? options.average : (haveProtocol ? protocol.average : "logits");
    Run state{options, *backend, haveProtocol, protocol, averageRule == "prob", ViewsSaver(options.saveViews)};

    if (!options.json)
    {
        std::string const describe = (haveProtocol ? file.model + " r1=" + std::to_string(file.r1) + " " : std::string()) + "(" + backend->kind() + ": " + options.model + ")";
        std::printf("%s; %s; labels: %s\n", describe.c_str(), haveProtocol ? protocol.describe().c_str() : ".npy views", labelSource.c_str());
    }
    std::vector<Result> results;
    std::vector<std::pair<std::string, std::string>> failures;
    for (auto const& clip : options.clips)
    {
        Result result;
        try
        {
            result = classify(state, clip);
        }
        catch (std::exception const& error)
        {
            failures.emplace_back(clip, oneLine(error.what()));
            std::fprintf(stderr, "classify: error: %s: %s\n", clip.c_str(), failures.back().second.c_str());
            continue;
        }
        if (!options.json)
        {
            std::string const frames = result.frames < 0 ? std::string("") : ", " + std::to_string(result.frames) + " frames";
            std::printf("%s  (%lld views%s, %.2fs)\n", clip.c_str(), static_cast<long long>(result.views), frames.c_str(), result.seconds);
            for (size_t i = 0; i < result.classes.size(); ++i)
            {
                std::printf("  %zu. %-40s %.4f\n", i + 1, labels[static_cast<size_t>(result.classes[i])].c_str(), result.scores[i]);
            }
        }
        results.push_back(std::move(result));
    }
    if (options.json)
    {
        std::string out = "{\"model\": " + (haveProtocol ? jsonQuote(file.model) : "null") + ", \"r1\": " + (haveProtocol ? std::to_string(file.r1) : "null")
            + ", \"backend\": " + jsonQuote(backend->kind()) + ", \"source\": " + jsonQuote(options.model)
            + ", \"protocol\": " + (haveProtocol ? protocolJson(protocol) : "null") + ", \"labels\": " + jsonQuote(labelSource) + ", \"results\": [";
        for (size_t i = 0; i < results.size(); ++i)
        {
            out += (i ? ", " : "") + resultJson(results[i], labels);
        }
        out += "], \"failed\": [";
        for (size_t i = 0; i < failures.size(); ++i)
        {
            out += std::string(i ? ", " : "") + "{\"path\": " + jsonQuote(failures[i].first) + ", \"error\": " + jsonQuote(failures[i].second) + "}";
        }
        std::printf("%s]}\n", out.c_str());
    }
    std::fflush(stdout);
    return failures.empty() ? 0 : 1;
}

std::string builtWith()
{
    std::string backends;
#ifdef STA_WITH_OPENVINO
    backends += "openvino";
#endif
#ifdef STA_WITH_TENSORRT
    backends += std::string(backends.empty() ? "" : ", ") + "tensorrt";
#endif
#ifdef STA_WITH_FFMPEG
    std::string const video = ffmpegVersions();
#else
    std::string const video = "none (.npy views only)";
#endif
    return "classify (sta-deploy examples/classify); backends: " + (backends.empty() ? std::string("none") : backends) + "; video: " + video;
}

} // namespace

int main(int argc, char** argv)
{
    for (int i = 1; i < argc; ++i)
    {
        std::string const arg = argv[i];
        if (arg == "-h" || arg == "--help")
        {
            std::printf("%s", kUsage);
            return 0;
        }
        if (arg == "--version")
        {
            std::printf("%s\n", builtWith().c_str());
            return 0;
        }
    }
    try
    {
        return run(parseArguments(argc, argv));
    }
    catch (UsageError const& error)
    {
        std::fprintf(stderr, "classify: error: %s (see 'classify --help')\n", oneLine(error.what()).c_str());
        return 2;
    }
    catch (std::exception const& error)
    {
        std::fprintf(stderr, "classify: error: %s\n", oneLine(error.what()).c_str());
        return 1;
    }
}
