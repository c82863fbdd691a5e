// Exercises the STAStageSelect TensorRT wrappers without libnvinfer (and, for everything but the last
// check, without a GPU), against the TensorRT headers the build found:
//
//   sta_stage_select_trt_check <libsta_stage_select_trt.so> <libsta_stage_select_trt_static.so> [libsta_stage_select_ref.so]
//
// 1. dynamic registration: dlopen, setLoggerFinder, getCreators, creator identity and fields
// 2. createPlugin with INT32 / INT64 / INT8 fields, and its rejections (logged through the logger finder)
// 3. getFieldsToSerialize -> createPlugin(kRUNTIME) round trip, clone, attachToContext
// 4. getOutputShapes through a stub IExprBuilder, getOutputDataTypes, supportsFormatCombination,
//    configurePlugin limits, getWorkspaceSize, onShapeChange
// 5. static registration: the load-time registrar calls getPluginRegistry()->registerCreator(), here a
//    stub registry exported by this executable
// 6. enqueue: on a machine with a GPU, runs the plugin and compares with the CPU reference (third
//    argument); without one, checks that enqueue fails cleanly.
#include <NvInferRuntime.h>

#include "sta_stage_select/sta_stage_select.h"
#include "trt_stubs.h"

#include <cuda_runtime_api.h>
#include <dlfcn.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <deque>
#include <memory>
#include <random>
#include <string>
#include <vector>

using namespace nvinfer1;
using namespace sta_check;

namespace
{

int gFailures = 0;
int gChecks = 0;

void check(bool condition, std::string const& what)
{
    ++gChecks;
    if (!condition)
    {
        ++gFailures;
        std::printf("FAIL  %s\n", what.c_str());
    }
    else
    {
        std::printf("ok    %s\n", what.c_str());
    }
}

StubRegistry gStubRegistry;

// ---- Helpers -------------------------------------------------------------------------------------------

Dims dims(std::initializer_list<int64_t> values)
{
    Dims d{};
    d.nbDims = static_cast<int32_t>(values.size());
    int32_t i = 0;
    for (int64_t v : values)
    {
        d.d[i++] = v;
    }
    return d;
}

DynamicPluginTensorDesc desc(Dims const& shape, DataType type, Dims const* minShape = nullptr, Dims const* maxShape = nullptr)
{
    DynamicPluginTensorDesc d{};
    d.desc.dims = shape;
    d.desc.type = type;
    d.desc.format = TensorFormat::kLINEAR;
    d.desc.scale = -1.0F;
    d.min = minShape != nullptr ? *minShape : shape;
    d.opt = shape;
    d.max = maxShape != nullptr ? *maxShape : shape;
    return d;
}

struct Fields
{
    std::vector<PluginField> fields;
    PluginFieldCollection collection{};
    PluginFieldCollection const* get()
    {
        collection.nbFields = static_cast<int32_t>(fields.size());
        collection.fields = fields.data();
        return &collection;
    }
};

int32_t fieldValue(PluginFieldCollection const* fc, char const* name)
{
    for (int32_t i = 0; i < fc->nbFields; ++i)
    {
        if (std::strcmp(fc->fields[i].name, name) == 0 && fc->fields[i].type == PluginFieldType::kINT32
            && fc->fields[i].length == 1)
        {
            return *static_cast<int32_t const*>(fc->fields[i].data);
        }
    }
    return INT32_MIN;
}

IPluginV3OneBuild* buildOf(IPluginV3* plugin)
{
    return static_cast<IPluginV3OneBuild*>(plugin->getCapabilityInterface(PluginCapabilityType::kBUILD));
}
IPluginV3OneRuntime* runtimeOf(IPluginV3* plugin)
{
    return static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
}
IPluginV3OneCore* coreOf(IPluginV3* plugin)
{
    return static_cast<IPluginV3OneCore*>(plugin->getCapabilityInterface(PluginCapabilityType::kCORE));
}

using GetCreatorsFn = IPluginCreatorInterface* const* (*) (int32_t&);
using SetLoggerFinderFn = void (*)(ILoggerFinder*);
using RefF32Fn = int (*)(float const*, float const*, int64_t, int64_t, int64_t, int64_t, int64_t, int32_t, int32_t*);

void checkEnqueue(IPluginV3* plugin, char const* referencePath)
{
    int deviceCount = 0;
    bool const haveGpu = cudaGetDeviceCount(&deviceCount) == cudaSuccess && deviceCount > 0;
    auto* runtime = runtimeOf(plugin);
    int64_t const B = 2, G = 8, n = 196, D = 64, r = 48, keep = n - r;
    PluginTensorDesc in[2]{};
    in[0].dims = dims({B, G, n, D});
    in[0].type = DataType::kFLOAT;
    in[0].format = TensorFormat::kLINEAR;
    in[1].dims = dims({B, G, n});
    in[1].type = DataType::kFLOAT;
    in[1].format = TensorFormat::kLINEAR;
    PluginTensorDesc out[1]{};
    out[0].dims = dims({B, G, keep});
    out[0].type = DataType::kINT32;
    out[0].format = TensorFormat::kLINEAR;
    check(runtime->onShapeChange(in, 2, out, 1) == 0, "onShapeChange accepts (2, 8, 196, 64)");
    PluginTensorDesc bad[2] = {in[0], in[1]};
    bad[0].dims = dims({B, 4, n, D});
    bad[1].dims = dims({B, 4, n});
    check(runtime->onShapeChange(bad, 2, out, 1) != 0, "onShapeChange rejects G=4 for num_groups=8");

    if (!haveGpu)
    {
        void const* inputs[2] = {nullptr, nullptr};
        void* outputs[1] = {nullptr};
        check(runtime->enqueue(in, out, inputs, outputs, nullptr, nullptr) != 0, "enqueue with null buffers fails cleanly");
        std::printf("SKIP  enqueue on a GPU (no CUDA device here): waits for a GPU machine\n");
        return;
    }
    // Real run, compared with the CPU reference (bit-identical by construction).
    std::mt19937 rng(7);
    std::normal_distribution<float> normal;
    std::uniform_real_distribution<float> uniform(0.0F, 1.0F);
    std::vector<float> metric(static_cast<size_t>(B * G * n * D));
    std::vector<float> semantic(static_cast<size_t>(B * G * n));
    for (int64_t t = 0; t < B * G * n; ++t)
    {
        float norm = 0.0F;
        for (int64_t d = 0; d < D; ++d)
        {
            float const v = normal(rng);
            metric[t * D + d] = v;
            norm += v * v;
        }
        norm = std::sqrt(norm);
        for (int64_t d = 0; d < D; ++d)
        {
            metric[t * D + d] /= norm;
        }
        semantic[t] = uniform(rng);
    }
    std::vector<int32_t> expected(static_cast<size_t>(B * G * keep), -1);
    void* refLib = referencePath != nullptr ? dlopen(referencePath, RTLD_NOW | RTLD_LOCAL) : nullptr;
    auto refF32 = refLib != nullptr ? reinterpret_cast<RefF32Fn>(dlsym(refLib, "sta_stage_select_ref_f32")) : nullptr;
    check(refF32 != nullptr, "CPU reference library loaded for the GPU comparison");
    if (refF32 == nullptr)
    {
        return;
    }
    check(refF32(metric.data(), semantic.data(), B, G, n, D, r, 0, expected.data()) == STA_OK, "CPU reference ran");
    void* dMetric = nullptr;
    void* dSemantic = nullptr;
    void* dOut = nullptr;
    void* dWorkspace = nullptr;
    DynamicPluginTensorDesc dyn[2] = {desc(in[0].dims, DataType::kFLOAT), desc(in[1].dims, DataType::kFLOAT)};
    size_t const workspaceBytes = buildOf(plugin)->getWorkspaceSize(dyn, 2, nullptr, 1);
    cudaMalloc(&dMetric, metric.size() * sizeof(float));
    cudaMalloc(&dSemantic, semantic.size() * sizeof(float));
    cudaMalloc(&dOut, expected.size() * sizeof(int32_t));
    cudaMalloc(&dWorkspace, workspaceBytes);
    cudaMemcpy(dMetric, metric.data(), metric.size() * sizeof(float), cudaMemcpyHostToDevice);
    cudaMemcpy(dSemantic, semantic.data(), semantic.size() * sizeof(float), cudaMemcpyHostToDevice);
    void const* inputs[2] = {dMetric, dSemantic};
    void* outputs[1] = {dOut};
    int32_t const status = runtime->enqueue(in, out, inputs, outputs, dWorkspace, nullptr);
    std::vector<int32_t> got(expected.size(), -2);
    cudaMemcpy(got.data(), dOut, got.size() * sizeof(int32_t), cudaMemcpyDeviceToHost);
    check(status == 0 && cudaDeviceSynchronize() == cudaSuccess, "enqueue ran on the GPU");
    check(got == expected, "GPU kept indices equal the CPU reference's, in order");
    cudaFree(dMetric);
    cudaFree(dSemantic);
    cudaFree(dOut);
    cudaFree(dWorkspace);
}

} // namespace

// Exported (ENABLE_EXPORTS) so that the static-registration library binds to it when dlopen()ed.
extern "C" STA_API IPluginRegistry* getPluginRegistry() noexcept
{
    return &gStubRegistry;
}

int main(int argc, char** argv)
{
    if (argc < 3)
    {
        std::fprintf(stderr, "usage: %s <libsta_stage_select_trt.so> <libsta_stage_select_trt_static.so> [ref.so]\n", argv[0]);
        return 2;
    }
    std::printf("TensorRT headers %d.%d.%d\n", NV_TENSORRT_MAJOR, NV_TENSORRT_MINOR, NV_TENSORRT_PATCH);

    // ---- 1. dynamic registration ----
    void* lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    check(lib != nullptr, std::string("dlopen dynamic-registration library ") + (lib ? "" : dlerror()));
    if (lib == nullptr)
    {
        return 1;
    }
    auto getCreators = reinterpret_cast<GetCreatorsFn>(dlsym(lib, "getCreators"));
    auto setFinder = reinterpret_cast<SetLoggerFinderFn>(dlsym(lib, "setLoggerFinder"));
    check(getCreators != nullptr, "exports getCreators");
    check(setFinder != nullptr, "exports setLoggerFinder");
    if (getCreators == nullptr || setFinder == nullptr)
    {
        return 1;
    }
    CapturingLogger logger;
    Finder finder(&logger);
    setFinder(&finder);

    int32_t nbCreators = -1;
    IPluginCreatorInterface* const* creators = getCreators(nbCreators);
    check(nbCreators == 1 && creators != nullptr && creators[0] != nullptr, "getCreators returns one creator");
    check(std::strcmp(creators[0]->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") == 0, "creator is an IPluginCreatorV3One");
    auto* creator = static_cast<IPluginCreatorV3One*>(creators[0]);
    check(std::strcmp(creator->getPluginName(), "STAStageSelect") == 0, "creator name STAStageSelect");
    check(std::strcmp(creator->getPluginVersion(), "1") == 0, "creator version 1");
    check(std::strcmp(creator->getPluginNamespace(), "sta_deploy") == 0, "creator namespace sta_deploy");
    PluginFieldCollection const* names = creator->getFieldNames();
    check(names != nullptr && names->nbFields == 3 && std::strcmp(names->fields[0].name, "num_groups") == 0
            && std::strcmp(names->fields[1].name, "r") == 0 && std::strcmp(names->fields[2].name, "backward") == 0
            && names->fields[0].type == PluginFieldType::kINT32,
        "getFieldNames: num_groups, r, backward (INT32)");

    // ---- 2. createPlugin ----
    int32_t const g8 = 8, r48 = 48, fwd = 0;
    Fields f32;
    f32.fields = {PluginField("num_groups", &g8, PluginFieldType::kINT32, 1), PluginField("r", &r48, PluginFieldType::kINT32, 1),
        PluginField("backward", &fwd, PluginFieldType::kINT32, 1)};
    IPluginV3* plugin = creator->createPlugin("stage1", f32.get(), TensorRTPhase::kBUILD);
    check(plugin != nullptr, "createPlugin(num_groups=8, r=48, backward=0) in the build phase");
    if (plugin == nullptr)
    {
        return 1;
    }
    check(std::strcmp(plugin->getInterfaceInfo().kind, "PLUGIN") == 0, "plugin is an IPluginV3");
    check(coreOf(plugin) != nullptr && buildOf(plugin) != nullptr && runtimeOf(plugin) != nullptr,
        "capabilities kCORE, kBUILD, kRUNTIME");
    check(std::strcmp(coreOf(plugin)->getInterfaceInfo().kind, "PLUGIN_V3ONE_CORE") == 0
            && std::strcmp(buildOf(plugin)->getInterfaceInfo().kind, "PLUGIN_V3ONE_BUILD") == 0
            && std::strcmp(runtimeOf(plugin)->getInterfaceInfo().kind, "PLUGIN_V3ONE_RUNTIME") == 0,
        "capability interface kinds");
    check(std::strcmp(coreOf(plugin)->getPluginName(), "STAStageSelect") == 0
            && std::strcmp(coreOf(plugin)->getPluginVersion(), "1") == 0
            && std::strcmp(coreOf(plugin)->getPluginNamespace(), "sta_deploy") == 0,
        "plugin name / version / namespace match the creator");

    int64_t const g4 = 4, r24 = 24;
    int8_t const bwd = 1;
    Fields f64;
    f64.fields = {PluginField("num_groups", &g4, PluginFieldType::kINT64, 1), PluginField("r", &r24, PluginFieldType::kINT64, 1),
        PluginField("backward", &bwd, PluginFieldType::kINT8, 1)};
    IPluginV3* plugin64 = creator->createPlugin("stage2", f64.get(), TensorRTPhase::kBUILD);
    check(plugin64 != nullptr, "createPlugin with INT64 / INT8 fields");
    if (plugin64 != nullptr)
    {
        PluginFieldCollection const* s = runtimeOf(plugin64)->getFieldsToSerialize();
        check(fieldValue(s, "num_groups") == 4 && fieldValue(s, "r") == 24 && fieldValue(s, "backward") == 1,
            "INT64 / INT8 fields read back as num_groups=4, r=24, backward=1");
        delete plugin64;
    }
    {
        Fields missing;
        missing.fields = {PluginField("num_groups", &g8, PluginFieldType::kINT32, 1)};
        check(creator->createPlugin("x", missing.get(), TensorRTPhase::kBUILD) == nullptr && logger.sawError("r must be given"),
            "createPlugin rejects a missing r (logged through the logger finder)");
        int32_t const two = 2;
        Fields badBackward;
        badBackward.fields = {f32.fields[0], f32.fields[1], PluginField("backward", &two, PluginFieldType::kINT32, 1)};
        check(creator->createPlugin("x", badBackward.get(), TensorRTPhase::kBUILD) == nullptr && logger.sawError("backward must be"),
            "createPlugin rejects backward=2");
        int32_t const zero = 0;
        Fields badGroups;
        badGroups.fields = {PluginField("num_groups", &zero, PluginFieldType::kINT32, 1), f32.fields[1]};
        check(creator->createPlugin("x", badGroups.get(), TensorRTPhase::kBUILD) == nullptr, "createPlugin rejects num_groups=0");
        float const real = 48.0F;
        Fields badType;
        badType.fields = {f32.fields[0], PluginField("r", &real, PluginFieldType::kFLOAT32, 1)};
        check(creator->createPlugin("x", badType.get(), TensorRTPhase::kBUILD) == nullptr && logger.sawError("must be one integer"),
            "createPlugin rejects a float r");
        int32_t const huge = 5000;
        Fields bigR;
        bigR.fields = {f32.fields[0], PluginField("r", &huge, PluginFieldType::kINT32, 1)};
        check(creator->createPlugin("x", bigR.get(), TensorRTPhase::kBUILD) == nullptr, "createPlugin rejects r >= 2048");
    }

    // ---- 3. serialization round trip, clone, attachToContext ----
    PluginFieldCollection const* serial = runtimeOf(plugin)->getFieldsToSerialize();
    check(serial != nullptr && serial->nbFields == 3 && fieldValue(serial, "num_groups") == 8 && fieldValue(serial, "r") == 48
            && fieldValue(serial, "backward") == 0,
        "getFieldsToSerialize: num_groups=8, r=48, backward=0 (INT32)");
    IPluginV3* restored = creator->createPlugin("stage1", serial, TensorRTPhase::kRUNTIME);
    check(restored != nullptr, "createPlugin(kRUNTIME) from the serialized fields");
    if (restored != nullptr)
    {
        PluginFieldCollection const* again = runtimeOf(restored)->getFieldsToSerialize();
        check(fieldValue(again, "num_groups") == 8 && fieldValue(again, "r") == 48 && fieldValue(again, "backward") == 0,
            "deserialized plugin serializes the same fields");
        check(std::strcmp(buildOf(restored)->getMetadataString(), "num_groups=8,r=48,backward=0") == 0,
            "metadata string num_groups=8,r=48,backward=0");
        delete restored;
    }
    IPluginV3* cloned = plugin->clone();
    check(cloned != nullptr && cloned != plugin && fieldValue(runtimeOf(cloned)->getFieldsToSerialize(), "r") == 48, "clone");
    delete cloned;
    IPluginV3* attached = runtimeOf(plugin)->attachToContext(nullptr);
    check(attached != nullptr && fieldValue(runtimeOf(attached)->getFieldsToSerialize(), "num_groups") == 8, "attachToContext clones");
    delete attached;

    // ---- 4. build-phase queries ----
    IPluginV3OneBuild* build = buildOf(plugin);
    check(build->getNbOutputs() == 1, "getNbOutputs == 1");
    DataType outType = DataType::kFLOAT;
    DataType const fp32In[2] = {DataType::kFLOAT, DataType::kFLOAT};
    DataType const fp16In[2] = {DataType::kHALF, DataType::kFLOAT};
    DataType const badIn[2] = {DataType::kINT32, DataType::kFLOAT};
    check(build->getOutputDataTypes(&outType, 1, fp32In, 2) == 0 && outType == DataType::kINT32, "output type INT32 (fp32 metric)");
    outType = DataType::kFLOAT;
    check(build->getOutputDataTypes(&outType, 1, fp16In, 2) == 0 && outType == DataType::kINT32, "output type INT32 (fp16 metric)");
    check(build->getOutputDataTypes(&outType, 1, badIn, 2) != 0, "getOutputDataTypes rejects an INT32 metric");

    {
        ExprBuilder eb;
        DimsExprs in[2]{};
        in[0].nbDims = 4;
        in[0].d[0] = eb.number(2);
        in[0].d[1] = eb.number(8);
        in[0].d[2] = eb.number(196);
        in[0].d[3] = eb.number(64);
        in[1].nbDims = 3;
        in[1].d[0] = in[0].d[0];
        in[1].d[1] = in[0].d[1];
        in[1].d[2] = in[0].d[2];
        DimsExprs out[1]{};
        int32_t const status = build->getOutputShapes(in, 2, nullptr, 0, out, 1, eb);
        check(status == 0 && out[0].nbDims == 3 && out[0].d[0]->getConstantValue() == 2 && out[0].d[1]->getConstantValue() == 8
                && out[0].d[2]->isConstant() && out[0].d[2]->getConstantValue() == 148,
            "getOutputShapes (2, 8, 196, 64) -> (2, 8, 148)");

        in[0].d[0] = eb.symbol("B");
        in[1].d[0] = in[0].d[0];
        in[0].d[2] = eb.symbol("n");
        in[1].d[2] = in[0].d[2];
        DimsExprs sym[1]{};
        check(build->getOutputShapes(in, 2, nullptr, 0, sym, 1, eb) == 0 && sym[0].d[0] == in[0].d[0]
                && !sym[0].d[2]->isConstant() && static_cast<Expr const*>(sym[0].d[2])->text == "(n - 48)",
            "getOutputShapes with symbolic B, n -> (B, 8, n - 48)");

        in[0].d[1] = eb.number(4);
        in[1].d[1] = in[0].d[1];
        check(build->getOutputShapes(in, 2, nullptr, 0, sym, 1, eb) != 0, "getOutputShapes rejects G=4 for num_groups=8");
        in[0].d[1] = eb.number(8);
        in[1].d[1] = in[0].d[1];
        in[0].d[2] = eb.number(48);
        in[1].d[2] = in[0].d[2];
        check(build->getOutputShapes(in, 2, nullptr, 0, sym, 1, eb) != 0, "getOutputShapes rejects n <= r");
        in[0].d[2] = eb.number(4096);
        in[1].d[2] = in[0].d[2];
        check(build->getOutputShapes(in, 2, nullptr, 0, sym, 1, eb) != 0 && logger.sawError("2048"),
            "getOutputShapes rejects n = 4096 > 2048 with a clear message");
        in[0].d[2] = eb.number(196);
        in[1].d[2] = in[0].d[2];
        in[0].d[3] = eb.number(8192);
        check(build->getOutputShapes(in, 2, nullptr, 0, sym, 1, eb) != 0 && logger.sawError("4096"),
            "getOutputShapes rejects D = 8192 > 4096");
        in[0].nbDims = 3;
        check(build->getOutputShapes(in, 2, nullptr, 0, sym, 1, eb) != 0, "getOutputShapes rejects a 3-D metric");
    }

    {
        DynamicPluginTensorDesc io[3] = {desc(dims({2, 8, 196, 64}), DataType::kFLOAT), desc(dims({2, 8, 196}), DataType::kFLOAT),
            desc(dims({2, 8, 148}), DataType::kINT32)};
        check(build->supportsFormatCombination(0, io, 2, 1), "supports fp32 linear metric");
        io[0].desc.type = DataType::kHALF;
        check(build->supportsFormatCombination(0, io, 2, 1), "supports fp16 linear metric");
        io[0].desc.type = DataType::kINT8;
        check(!build->supportsFormatCombination(0, io, 2, 1), "rejects int8 metric");
        io[0].desc.type = DataType::kFLOAT;
        io[0].desc.format = TensorFormat::kCHW32;
        check(!build->supportsFormatCombination(0, io, 2, 1), "rejects a non-linear format");
        io[0].desc.format = TensorFormat::kLINEAR;
        check(build->supportsFormatCombination(1, io, 2, 1), "supports fp32 semantic");
        io[1].desc.type = DataType::kHALF;
        check(!build->supportsFormatCombination(1, io, 2, 1), "rejects fp16 semantic");
        io[1].desc.type = DataType::kFLOAT;
        check(build->supportsFormatCombination(2, io, 2, 1), "supports int32 output");
        io[2].desc.type = DataType::kFLOAT;
        check(!build->supportsFormatCombination(2, io, 2, 1), "rejects a float output");
    }

    {
        Dims const minM = dims({1, 8, 196, 64}), maxM = dims({4, 8, 196, 64});
        Dims const minS = dims({1, 8, 196}), maxS = dims({4, 8, 196});
        DynamicPluginTensorDesc in[2] = {desc(dims({-1, 8, 196, 64}), DataType::kFLOAT, &minM, &maxM),
            desc(dims({-1, 8, 196}), DataType::kFLOAT, &minS, &maxS)};
        DynamicPluginTensorDesc out[1] = {desc(dims({-1, 8, 148}), DataType::kINT32)};
        check(build->configurePlugin(in, 2, out, 1) == 0, "configurePlugin accepts B in [1, 4], (8, 196, 64)");
        check(build->getWorkspaceSize(in, 2, out, 1) == size_t(4) * 196 * 196 * sizeof(float),
            "getWorkspaceSize == B_max * n * n * 4 bytes");
        in[0].desc.type = DataType::kHALF;
        check(build->configurePlugin(in, 2, out, 1) == 0, "configurePlugin accepts an fp16 metric");
        in[0].desc.type = DataType::kFLOAT;
        in[1].desc.type = DataType::kHALF;
        check(build->configurePlugin(in, 2, out, 1) != 0, "configurePlugin rejects an fp16 semantic");
        in[1].desc.type = DataType::kFLOAT;
        Dims const bigM = dims({4, 8, 3000, 64}), bigS = dims({4, 8, 3000});
        DynamicPluginTensorDesc big[2] = {desc(dims({-1, 8, -1, 64}), DataType::kFLOAT, &minM, &bigM),
            desc(dims({-1, 8, -1}), DataType::kFLOAT, &minS, &bigS)};
        logger.messages.clear();
        check(build->configurePlugin(big, 2, out, 1) != 0 && logger.sawError("2048"),
            "configurePlugin rejects a profile with n up to 3000 (> 2048), naming the limit");
        Dims const smallM = dims({1, 8, 40, 64}), smallS = dims({1, 8, 40});
        DynamicPluginTensorDesc small[2] = {desc(dims({-1, 8, -1, 64}), DataType::kFLOAT, &smallM, &maxM),
            desc(dims({-1, 8, -1}), DataType::kFLOAT, &smallS, &maxS)};
        check(build->configurePlugin(small, 2, out, 1) != 0, "configurePlugin rejects a profile with n_min = 40 <= r = 48");
    }

    // ---- 6. enqueue ----
    checkEnqueue(plugin, argc > 3 ? argv[3] : nullptr);
    delete plugin;

    // ---- 5. static registration ----
    void* staticLib = dlopen(argv[2], RTLD_NOW | RTLD_LOCAL);
    check(staticLib != nullptr, std::string("dlopen static-registration library ") + (staticLib ? "" : dlerror()));
    if (staticLib != nullptr)
    {
        check(gRegistrations.size() == 1, "static registrar called registerCreator once on load");
        if (gRegistrations.size() == 1)
        {
            Registration const& reg = gRegistrations[0];
            check(reg.kind == "PLUGIN CREATOR_V3ONE" && reg.name == "STAStageSelect" && reg.version == "1"
                    && reg.pluginNamespace == "sta_deploy" && reg.argumentNamespace == "sta_deploy",
                "registered STAStageSelect v1 in namespace sta_deploy");
        }
        check(dlsym(staticLib, "getCreators") == nullptr, "static variant does not export getCreators");
    }

    std::printf("%d checks, %d failures\n", gChecks, gFailures);
    return gFailures == 0 ? 0 : 1;
}
