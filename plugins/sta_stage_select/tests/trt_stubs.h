// Stand-ins for the parts of TensorRT that trt_wrapper_check.cpp needs without libnvinfer: a logger
// (and its finder) that records messages, dimension expressions with an IExprBuilder that folds
// constants, and a plugin registry that records what the static-registration library registers.
#pragma once

#include <NvInferRuntime.h>

#include <deque>
#include <memory>
#include <string>
#include <vector>

namespace sta_check
{

using namespace nvinfer1;

// ---- Logger --------------------------------------------------------------------------------------------

class CapturingLogger : public ILogger
{
public:
    void log(Severity severity, AsciiChar const* msg) noexcept override
    {
        if (severity <= Severity::kWARNING)
        {
            messages.emplace_back(msg);
        }
    }
    bool sawError(char const* fragment) const
    {
        for (auto const& m : messages)
        {
            if (m.find(fragment) != std::string::npos)
            {
                return true;
            }
        }
        return false;
    }
    std::vector<std::string> messages;
};

class Finder : public ILoggerFinder
{
public:
    explicit Finder(ILogger* logger)
        : mLogger(logger)
    {
    }
    ILogger* findLogger() override
    {
        return mLogger;
    }
    ~Finder() override = default;

private:
    ILogger* mLogger;
};

// ---- Stub dimension expressions ------------------------------------------------------------------------

class Expr : public IDimensionExpr
{
public:
    Expr(bool constant, int64_t value, std::string text)
        : mState{constant, value}
        , text(std::move(text))
    {
        mImpl = &mState;
    }
    ~Expr() noexcept override = default;

    struct State : public apiv::VDimensionExpr
    {
        State(bool c, int64_t v)
            : constant(c)
            , value(v)
        {
        }
        bool isConstant() const override
        {
            return constant;
        }
        int64_t getConstantValue() const override
        {
            return constant ? value : INT64_MIN;
        }
        bool isSizeTensor() const override
        {
            return false;
        }
        bool constant;
        int64_t value;
    };
    State mState;
    std::string text;
};

class ExprBuilder : public IExprBuilder
{
public:
    ExprBuilder()
        : mState(this)
    {
        mImpl = &mState;
    }
    ~ExprBuilder() noexcept override = default;

    Expr const* make(bool constant, int64_t value, std::string text)
    {
        mExprs.emplace_back(new Expr(constant, value, std::move(text)));
        return mExprs.back().get();
    }
    Expr const* symbol(char const* name)
    {
        return make(false, 0, name);
    }
    Expr const* number(int64_t v)
    {
        return make(true, v, std::to_string(v));
    }

private:
    struct State : public apiv::VExprBuilder
    {
        explicit State(ExprBuilder* owner)
            : owner(owner)
        {
        }
        IDimensionExpr const* constant(int64_t value) override
        {
            return owner->number(value);
        }
        IDimensionExpr const* operation(
            DimensionOperation op, IDimensionExpr const& first, IDimensionExpr const& second) override
        {
            auto const& a = static_cast<Expr const&>(first);
            auto const& b = static_cast<Expr const&>(second);
            if (op != DimensionOperation::kSUB && op != DimensionOperation::kSUM)
            {
                return owner->make(false, 0, "(unsupported op)");
            }
            char const* symbol = op == DimensionOperation::kSUB ? " - " : " + ";
            if (a.isConstant() && b.isConstant())
            {
                int64_t const x = a.getConstantValue();
                int64_t const y = b.getConstantValue();
                return owner->number(op == DimensionOperation::kSUB ? x - y : x + y);
            }
            return owner->make(false, 0, "(" + a.text + symbol + b.text + ")");
        }
        IDimensionExpr const* declareSizeTensor(int32_t, IDimensionExpr const&, IDimensionExpr const&) override
        {
            return nullptr;
        }
        ExprBuilder* owner;
    };
    State mState;
    std::deque<std::unique_ptr<Expr>> mExprs;
};

// ---- Stub plugin registry for the static-registration library -----------------------------------------

struct Registration
{
    std::string name;
    std::string version;
    std::string pluginNamespace;
    std::string argumentNamespace;
    std::string kind;
};
inline std::vector<Registration> gRegistrations;

class StubRegistry : public IPluginRegistry
{
public:
    ~StubRegistry() noexcept override = default;
    void setErrorRecorder(IErrorRecorder* const) noexcept override {}
    IErrorRecorder* getErrorRecorder() const noexcept override
    {
        return nullptr;
    }
    bool isParentSearchEnabled() const override
    {
        return false;
    }
    void setParentSearchEnabled(bool const) override {}
    PluginLibraryHandle loadLibrary(AsciiChar const*) noexcept override
    {
        return nullptr;
    }
    void deregisterLibrary(PluginLibraryHandle) noexcept override {}
    bool registerCreator(IPluginCreatorInterface& creator, AsciiChar const* const pluginNamespace) noexcept override
    {
        Registration registration;
        registration.kind = creator.getInterfaceInfo().kind;
        if (registration.kind == "PLUGIN CREATOR_V3ONE")
        {
            auto& v3 = static_cast<IPluginCreatorV3One&>(creator);
            registration.name = v3.getPluginName();
            registration.version = v3.getPluginVersion();
            registration.pluginNamespace = v3.getPluginNamespace();
        }
        registration.argumentNamespace = pluginNamespace != nullptr ? pluginNamespace : "(null)";
        gRegistrations.push_back(registration);
        return true;
    }
    IPluginCreatorInterface* const* getAllCreators(int32_t* const numCreators) const noexcept override
    {
        *numCreators = 0;
        return nullptr;
    }
    IPluginCreatorInterface* getCreator(AsciiChar const* const, AsciiChar const* const, AsciiChar const* const) noexcept override
    {
        return nullptr;
    }
    bool deregisterCreator(IPluginCreatorInterface const&) noexcept override
    {
        return false;
    }
    IPluginResource* acquirePluginResource(AsciiChar const*, IPluginResource*) noexcept override
    {
        return nullptr;
    }
    int32_t releasePluginResource(AsciiChar const*) noexcept override
    {
        return 0;
    }
    IPluginCreatorInterface* const* getAllCreatorsRecursive(int32_t* const numCreators) noexcept override
    {
        *numCreators = 0;
        return nullptr;
    }
#if NV_TENSORRT_MAJOR < 11
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    // Deprecated IPluginV2 registry methods, removed in TensorRT 11.
    bool registerCreator(IPluginCreator&, AsciiChar const* const) noexcept override
    {
        return false;
    }
    IPluginCreator* const* getPluginCreatorList(int32_t* const numCreators) const noexcept override
    {
        *numCreators = 0;
        return nullptr;
    }
    IPluginCreator* getPluginCreator(AsciiChar const* const, AsciiChar const* const, AsciiChar const* const) noexcept override
    {
        return nullptr;
    }
    bool deregisterCreator(IPluginCreator const&) noexcept override
    {
        return false;
    }
#pragma GCC diagnostic pop
#endif
};

} // namespace sta_check
