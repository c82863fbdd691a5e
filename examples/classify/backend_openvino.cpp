// classify's CPU backend: OpenVINO's C++ runtime reads the exported .onnx directly (no conversion
// step) and runs it in float32 (the inference precision is pinned: on CPUs with bf16 units OpenVINO
// would otherwise pick bf16, and the scores would no longer match ONNX Runtime's).
#include "backend.h"

#include <openvino/openvino.hpp>

#include <sstream>
#include <stdexcept>

namespace sta_example
{
namespace
{

//! OpenVINO's messages carry source locations and check expressions over several lines: keep the words.
std::string cleanMessage(std::string const& text)
{
    std::istringstream lines(text);
    std::string line, out;
    while (std::getline(lines, line))
    {
        if (line.rfind("Exception from ", 0) == 0 || line.rfind("Check '", 0) == 0 || line.find_first_not_of(" \t") == std::string::npos)
        {
            continue;
        }
        out += (out.empty() ? "" : " ") + line.substr(line.find_first_not_of(" \t"));
    }
    if (out.empty())
    {
        out = text;
    }
    return out.size() > 300 ? out.substr(0, 300) + "..." : out;
}

class OpenVinoBackend : public Backend
{
public:
    OpenVinoBackend(std::string const& path, int threads)
    {
        std::shared_ptr<ov::Model> model;
        try
        {
            model = mCore.read_model(path);
        }
        catch (std::exception const& error)
        {
            std::string const message = cleanMessage(error.what());
            std::string const hint = message.find("STAStageSelect") != std::string::npos
                ? " (a --sta-impl plugin export: OpenVINO has no STAStageSelect, run it with TensorRT or export with --sta-impl onnx)"
                : "";
            throw std::runtime_error("OpenVINO cannot read " + path + ": " + message + hint);
        }
        if (model->inputs().size() != 1)
        {
            throw std::runtime_error(path + " has " + std::to_string(model->inputs().size()) + " inputs; a sta-deploy export has one, (batch, 3, T, H, W)");
        }
        ov::PartialShape shape = model->input().get_partial_shape();
        if (shape.rank().is_dynamic() || shape.rank().get_length() != 5 || !shape[1].is_static() || !shape[2].is_static() || !shape[3].is_static()
            || !shape[4].is_static())
        {
            throw std::runtime_error(path + " takes input " + shape.to_string() + ", not (batch, 3, T, H, W) with a static view shape");
        }
        for (int i = 1; i < 5; ++i)
        {
            mViewShape.push_back(shape[i].get_length());
        }
        mBatch = shape[0].is_static() ? shape[0].get_length() : 1;
        if (shape[0].is_dynamic())
        {
            shape[0] = mBatch; // a --dynamic-batch export: one view per run
            model->reshape(shape);
        }
        ov::Output<ov::Node> logits = model->output(0);
        for (auto const& output : model->outputs())
        {
            if (output.get_names().count("logits") != 0)
            {
                logits = output;
            }
        }
        std::string const logitsName = logits.get_any_name();
        ov::preprocess::PrePostProcessor prepost(model);
        prepost.input().tensor().set_element_type(ov::element::f32); // fp16 exports take float32 views too
        prepost.output(logitsName).tensor().set_element_type(ov::element::f32);
        model = prepost.build();

        ov::AnyMap properties{ov::hint::inference_precision(ov::element::f32), ov::hint::performance_mode(ov::hint::PerformanceMode::LATENCY)};
        if (threads > 0)
        {
            properties.emplace(ov::inference_num_threads(threads));
        }
        try
        {
            mCompiled = mCore.compile_model(model, "CPU", properties);
        }
        catch (std::exception const& error)
        {
            throw std::runtime_error("OpenVINO cannot compile " + path + " for the CPU: " + cleanMessage(error.what()));
        }
        mRequest = mCompiled.create_infer_request();
        mLogits = mCompiled.output(logitsName);
        ov::Shape const logitsShape = mLogits.get_shape();
        mClasses = static_cast<int64_t>(logitsShape.back());
        mInputShape = ov::Shape{static_cast<size_t>(mBatch)};
        for (int64_t extent : mViewShape)
        {
            mInputShape.push_back(static_cast<size_t>(extent));
        }
    }

    std::string kind() const override { return "openvino"; }
    std::vector<int64_t> viewShape() const override { return mViewShape; }
    int64_t batch() const override { return mBatch; }
    int64_t numClasses() const override { return mClasses; }

    std::vector<double> run(float const* views) override
    {
        mRequest.set_input_tensor(ov::Tensor(ov::element::f32, mInputShape, const_cast<float*>(views)));
        mRequest.infer();
        ov::Tensor const out = mRequest.get_tensor(mLogits);
        float const* data = out.data<float>();
        return std::vector<double>(data, data + mBatch * mClasses);
    }

private:
    ov::Core mCore;
    ov::CompiledModel mCompiled;
    ov::InferRequest mRequest;
    ov::Output<ov::Node const> mLogits;
    ov::Shape mInputShape;
    std::vector<int64_t> mViewShape;
    int64_t mBatch{1};
    int64_t mClasses{0};
};

} // namespace

std::unique_ptr<Backend> makeOpenVinoBackend(std::string const& model, int threads)
{
    return std::make_unique<OpenVinoBackend>(model, threads);
}

} // namespace sta_example
