// Static registration: registers the creator with TensorRT's global plugin registry when the library is
// loaded (trtexec --staticPlugins, or dlopen()/linking it into an application that uses libnvinfer).
// The creator is registered under the plugin namespace "sta_deploy".  This variant deliberately does
// not export getCreators(): loading it through IPluginRegistry::loadLibrary() as well would register
// the creator twice.  Use libsta_stage_select_trt.so for --dynamicPlugins.
#include "STAStageSelectPlugin.h"

namespace
{

struct StaticRegistrar
{
    StaticRegistrar()
    {
        static sta_deploy::trt::STAStageSelectCreator creator;
        nvinfer1::IPluginRegistry* registry = getPluginRegistry();
        if (registry == nullptr || !registry->registerCreator(creator, sta_deploy::trt::kPluginNamespace))
        {
            sta_deploy::trt::logMessage(nvinfer1::ILogger::Severity::kERROR,
                "static registration failed (no plugin registry, or the creator is already registered)");
        }
    }
};

StaticRegistrar const gStaticRegistrar;

} // namespace
