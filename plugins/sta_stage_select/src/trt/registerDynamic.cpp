// Dynamic registration: the two entry points TensorRT looks up in a plugin library loaded with
// IPluginRegistry::loadLibrary() (trtexec --dynamicPlugins, --setPluginsToSerialize, version-compatible
// engines).  TensorRT registers every returned creator under its own namespace ("sta_deploy").
#include "STAStageSelectPlugin.h"
#include "sta_stage_select/sta_stage_select.h"

extern "C" STA_API void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
{
    sta_deploy::trt::setLoggerFinder(finder);
}

extern "C" STA_API nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    static sta_deploy::trt::STAStageSelectCreator creator;
    static nvinfer1::IPluginCreatorInterface* const creators[] = {&creator};
    nbCreators = 1;
    return creators;
}
