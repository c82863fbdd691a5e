// TensorRT wrapper of STAStageSelect: IPluginV3 (OneCore / OneBuild / OneRuntime) and its
// IPluginCreatorV3One.  Plugin name "STAStageSelect", version "1", namespace "sta_deploy".
//
// Inputs:  0 metric   (B, G, n, D) float32 or float16, L2-normalised per token
//          1 semantic (B, G, n)    float32, min-max normalised semantic score F
// Output:  0 kept     (B, G, n - r) int32, kept indices within each group in the reference order
// Fields:  num_groups (G), r, backward (0 forward, 1 backward); integer fields (INT32, INT64, INT16
//          or INT8 accepted).
#ifndef STA_STAGE_SELECT_PLUGIN_H
#define STA_STAGE_SELECT_PLUGIN_H

#include <NvInferRuntime.h>

#include <cstdint>
#include <string>
#include <vector>

namespace sta_deploy
{
namespace trt
{

constexpr char const* kPluginName = "STAStageSelect";
constexpr char const* kPluginVersion = "1";
constexpr char const* kPluginNamespace = "sta_deploy";

constexpr char const* kFieldNumGroups = "num_groups";
constexpr char const* kFieldR = "r";
constexpr char const* kFieldBackward = "backward";

//! Where the library's log messages go: the TensorRT logger handed over by setLoggerFinder(), else stderr.
void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept;
void logMessage(nvinfer1::ILogger::Severity severity, std::string const& message) noexcept;
void logError(std::string const& message) noexcept;

class STAStageSelectPlugin final : public nvinfer1::IPluginV3,
                                   public nvinfer1::IPluginV3OneCore,
                                   public nvinfer1::IPluginV3OneBuild,
                                   public nvinfer1::IPluginV3OneRuntime
{
public:
    STAStageSelectPlugin(int32_t numGroups, int32_t r, int32_t backward);
    STAStageSelectPlugin(STAStageSelectPlugin const& other);
    STAStageSelectPlugin& operator=(STAStageSelectPlugin const&) = delete;
    ~STAStageSelectPlugin() override = default;

    int32_t numGroups() const noexcept
    {
        return mNumGroups;
    }
    int32_t r() const noexcept
    {
        return mR;
    }
    int32_t backward() const noexcept
    {
        return mBackward;
    }

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
    nvinfer1::IPluginV3* clone() noexcept override;

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

    // IPluginV3OneBuild
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs, nvinfer1::DataType const* inputTypes,
        int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
        int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    int32_t getNbOutputs() const noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;
    char const* getTimingCacheID() noexcept override;
    char const* getMetadataString() noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, nvinfer1::PluginTensorDesc const* out,
        int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

private:
    //! Checks one concrete (or bound) shape pair; logs and returns false when it is not supported.
    bool checkShapes(nvinfer1::Dims const& metric, nvinfer1::Dims const& semantic, char const* where) const noexcept;

    int32_t mNumGroups;
    int32_t mR;
    int32_t mBackward;
    std::string mDescription; //!< "num_groups=8,r=48,backward=0": timing cache ID and metadata
    std::vector<nvinfer1::PluginField> mSerialFields;
    nvinfer1::PluginFieldCollection mSerialCollection{};
};

class STAStageSelectCreator final : public nvinfer1::IPluginCreatorV3One
{
public:
    STAStageSelectCreator();
    ~STAStageSelectCreator() override = default;

    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
    nvinfer1::IPluginV3* createPlugin(
        char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase phase) noexcept override;

private:
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mCollection{};
};

} // namespace trt
} // namespace sta_deploy

#endif // STA_STAGE_SELECT_PLUGIN_H
