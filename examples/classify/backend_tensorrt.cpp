// classify's GPU backend: a TensorRT engine (.plan from `sta-deploy build` or trtexec), deserialized
// after the plugin libraries (--plugin-lib, for --sta-impl plugin exports) are loaded into the
// runtime's registry.  A static batch of B runs B views at a time; a --dynamic-batch engine runs one
// view at a time.  fp16 exports' float16 logits are converted on the host.
#include "backend.h"
#include "scores.h"

#include <NvInferRuntime.h>

#include <cuda_runtime_api.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <stdexcept>

namespace sta_example
{
namespace
{

//! Keeps TensorRT's last error for the one-line message classify prints (nothing else is printed).
class Logger : public nvinfer1::ILogger
{
public:
    void log(Severity severity, char const* message) noexcept override
    {
        if (severity <= Severity::kERROR)
        {
            mLastError = message;
        }
    }

    std::string said() const
    {
        return mLastError.empty() ? "" : " (TensorRT: " + mLastError.substr(0, 300) + ")";
    }

private:
    std::string mLastError;
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

class TensorRtBackend : public Backend
{
public:
    TensorRtBackend(std::string const& plan, std::vector<std::string> const& pluginLibs)
    {
        mRuntime.reset(nvinfer1::createInferRuntime(mLogger));
        if (!mRuntime)
        {
            throw std::runtime_error("could not create the TensorRT runtime (is a GPU visible?)");
        }
        for (auto const& library : pluginLibs)
        {
            // The engine's STAStageSelect layers are deserialized through this registry.
            if (mRuntime->getPluginRegistry().loadLibrary(library.c_str()) == nullptr)
            {
                throw std::runtime_error("could not load the plugin library " + library + mLogger.said());
            }
        }
        std::vector<char> const blob = readFile(plan);
        mEngine.reset(mRuntime->deserializeCudaEngine(blob.data(), blob.size()));
        if (!mEngine)
        {
            throw std::runtime_error(plan + " does not deserialize: built by another TensorRT or for another GPU, or a plugin-mode engine without --plugin-lib"
                + mLogger.said());
        }
        mContext.reset(mEngine->createExecutionContext());
        setUpInput(plan);
        setUpBuffers();
        checkCuda(cudaStreamCreate(&mStream), "cudaStreamCreate");
    }

    ~TensorRtBackend() override
    {
        if (mStream != nullptr)
        {
            cudaStreamDestroy(mStream);
        }
    }

    std::string kind() const override { return "tensorrt"; }
    std::vector<int64_t> viewShape() const override { return mViewShape; }
    int64_t batch() const override { return mBatch; }
    int64_t numClasses() const override { return mClasses; }

    std::vector<double> run(float const* views) override
    {
        size_t const bytes = static_cast<size_t>(mBatch * viewSize(*this)) * sizeof(float);
        checkCuda(cudaMemcpyAsync(mInputBuffer, views, bytes, cudaMemcpyHostToDevice, mStream), "copy in");
        if (!mContext->enqueueV3(mStream))
        {
            throw std::runtime_error("TensorRT execution failed");
        }
        checkCuda(cudaMemcpyAsync(mHostLogits.data(), mLogitsBuffer, mHostLogits.size(), cudaMemcpyDeviceToHost, mStream), "copy out");
        checkCuda(cudaStreamSynchronize(mStream), "cudaStreamSynchronize");
        std::vector<double> logits(static_cast<size_t>(mBatch * mClasses));
        for (size_t i = 0; i < logits.size(); ++i)
        {
            logits[i] = mLogitsType == nvinfer1::DataType::kHALF ? halfToFloat(reinterpret_cast<uint16_t const*>(mHostLogits.data())[i])
                                                                  : reinterpret_cast<float const*>(mHostLogits.data())[i];
        }
        return logits;
    }

private:
    void setUpInput(std::string const& plan)
    {
        for (int32_t i = 0; i < mEngine->getNbIOTensors(); ++i)
        {
            char const* name = mEngine->getIOTensorName(i);
            if (mEngine->getTensorIOMode(name) == nvinfer1::TensorIOMode::kINPUT)
            {
                mInputName = name;
            }
        }
        nvinfer1::Dims shape = mEngine->getTensorShape(mInputName.c_str());
        if (shape.nbDims != 5)
        {
            throw std::runtime_error(plan + ": the engine's input is not (batch, 3, T, H, W)");
        }
        if (mEngine->getTensorDataType(mInputName.c_str()) != nvinfer1::DataType::kFLOAT)
        {
            throw std::runtime_error(plan + ": the engine's input is not float32");
        }
        mBatch = shape.d[0] == -1 ? 1 : shape.d[0];
        shape.d[0] = mBatch;
        mViewShape.assign(shape.d + 1, shape.d + 5);
        if (!mContext->setInputShape(mInputName.c_str(), shape))
        {
            throw std::runtime_error(plan + ": the engine rejects batch " + std::to_string(mBatch));
        }
    }

    void setUpBuffers()
    {
        // Buffers for every I/O tensor: kept_stage* outputs (when exported) must have an address too.
        nvinfer1::Dims logitsShape{};
        for (int32_t i = 0; i < mEngine->getNbIOTensors(); ++i)
        {
            char const* name = mEngine->getIOTensorName(i);
            nvinfer1::Dims const shape = mContext->getTensorShape(name);
            nvinfer1::DataType const type = mEngine->getTensorDataType(name);
            mBuffers.push_back(std::make_unique<DeviceBuffer>(static_cast<size_t>(volume(shape)) * elementSize(type)));
            mContext->setTensorAddress(name, mBuffers.back()->data);
            if (mInputName == name)
            {
                mInputBuffer = mBuffers.back()->data;
            }
            else if (std::strcmp(name, "logits") == 0)
            {
                mLogitsBuffer = mBuffers.back()->data;
                logitsShape = shape;
                mLogitsType = type;
            }
        }
        if (mLogitsBuffer == nullptr)
        {
            throw std::runtime_error("the engine has no 'logits' output: was it built from a sta-deploy export?");
        }
        mClasses = logitsShape.d[logitsShape.nbDims - 1];
        mHostLogits.resize(static_cast<size_t>(volume(logitsShape)) * elementSize(mLogitsType));
    }

    Logger mLogger;
    std::unique_ptr<nvinfer1::IRuntime> mRuntime;
    std::unique_ptr<nvinfer1::ICudaEngine> mEngine;
    std::unique_ptr<nvinfer1::IExecutionContext> mContext;
    std::vector<std::unique_ptr<DeviceBuffer>> mBuffers;
    std::string mInputName;
    void* mInputBuffer{nullptr};
    void* mLogitsBuffer{nullptr};
    nvinfer1::DataType mLogitsType{nvinfer1::DataType::kFLOAT};
    std::vector<char> mHostLogits;
    std::vector<int64_t> mViewShape;
    int64_t mBatch{1};
    int64_t mClasses{0};
    cudaStream_t mStream{nullptr};
};

} // namespace

std::unique_ptr<Backend> makeTensorRtBackend(std::string const& plan, std::vector<std::string> const& pluginLibs)
{
    return std::make_unique<TensorRtBackend>(plan, pluginLibs);
}

} // namespace sta_example
