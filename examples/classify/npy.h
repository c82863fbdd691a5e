// Minimal reader of NumPy .npy files holding a little-endian float32, C-ordered array: what
// `sta-deploy predict --save-views` and numpy.save(array.astype(np.float32)) write; and a writer of
// float32 / uint8 arrays (classify --save-views).  Header only.
#pragma once

#include <cstdint>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace sta_example
{

struct NpyArray
{
    std::vector<int64_t> shape;
    std::vector<float> data;

    int64_t count() const
    {
        int64_t n = 1;
        for (int64_t extent : shape)
        {
            n *= extent;
        }
        return n;
    }
};

//! The value of `key` in the header dictionary, e.g. "'<f4'" for 'descr' (raw text up to the next
//! top-level comma or the closing brace).
inline std::string npyHeaderValue(std::string const& header, std::string const& key)
{
    size_t const at = header.find("'" + key + "'");
    if (at == std::string::npos)
    {
        throw std::runtime_error("not a .npy header: no '" + key + "'");
    }
    size_t begin = header.find(':', at);
    if (begin == std::string::npos)
    {
        throw std::runtime_error("not a .npy header: '" + key + "' has no value");
    }
    ++begin;
    int depth = 0;
    size_t end = begin;
    for (; end < header.size(); ++end)
    {
        char const c = header[end];
        if (c == '(')
        {
            ++depth;
        }
        else if (c == ')')
        {
            --depth;
        }
        else if ((c == ',' || c == '}') && depth == 0)
        {
            break;
        }
    }
    std::string value = header.substr(begin, end - begin);
    value.erase(0, value.find_first_not_of(' '));
    value.erase(value.find_last_not_of(' ') + 1);
    return value;
}

inline std::vector<int64_t> npyParseShape(std::string const& text)
{
    // "(6, 3, 16, 224, 224)" or "(400,)" or "()"
    if (text.size() < 2 || text.front() != '(' || text.back() != ')')
    {
        throw std::runtime_error("not a .npy header: bad shape " + text);
    }
    std::vector<int64_t> shape;
    std::string number;
    for (size_t i = 1; i < text.size(); ++i)
    {
        char const c = text[i];
        if (c >= '0' && c <= '9')
        {
            number += c;
        }
        else if (c == ',' || c == ')')
        {
            if (!number.empty())
            {
                shape.push_back(std::stoll(number));
                number.clear();
            }
        }
        else if (c != ' ' && c != 'L')
        {
            throw std::runtime_error("not a .npy header: bad shape " + text);
        }
    }
    return shape;
}

inline NpyArray readNpyFloat32(std::string const& path)
{
    std::ifstream file(path, std::ios::binary);
    if (!file)
    {
        throw std::runtime_error("cannot open " + path);
    }
    char magic[8];
    if (!file.read(magic, 8) || std::memcmp(magic, "\x93NUMPY", 6) != 0)
    {
        throw std::runtime_error(path + " is not a .npy file");
    }
    int const major = static_cast<unsigned char>(magic[6]);
    uint32_t headerLength = 0;
    if (major == 1)
    {
        unsigned char bytes[2];
        file.read(reinterpret_cast<char*>(bytes), 2);
        headerLength = bytes[0] | (bytes[1] << 8);
    }
    else if (major == 2 || major == 3)
    {
        unsigned char bytes[4];
        file.read(reinterpret_cast<char*>(bytes), 4);
        headerLength = bytes[0] | (bytes[1] << 8) | (bytes[2] << 16) | (static_cast<uint32_t>(bytes[3]) << 24);
    }
    else
    {
        throw std::runtime_error(path + ": unsupported .npy version " + std::to_string(major));
    }
    std::string header(headerLength, '\0');
    if (!file.read(&header[0], headerLength))
    {
        throw std::runtime_error(path + ": truncated .npy header");
    }
    std::string const descr = npyHeaderValue(header, "descr");
    if (descr != "'<f4'")
    {
        throw std::runtime_error(path + ": expected little-endian float32 ('<f4'), found " + descr);
    }
    if (npyHeaderValue(header, "fortran_order") != "False")
    {
        throw std::runtime_error(path + ": expected a C-ordered array");
    }
    NpyArray array;
    array.shape = npyParseShape(npyHeaderValue(header, "shape"));
    array.data.resize(static_cast<size_t>(array.count()));
    if (!file.read(reinterpret_cast<char*>(array.data.data()), static_cast<std::streamsize>(array.data.size() * sizeof(float))))
    {
        throw std::runtime_error(path + ": truncated .npy data");
    }
    return array;
}

//! Write a C-ordered array as .npy version 1.0; `descr` is "<f4" (float32) or "|u1" (uint8).
inline void writeNpy(std::string const& path, std::vector<int64_t> const& shape, void const* data, size_t bytes, std::string const& descr)
{
    std::string shapeText = "(";
    for (size_t i = 0; i < shape.size(); ++i)
    {
        shapeText += std::to_string(shape[i]) + (shape.size() == 1 ? "," : (i + 1 < shape.size() ? ", " : ""));
    }
    shapeText += ")";
    std::string header = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shapeText + ", }";
    size_t const total = 10 + header.size() + 1;
    header += std::string((64 - total % 64) % 64, ' ') + "\n"; // the data starts 64-byte aligned
    std::ofstream file(path, std::ios::binary);
    if (!file)
    {
        throw std::runtime_error("cannot write " + path);
    }
    unsigned char const length[2] = {static_cast<unsigned char>(header.size() & 0xFF), static_cast<unsigned char>(header.size() >> 8)};
    file.write("\x93NUMPY\x01\x00", 8);
    file.write(reinterpret_cast<char const*>(length), 2);
    file.write(header.data(), static_cast<std::streamsize>(header.size()));
    file.write(static_cast<char const*>(data), static_cast<std::streamsize>(bytes));
    if (!file)
    {
        throw std::runtime_error("cannot write " + path);
    }
}

} // namespace sta_example
