// The plugin's creator (fields in, plugin out) and the library's logging, shared by both registrations.
#include "STAStageSelectPlugin.h"

#include "sta_stage_select/sta_stage_select.h"

#include <atomic>
#include <cstdio>
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

std::atomic<ILoggerFinder*> gLoggerFinder{nullptr};

char const* severityName(ILogger::Severity severity)
{
    switch (severity)
    {
    case ILogger::Severity::kINTERNAL_ERROR: return "INTERNAL_ERROR";
    case ILogger::Severity::kERROR: return "ERROR";
    case ILogger::Severity::kWARNING: return "WARNING";
    case ILogger::Severity::kINFO: return "INFO";
    case ILogger::Severity::kVERBOSE: return "VERBOSE";
    }
    return "LOG";
}

//! Integer plugin field of any integer type; false if the field has no integer value.
bool readInteger(PluginField const& field, int64_t& value) noexcept
{
    if (field.data == nullptr || field.length < 1)
    {
        return false;
    }
    switch (field.type)
    {
    case PluginFieldType::kINT8: value = *static_cast<int8_t const*>(field.data); return true;
    case PluginFieldType::kINT16: value = *static_cast<int16_t const*>(field.data); return true;
    case PluginFieldType::kINT32: value = *static_cast<int32_t const*>(field.data); return true;
    case PluginFieldType::kINT64: value = *static_cast<int64_t const*>(field.data); return true;
    default: return false;
    }
}

} // namespace

void setLoggerFinder(ILoggerFinder* finder) noexcept
{
    ILoggerFinder* expected = nullptr;
    if (finder != nullptr)
    {
        gLoggerFinder.compare_exchange_strong(expected, finder);
    }
}

void logMessage(ILogger::Severity severity, std::string const& message) noexcept
{
    try
    {
        std::string const text = std::string(kPluginNamespace) + "::" + kPluginName + ": " + message;
        ILoggerFinder* finder = gLoggerFinder.load();
        ILogger* logger = finder != nullptr ? finder->findLogger() : nullptr;
        if (logger != nullptr)
        {
            logger->log(severity, text.c_str());
        }
        else if (severity <= ILogger::Severity::kWARNING)
        {
            std::fprintf(stderr, "[%s] %s\n", severityName(severity), text.c_str());
        }
    }
    catch (...)
    {
    }
}

void logError(std::string const& message) noexcept
{
    logMessage(ILogger::Severity::kERROR, message);
}

// ---- Creator -----------------------------------------------------------------------------------------

STAStageSelectCreator::STAStageSelectCreator()
{
    mFields.emplace_back(kFieldNumGroups, nullptr, PluginFieldType::kINT32, 1);
    mFields.emplace_back(kFieldR, nullptr, PluginFieldType::kINT32, 1);
    mFields.emplace_back(kFieldBackward, nullptr, PluginFieldType::kINT32, 1);
    mCollection.nbFields = static_cast<int32_t>(mFields.size());
    mCollection.fields = mFields.data();
}

char const* STAStageSelectCreator::getPluginName() const noexcept
{
    return kPluginName;
}

char const* STAStageSelectCreator::getPluginVersion() const noexcept
{
    return kPluginVersion;
}

char const* STAStageSelectCreator::getPluginNamespace() const noexcept
{
    return kPluginNamespace;
}

PluginFieldCollection const* STAStageSelectCreator::getFieldNames() noexcept
{
    return &mCollection;
}

IPluginV3* STAStageSelectCreator::createPlugin(
    char const* name, PluginFieldCollection const* fc, TensorRTPhase /*phase*/) noexcept
{
    try
    {
        std::string const layer = name != nullptr ? name : "";
        if (fc == nullptr || (fc->nbFields > 0 && fc->fields == nullptr))
        {
            logError("createPlugin(" + layer + "): no plugin fields");
            return nullptr;
        }
        int64_t numGroups = -1;
        int64_t r = -1;
        int64_t backward = 0;
        for (int32_t i = 0; i < fc->nbFields; ++i)
        {
            PluginField const& field = fc->fields[i];
            if (field.name == nullptr)
            {
                continue;
            }
            int64_t* target = nullptr;
            if (std::strcmp(field.name, kFieldNumGroups) == 0)
            {
                target = &numGroups;
            }
            else if (std::strcmp(field.name, kFieldR) == 0)
            {
                target = &r;
            }
            else if (std::strcmp(field.name, kFieldBackward) == 0)
            {
                target = &backward;
            }
            else
            {
                logMessage(ILogger::Severity::kWARNING,
                    "createPlugin(" + layer + "): ignoring unknown field '" + field.name + "'");
                continue;
            }
            if (!readInteger(field, *target))
            {
                logError("createPlugin(" + layer + "): field '" + field.name + "' must be one integer");
                return nullptr;
            }
        }
        std::ostringstream error;
        if (numGroups < 1 || numGroups > std::numeric_limits<int32_t>::max())
        {
            error << "num_groups must be given and >= 1 (got " << numGroups << ")";
        }
        else if (r < 0 || r >= STA_STAGE_SELECT_MAX_TOKENS)
        {
            error << "r must be given and 0 <= r < n <= " << STA_STAGE_SELECT_MAX_TOKENS << " (got " << r << ")";
        }
        else if (backward != 0 && backward != 1)
        {
            error << "backward must be 0 (forward) or 1 (backward) (got " << backward << ")";
        }
        if (!error.str().empty())
        {
            logError("createPlugin(" + layer + "): " + error.str());
            return nullptr;
        }
        return new STAStageSelectPlugin(
            static_cast<int32_t>(numGroups), static_cast<int32_t>(r), static_cast<int32_t>(backward));
    }
    catch (std::exception const& e)
    {
        logError(std::string("createPlugin failed: ") + e.what());
    }
    return nullptr;
}

} // namespace trt
} // namespace sta_deploy
