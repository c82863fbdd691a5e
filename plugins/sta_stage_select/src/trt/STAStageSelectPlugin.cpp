#include "STAStageSelectPlugin.h"

#include "sta_stage_select/sta_stage_select.h"

#include <cstring>
#include <exception>
#include <limits>
#include <sstream>

using namespace nvinfer1;

namespace sta_deploy
{
namespace trt
{

namespace
{

bool isKnown(int64_t extent) noexcept
{
    return extent >= 0;
}

} // namespace

// ---- Plugin ------------------------------------------------------------------------------------------

STAStageSelectPlugin::STAStageSelectPlugin(int32_t numGroups, int32_t r, int32_t backward)
    : mNumGroups(numGroups)
    , mR(r)
    , mBackward(backward)
{
    std::ostringstream description;
    description << kFieldNumGroups << "=" << mNumGroups << "," << kFieldR << "=" << mR << "," << kFieldBackward << "="
                << mBackward;
    mDescription = description.str();
}

STAStageSelectPlugin::STAStageSelectPlugin(STAStageSelectPlugin const& other)
    : STAStageSelectPlugin(other.mNumGroups, other.mR, other.mBackward)
{
}

IPluginCapability* STAStageSelectPlugin::getCapabilityInterface(PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
    case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
    case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

IPluginV3* STAStageSelectPlugin::clone() noexcept
{
    try
    {
        return new STAStageSelectPlugin(*this);
    }
    catch (std::exception const& e)
    {
        logError(std::string("clone failed: ") + e.what());
    }
    return nullptr;
}

char const* STAStageSelectPlugin::getPluginName() const noexcept
{
    return kPluginName;
}

char const* STAStageSelectPlugin::getPluginVersion() const noexcept
{
    return kPluginVersion;
}

char const* STAStageSelectPlugin::getPluginNamespace() const noexcept
{
    return kPluginNamespace;
}

bool STAStageSelectPlugin::checkShapes(Dims const& metric, Dims const& semantic, char const* where) const noexcept
{
    try
    {
        std::ostringstream error;
        if (metric.nbDims != 4 || semantic.nbDims != 3)
        {
            error << "expects metric (B, G, n, D) and semantic (B, G, n); got " << metric.nbDims << " and "
                  << semantic.nbDims << " dimensions";
        }
        else if (isKnown(metric.d[1]) && metric.d[1] != mNumGroups)
        {
            error << "metric has " << metric.d[1] << " groups but num_groups=" << mNumGroups;
        }
        else
        {
            for (int32_t i = 0; i < 3; ++i)
            {
                if (isKnown(metric.d[i]) && isKnown(semantic.d[i]) && metric.d[i] != semantic.d[i])
                {
                    error << "semantic dimension " << i << " (" << semantic.d[i] << ") differs from metric's ("
                          << metric.d[i] << ")";
                    break;
                }
            }
        }
        if (error.str().empty())
        {
            int64_t const B = isKnown(metric.d[0]) ? metric.d[0] : 1;
            int64_t const n = isKnown(metric.d[2]) ? metric.d[2] : STA_STAGE_SELECT_MAX_TOKENS;
            int64_t const D = isKnown(metric.d[3]) ? metric.d[3] : 1;
            int64_t const r = isKnown(metric.d[2]) ? mR : 0;
            int const status = sta_stage_select_validate(B, mNumGroups, n, D, r);
            if (status != STA_OK)
            {
                error << sta_stage_select_error_string(status) << " (B=" << metric.d[0] << ", G=" << metric.d[1]
                      << ", n=" << metric.d[2] << ", D=" << metric.d[3] << ", r=" << mR << ")";
            }
        }
        if (!error.str().empty())
        {
            logError(std::string(where) + ": " + error.str());
            return false;
        }
        return true;
    }
    catch (...)
    {
        return false;
    }
}

int32_t STAStageSelectPlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    if (in == nullptr || out == nullptr || nbInputs != 2 || nbOutputs != 1)
    {
        logError("configurePlugin: expects 2 inputs (metric, semantic) and 1 output");
        return -1;
    }
    if (!checkShapes(in[0].desc.dims, in[1].desc.dims, "configurePlugin")
        || !checkShapes(in[0].min, in[1].min, "configurePlugin (profile min)")
        || !checkShapes(in[0].max, in[1].max, "configurePlugin (profile max)"))
    {
        return -1;
    }
    DataType const metricType = in[0].desc.type;
    if ((metricType != DataType::kFLOAT && metricType != DataType::kHALF) || in[1].desc.type != DataType::kFLOAT
        || out[0].desc.type != DataType::kINT32)
    {
        logError("configurePlugin: supports metric float32/float16, semantic float32, output int32");
        return -1;
    }
    return 0;
}

int32_t STAStageSelectPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (outputTypes == nullptr || inputTypes == nullptr || nbOutputs != 1 || nbInputs != 2)
    {
        logError("getOutputDataTypes: expects 2 inputs (metric, semantic) and 1 output");
        return -1;
    }
    if ((inputTypes[0] != DataType::kFLOAT && inputTypes[0] != DataType::kHALF) || inputTypes[1] != DataType::kFLOAT)
    {
        logError("getOutputDataTypes: metric must be float32 or float16 and semantic float32");
        return -1;
    }
    outputTypes[0] = DataType::kINT32;
    return 0;
}

int32_t STAStageSelectPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs,
    DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs,
    IExprBuilder& exprBuilder) noexcept
{
    if (inputs == nullptr || outputs == nullptr || nbInputs != 2 || nbOutputs != 1)
    {
        logError("getOutputShapes: expects 2 inputs (metric, semantic) and 1 output");
        return -1;
    }
    DimsExprs const& metric = inputs[0];
    if (metric.nbDims != 4 || inputs[1].nbDims != 3)
    {
        logError("getOutputShapes: expects metric (B, G, n, D) and semantic (B, G, n)");
        return -1;
    }
    // Check what is known at network definition time; configurePlugin checks the rest.
    Dims known{};
    known.nbDims = 4;
    for (int32_t i = 0; i < 4; ++i)
    {
        known.d[i] = metric.d[i]->isConstant() ? metric.d[i]->getConstantValue() : -1;
    }
    Dims semantic{};
    semantic.nbDims = 3;
    for (int32_t i = 0; i < 3; ++i)
    {
        semantic.d[i] = inputs[1].d[i]->isConstant() ? inputs[1].d[i]->getConstantValue() : -1;
    }
    if (!checkShapes(known, semantic, "getOutputShapes"))
    {
        return -1;
    }
    outputs[0].nbDims = 3;
    outputs[0].d[0] = metric.d[0];
    outputs[0].d[1] = metric.d[1];
    outputs[0].d[2] = exprBuilder.operation(DimensionOperation::kSUB, *metric.d[2], *exprBuilder.constant(mR));
    return outputs[0].d[2] != nullptr ? 0 : -1;
}

bool STAStageSelectPlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (inOut == nullptr || nbInputs != 2 || nbOutputs != 1 || pos < 0 || pos >= 3)
    {
        return false;
    }
    PluginTensorDesc const& desc = inOut[pos].desc;
    if (desc.format != TensorFormat::kLINEAR)
    {
        return false;
    }
    switch (pos)
    {
    case 0: return desc.type == DataType::kFLOAT || desc.type == DataType::kHALF;
    case 1: return desc.type == DataType::kFLOAT;
    default: return desc.type == DataType::kINT32;
    }
}

int32_t STAStageSelectPlugin::getNbOutputs() const noexcept
{
    return 1;
}

size_t STAStageSelectPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
    DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept
{
    if (inputs == nullptr || nbInputs < 1 || inputs[0].max.nbDims != 4)
    {
        return 0;
    }
    // Scratch for the n x n similarity matrix of every sample, at the profile's largest shape.
    return sta_stage_select_workspace_size(inputs[0].max.d[0], inputs[0].max.d[2]);
}

char const* STAStageSelectPlugin::getTimingCacheID() noexcept
{
    return mDescription.c_str();
}

char const* STAStageSelectPlugin::getMetadataString() noexcept
{
    return mDescription.c_str();
}

int32_t STAStageSelectPlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    if (in == nullptr || nbInputs != 2 || nbOutputs != 1)
    {
        logError("onShapeChange: expects 2 inputs (metric, semantic) and 1 output");
        return -1;
    }
    return checkShapes(in[0].dims, in[1].dims, "onShapeChange") ? 0 : -1;
}

int32_t STAStageSelectPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    if (inputDesc == nullptr || inputs == nullptr || outputs == nullptr)
    {
        return -1;
    }
    Dims const& dims = inputDesc[0].dims;
    if (dims.nbDims != 4 || dims.d[1] != mNumGroups)
    {
        logError("enqueue: metric shape does not match the plugin's num_groups");
        return -1;
    }
    int32_t cudaError = 0;
    int const status = sta_stage_select_cuda_launch(inputs[0], inputDesc[0].type == DataType::kHALF ? 1 : 0,
        static_cast<float const*>(inputs[1]), dims.d[0], dims.d[1], dims.d[2], dims.d[3], mR, mBackward,
        static_cast<int32_t*>(outputs[0]), workspace, sta_stage_select_workspace_size(dims.d[0], dims.d[2]),
        static_cast<void*>(stream), &cudaError);
    if (status != STA_OK)
    {
        std::ostringstream error;
        error << "enqueue: " << sta_stage_select_error_string(status);
        if (status == STA_ERR_CUDA)
        {
            error << " (cudaError_t " << cudaError << ")";
        }
        logError(error.str());
        return status;
    }
    return 0;
}

IPluginV3* STAStageSelectPlugin::attachToContext(IPluginResourceContext* /*context*/) noexcept
{
    return clone();
}

PluginFieldCollection const* STAStageSelectPlugin::getFieldsToSerialize() noexcept
{
    try
    {
        mSerialFields.clear();
        mSerialFields.emplace_back(kFieldNumGroups, &mNumGroups, PluginFieldType::kINT32, 1);
        mSerialFields.emplace_back(kFieldR, &mR, PluginFieldType::kINT32, 1);
        mSerialFields.emplace_back(kFieldBackward, &mBackward, PluginFieldType::kINT32, 1);
        mSerialCollection.nbFields = static_cast<int32_t>(mSerialFields.size());
        mSerialCollection.fields = mSerialFields.data();
        return &mSerialCollection;
    }
    catch (...)
    {
        return nullptr;
    }
}

} // namespace trt
} // namespace sta_deploy
