// CPU check of trt_classify's pieces that need no TensorRT (npy.h, scores.h), driven by
// tests/test_examples.py against numpy and sta_deploy.video.predict:
//
//   postprocess_check npy IN.npy OUT.bin          shape on stdout, the float32 data to OUT.bin
//   postprocess_check top LOGITS.npy logits|prob K   "class score" per line, best first
//   postprocess_check half OUT.bin                every float16 bit pattern converted, as float32
#include "../npy.h"
#include "../scores.h"

#include <cstdio>
#include <exception>
#include <fstream>
#include <string>

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
        std::fprintf(stderr, "usage: postprocess_check npy IN OUT | top LOGITS.npy logits|prob K | half OUT\n");
        return 2;
    }
    catch (std::exception const& error)
    {
        std::fprintf(stderr, "postprocess_check: error: %s\n", error.what());
        return 1;
    }
}
