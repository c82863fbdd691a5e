// classify's command line (see options.h).
#include "options.h"

#include "protocol.h"

#include <exception>
#include <string>

namespace sta_example
{

char const* const kUsage
    = "usage: classify MODEL CLIP... [--backend tensorrt|openvino] [--plugin-lib PATH]... [--labels FILE] [--top K]\n"
      "                [--views TxS] [--dataset k400|ssv2] [--json] [--protocol FILE] [--threads N] [--save-views DIR]\n"
      "                [--average logits|prob]\n"
      "\n"
      "  MODEL              an exported .onnx (--backend openvino, the default for .onnx) or a TensorRT .plan\n"
      "                     (--backend tensorrt, the default for .plan/.engine)\n"
      "  CLIP               a video file (mp4, webm, mkv, avi, ...) or a .npy of views (views, 3, T, H, W)\n"
      "  --plugin-lib PATH  TensorRT plugin library to load first (repeatable; --sta-impl plugin exports)\n"
      "  --labels FILE      class names, one per line [default: the protocol file's, else class indices]\n"
      "  --top K            classes to show per clip (default 5)\n"
      "  --views TxS        temporal windows x spatial crops [default: the protocol's]\n"
      "  --dataset NAME     evaluation protocol, k400 (default) or ssv2\n"
      "  --json             print one JSON object, as 'sta-deploy predict --json' does\n"
      "  --protocol FILE    the protocol file [default: MODEL.protocol.json beside MODEL]\n"
      "  --threads N        CPU threads for OpenVINO [default: its own choice]\n"
      "  --save-views DIR   also write each clip's model input (CLIP.views.npy) and pixels (CLIP.pixels.npy)\n"
      "  --average RULE     view averaging for .npy views without a protocol file: logits (default) or prob\n";


namespace
{

int64_t parseInt(std::string const& option, std::string const& text, int64_t low, int64_t high)
{
    size_t used = 0;
    int64_t value = 0;
    try
    {
        value = std::stoll(text, &used);
    }
    catch (std::exception const&)
    {
        used = 0;
    }
    if (used == 0 || used != text.size() || value < low || value > high)
    {
        throw UsageError(option + " takes an integer in " + std::to_string(low) + ".." + std::to_string(high) + ", not '" + text + "'");
    }
    return value;
}

} // namespace

Options parseArguments(int argc, char** argv)
{
    Options options;
    std::vector<std::string> positional;
    for (int i = 1; i < argc; ++i)
    {
        std::string const arg = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc)
            {
                throw UsageError(arg + " needs a value");
            }
            return argv[++i];
        };
        if (arg == "--backend")
        {
            options.backend = value();
            if (options.backend != "openvino" && options.backend != "tensorrt")
            {
                throw UsageError("--backend is openvino or tensorrt, not '" + options.backend + "'");
            }
        }
        else if (arg == "--plugin-lib")
        {
            options.pluginLibs.push_back(value());
        }
        else if (arg == "--labels")
        {
            options.labels = value();
        }
        else if (arg == "--top")
        {
            options.top = parseInt(arg, value(), 1, 100);
        }
        else if (arg == "--views")
        {
            options.views = value();
            try
            {
                parseViews(options.views);
            }
            catch (std::invalid_argument const& error)
            {
                throw UsageError(error.what());
            }
        }
        else if (arg == "--dataset")
        {
            options.dataset = value();
            if (options.dataset != "k400" && options.dataset != "ssv2")
            {
                throw UsageError("--dataset is k400 or ssv2, not '" + options.dataset + "'");
            }
        }
        else if (arg == "--json")
        {
            options.json = true;
        }
        else if (arg == "--protocol")
        {
            options.protocol = value();
        }
        else if (arg == "--threads")
        {
            options.threads = static_cast<int>(parseInt(arg, value(), 1, 1024));
        }
        else if (arg == "--save-views")
        {
            options.saveViews = value();
        }
        else if (arg == "--average")
        {
            options.average = value();
            if (options.average != "logits" && options.average != "prob")
            {
                throw UsageError("--average is logits (VideoMAE) or prob (Video Swin), not '" + options.average + "'");
            }
        }
        else if (arg.size() > 1 && arg[0] == '-')
        {
            throw UsageError("unknown option " + arg);
        }
        else
        {
            positional.push_back(arg);
        }
    }
    if (positional.size() < 2)
    {
        throw UsageError("expected MODEL and at least one CLIP");
    }
    options.model = positional[0];
    options.clips.assign(positional.begin() + 1, positional.end());
    return options;
}

} // namespace sta_example
