// CPU check of classify's pieces that need neither a runtime nor FFmpeg (npy.h, scores.h, sampling.h,
// protocol.h), driven by tests/test_examples.py against numpy and sta_deploy.video:
//
//   postprocess_check npy IN.npy OUT.bin          shape on stdout, the float32 data to OUT.bin
//   postprocess_check top LOGITS.npy logits|prob K   "class score" per line, best first
//   postprocess_check half OUT.bin                every float16 bit pattern converted, as float32
//   postprocess_check indices TEMPORAL FRAMES STRIDE VIEWS TOTAL...   one line of frame indices per TOTAL
//   postprocess_check spatial ROUNDING STYLE CROP CROPS H W   "height width" resized, then "top left" per crop
//   postprocess_check resize IN.npy H W OUT.npy   (h, w, 3) float32 pixel values in, uint8 (H, W, 3) out
//   postprocess_check normalise MEAN0 MEAN1 MEAN2 STD0 STD1 STD2 OUT.bin   the 3 x 256 float32 table
//   postprocess_check labels FILE                 the class names, one per line
#include "../npy.h"
#include "../protocol.h"
#include "../sampling.h"
#include "../scores.h"

#include <cstdio>
#include <exception>
#include <fstream>
#include <string>

namespace
{

int resize(char** argv)
{
    sta_example::NpyArray const image = sta_example::readNpyFloat32(argv[2]);
    int64_t const h = image.shape.at(0), w = image.shape.at(1);
    int64_t const outH = std::stoll(argv[3]), outW = std::stoll(argv[4]);
    std::vector<uint8_t> pixels(image.data.size());
    for (size_t i = 0; i < pixels.size(); ++i)
    {
        pixels[i] = static_cast<uint8_t>(image.data[i]);
    }
    sta_example::Region const all{0, outH, 0, outW};
    sta_example::ResizePlan const plan = sta_example::resizePlan(h, w, outH, outW, all);
    std::vector<uint8_t> out(static_cast<size_t>(outH * outW * 3));
    sta_example::resizeBilinear(plan, pixels.data(), w * 3, out.data());
    sta_example::writeNpy(argv[5], {outH, outW, 3}, out.data(), out.size(), "|u1");
    return 0;
}

} // namespace

int main(int argc, char** argv)
{
    try
    {
        std::string const mode = argc > 1 ? argv[1] : "";
        if (mode == "npy" && argc == 4)
        {
            sta_example::NpyArray const array = sta_example::readNpyFloat32(argv[2]);
            for (int64_t extent : array.shape)
            {
                std::printf("%lld ", static_cast<long long>(extent));
            }
            std::printf("\n");
            std::ofstream(argv[3], std::ios::binary)
                .write(reinterpret_cast<char const*>(array.data.data()), static_cast<std::streamsize>(array.data.size() * sizeof(float)));
            return 0;
        }
        if (mode == "top" && argc == 5)
        {
            sta_example::NpyArray const logits = sta_example::readNpyFloat32(argv[2]);
            int64_t const classes = logits.shape.back();
            sta_example::ViewAverage average(classes, std::string(argv[3]) == "prob");
            for (int64_t view = 0; view < logits.count() / classes; ++view)
            {
                average.add(std::vector<double>(logits.data.begin() + view * classes, logits.data.begin() + (view + 1) * classes));
            }
            std::vector<double> const scores = average.scores();
            for (int64_t c : sta_example::topClasses(scores, std::stoll(argv[4])))
            {
                std::printf("%lld %.17g\n", static_cast<long long>(c), scores[c]);
            }
            return 0;
        }
        if (mode == "half" && argc == 3)
        {
            std::vector<float> values(65536);
            for (uint32_t bits = 0; bits < 65536; ++bits)
            {
                values[bits] = sta_example::halfToFloat(static_cast<uint16_t>(bits));
            }
            std::ofstream(argv[2], std::ios::binary).write(reinterpret_cast<char const*>(values.data()), 65536 * sizeof(float));
            return 0;
        }
        if (mode == "indices" && argc >= 7)
        {
            sta_example::Protocol p;
            p.temporal = argv[2];
            p.numFrames = std::stoll(argv[3]);
            p.stride = std::stoll(argv[4]);
            p.temporalViews = std::stoll(argv[5]);
            for (int i = 6; i < argc; ++i)
            {
                for (int64_t index : sta_example::temporalIndices(p, std::stoll(argv[i])))
                {
                    std::printf("%lld ", static_cast<long long>(index));
                }
                std::printf("\n");
            }
            return 0;
        }
        if (mode == "spatial" && argc == 8)
        {
            sta_example::Protocol p;
            p.resizeRounding = argv[2];
            p.cropStyle = argv[3];
            p.cropSize = std::stoll(argv[4]);
            p.spatialCrops = std::stoll(argv[5]);
            auto const size = sta_example::resizedSize(p, std::stoll(argv[6]), std::stoll(argv[7]));
            std::printf("%lld %lld\n", static_cast<long long>(size.first), static_cast<long long>(size.second));
            for (auto const& box : sta_example::cropBoxes(p, size.first, size.second))
            {
                std::printf("%lld %lld\n", static_cast<long long>(box.first), static_cast<long long>(box.second));
            }
            return 0;
        }
        if (mode == "resize" && argc == 6)
        {
            return resize(argv);
        }
        if (mode == "normalise" && argc == 9)
        {
            sta_example::Protocol p;
            for (int c = 0; c < 3; ++c)
            {
                p.mean[c] = std::stod(argv[2 + c]);
                p.std[c] = std::stod(argv[5 + c]);
            }
            sta_example::Normaliser const normaliser(p);
            std::ofstream(argv[8], std::ios::binary).write(reinterpret_cast<char const*>(normaliser.table), sizeof(normaliser.table));
            return 0;
        }
        if (mode == "labels" && argc == 3)
        {
            for (auto const& name : sta_example::readLabelsFile(argv[2]))
            {
                std::printf("%s\n", name.c_str());
            }
            return 0;
        }
        std::fprintf(stderr, "usage: postprocess_check npy|top|half|indices|spatial|resize|normalise|labels ...\n");
        return 2;
    }
    catch (std::exception const& error)
    {
        std::fprintf(stderr, "postprocess_check: error: %s\n", error.what());
        return 1;
    }
}
