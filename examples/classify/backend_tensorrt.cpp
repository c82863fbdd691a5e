// trt_classify: run an STA-pruned video transformer engine from C++ and print the top classes.
//
//   trt_classify MODEL.plan VIEWS.npy [--plugin-lib libsta_stage_select_trt.so]... [--labels FILE]
//                [--top K] [--average logits|prob]
//
// MODEL.plan comes from `sta-deploy build` (or trtexec); VIEWS.npy from
// `sta-deploy predict CLIP --onnx MODEL.onnx --save-views DIR`: the clip's views, (V, 3, T, H, W)
// float32, already sampled, resized, cropped and normalised.  Every view runs through the engine
// (in batches of the engine's batch size; a --dynamic-batch engine takes one view at a time) and the
// views are averaged the way the backbone was evaluated: VideoMAE averages logits then applies
// softmax (--average logits, the default), Video Swin averages softmax scores (--average prob).
// A plugin-mode export (--sta-impl plugin) needs the STAStageSelect plugin library.
#include <NvInferRuntime.h>

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "npy.h"
#include "scores.h"

namespace
{

class Logger : public nvinfer1::ILogger
{
public:
    void log(Severity severity, char const* message) noexcept override
    {
        if (severity <= Severity::kWARNING)
        {
            std::cerr << "[TensorRT] " << message << "\n";
        }
    }
};

void checkCuda(cudaError_t status, char const* what)
{
    if (status != cudaSuccess)
    {
        throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(status));
    }
}

struct DeviceBuffer
{
    void* data{nullptr};
    explicit DeviceBuffer(size_t bytes)
    {
        checkCuda(cudaMalloc(&data, bytes), "cudaMalloc");
    }
    ~DeviceBuffer()
    {
        cudaFree(data);
    }
    DeviceBuffer(DeviceBuffer const&) = delete;
    DeviceBuffer& operator=(DeviceBuffer const&) = delete;
};

size_t elementSize(nvinfer1::DataType type)
{
    switch (type)
    {
    case nvinfer1::DataType::kFLOAT: return 4;
    case nvinfer1::DataType::kHALF: return 2;
    case nvinfer1::DataType::kINT32: return 4;
    case nvinfer1::DataType::kINT64: return 8;
    default: throw std::runtime_error("unsupported tensor type in the engine");
    }
}

int64_t volume(nvinfer1::Dims const& dims)
{
    int64_t count = 1;
    for (int32_t i = 0; i < dims.nbDims; ++i)
    {
        count *= dims.d[i];
    }
    return count;
}

std::vector<char> readFile(std::string const& path)
{
    std::ifstream file(path, std::ios::binary);
    if (!file)
    {
        throw std::runtime_error("cannot open " + path);
    }
    return std::vector<char>(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
}

std::vector<std::string> readLabels(std::string const& path)
{
    std::ifstream file(path);
    if (!file)
    {
        throw std::runtime_error("cannot open the labels file " + path);
    }
    std::vector<std::string> labels;
    for (std::string line; std::getline(file, line);)
    {
        labels.push_back(line);
    }
    return labels;
}

struct Options
{
    std::string plan;
    std::string views;
    std::vector<std::string> pluginLibs;
    std::string labels;
    int top{5};
    bool averageScores{false};
};

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
                throw std::runtime_error(arg + " needs a value");
            }
            return argv[++i];
        };
        if (arg == "--plugin-lib")
        {
            options.pluginLibs.push_back(value());
        }
        else if (arg == "--labels")
        {
            options.labels = value();
        }
        else if (arg == "--top")
        {
            options.top = std::stoi(value());
        }
        else if (arg == "--average")
        {
            std::string const mode = value();
            if (mode != "logits" && mode != "prob")
            {
                throw std::runtime_error("--average is logits (VideoMAE) or prob (Video Swin), not " + mode);
            }
            options.averageScores = mode == "prob";
        }
        else if (!arg.empty() && arg[0] == '-')
        {
            throw std::runtime_error("unknown option " + arg);
        }
        else
        {
            positional.push_back(arg);
        }
    }
    if (positional.size() != 2)
    {
        throw std::runtime_error(
            "usage: trt_classify MODEL.plan VIEWS.npy [--plugin-lib LIB]... [--labels FILE] [--top K] "
            "[--average logits|prob]");
    }
    options.plan = positional[0];
    options.views = positional[1];
    return options;
}

int run(Options const& options)
{
    sta_example::NpyArray const views = sta_example::readNpyFloat32(options.views);
    if (views.shape.size() != 5)
    {
        throw std::runtime_error(options.views + ": expected (views, 3, T, H, W), as sta-deploy predict --save-views writes");
    }
    int64_t const numViews = views.shape[0];
    int64_t const viewSize = views.count() / numViews;

    Logger logger;
    std::unique_ptr<nvinfer1::IRuntime> runtime{nvinfer1::createInferRuntime(logger)};
    if (!runtime)
    {
        throw std::runtime_error("could not create the TensorRT runtime");
    }
    for (auto const& library : options.pluginLibs)
    {
        // The engine's STAStageSelect layers are deserialized through this registry.
        if (runtime->getPluginRegistry().loadLibrary(library.c_str()) == nullptr)
        {
            throw std::runtime_error("could not load the plugin library " + library);
        }
    }
    std::vector<char> const blob = readFile(options.plan);
    std::unique_ptr<nvinfer1::ICudaEngine> engine{runtime->deserializeCudaEngine(blob.data(), blob.size())};
    if (!engine)
    {
        throw std::runtime_error(options.plan + " does not deserialize: built by another TensorRT or for another GPU, "
                                                "or a plugin-mode engine without --plugin-lib");
    }
    std::unique_ptr<nvinfer1::IExecutionContext> context{engine->createExecutionContext()};

    std::string inputName;
    for (int32_t i = 0; i < engine->getNbIOTensors(); ++i)
    {
        char const* name = engine->getIOTensorName(i);
        if (engine->getTensorIOMode(name) == nvinfer1::TensorIOMode::kINPUT)
        {
            inputName = name;
        }
    }
    nvinfer1::Dims inputShape = engine->getTensorShape(inputName.c_str());
    if (engine->getTensorDataType(inputName.c_str()) != nvinfer1::DataType::kFLOAT)
    {
        throw std::runtime_error("the engine's input is not float32");
    }
    int64_t const batch = inputShape.d[0] == -1 ? 1 : inputShape.d[0];
    inputShape.d[0] = batch;
    if (volume(inputShape) / batch != viewSize)
    {
        throw std::runtime_error(options.views + " does not have the engine's input shape (3, T, H, W) per view");
    }
    if (!context->setInputShape(inputName.c_str(), inputShape))
    {
        throw std::runtime_error("the engine rejects batch " + std::to_string(batch));
    }

    // Buffers for every I/O tensor: kept_stage* outputs (when exported) must have an address too.
    std::vector<std::unique_ptr<DeviceBuffer>> buffers;
    void* inputBuffer = nullptr;
    void* logitsBuffer = nullptr;
    nvinfer1::Dims logitsShape{};
    nvinfer1::DataType logitsType{nvinfer1::DataType::kFLOAT};
    for (int32_t i = 0; i < engine->getNbIOTensors(); ++i)
    {
        char const* name = engine->getIOTensorName(i);
        nvinfer1::Dims const shape = context->getTensorShape(name);
        nvinfer1::DataType const type = engine->getTensorDataType(name);
        buffers.push_back(std::make_unique<DeviceBuffer>(static_cast<size_t>(volume(shape)) * elementSize(type)));
        context->setTensorAddress(name, buffers.back()->data);
        if (inputName == name)
        {
            inputBuffer = buffers.back()->data;
        }
        else if (std::strcmp(name, "logits") == 0)
        {
            logitsBuffer = buffers.back()->data;
            logitsShape = shape;
            logitsType = type;
        }
    }
    if (logitsBuffer == nullptr)
    {
        throw std::runtime_error("the engine has no 'logits' output: was it built from a sta-deploy export?");
    }
    int64_t const numClasses = logitsShape.d[logitsShape.nbDims - 1];

    cudaStream_t stream;
    checkCuda(cudaStreamCreate(&stream), "cudaStreamCreate");
    sta_example::ViewAverage average(numClasses, options.averageScores);
    std::vector<char> hostLogits(static_cast<size_t>(volume(logitsShape)) * elementSize(logitsType));
    std::vector<float> chunk(static_cast<size_t>(batch * viewSize));
    for (int64_t start = 0; start < numViews; start += batch)
    {
        int64_t const real = std::min(batch, numViews - start);
        for (int64_t b = 0; b < batch; ++b)
        {
            // A static batch larger than the views left is padded with the last view (ignored below).
            int64_t const view = start + std::min(b, real - 1);
            std::copy_n(views.data.begin() + view * viewSize, viewSize, chunk.begin() + b * viewSize);
        }
        checkCuda(cudaMemcpyAsync(inputBuffer, chunk.data(), chunk.size() * sizeof(float), cudaMemcpyHostToDevice, stream), "copy in");
        if (!context->enqueueV3(stream))
        {
            throw std::runtime_error("TensorRT execution failed");
        }
        checkCuda(cudaMemcpyAsync(hostLogits.data(), logitsBuffer, hostLogits.size(), cudaMemcpyDeviceToHost, stream), "copy out");
        checkCuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
        for (int64_t b = 0; b < real; ++b)
        {
            std::vector<double> logits(static_cast<size_t>(numClasses));
            for (int64_t c = 0; c < numClasses; ++c)
            {
                size_t const index = static_cast<size_t>(b * numClasses + c);
                logits[c] = logitsType == nvinfer1::DataType::kHALF
                    ? sta_example::halfToFloat(reinterpret_cast<uint16_t const*>(hostLogits.data())[index])
                    : reinterpret_cast<float const*>(hostLogits.data())[index];
            }
            average.add(logits);
        }
    }
    cudaStreamDestroy(stream);

    std::vector<double> const scores = average.scores();
    std::vector<std::string> const labels = options.labels.empty() ? std::vector<std::string>{} : readLabels(options.labels);
    std::printf("%s: %lld views\n", options.views.c_str(), static_cast<long long>(numViews));
    int rank = 0;
    for (int64_t c : sta_example::topClasses(scores, options.top))
    {
        std::string const label = c < static_cast<int64_t>(labels.size()) ? labels[c] : std::to_string(c);
        std::printf("  %d. %-40s %.4f\n", ++rank, label.c_str(), scores[c]);
    }
    return 0;
}

} // namespace

int main(int argc, char** argv)
{
    try
    {
        return run(parseArguments(argc, argv));
    }
    catch (std::exception const& error)
    {
        std::fprintf(stderr, "trt_classify: error: %s\n", error.what());
        return 1;
    }
}
