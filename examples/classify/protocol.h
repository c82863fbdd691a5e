// The protocol file `sta-deploy protocol MODEL.onnx` writes (MODEL.protocol.json): the model's input,
// its sampling protocol per dataset and its class names.  Also the labels-file reader and the
// --views parser, as sta_deploy.video.labels / sampling do them.  Header only.
#pragma once

#include "json.h"
#include "sampling.h"

#include <algorithm>
#include <cctype>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

namespace sta_example
{

struct ProtocolFile
{
    std::string path;
    std::string model;
    int64_t r1{0};
    std::string family;
    int64_t numClasses{0};
    std::vector<int64_t> inputShape; // (batch or -1, 3, T, H, W)
    Json protocols;                  // dataset -> SamplingProtocol.as_dict()
    std::vector<std::string> labels;
    std::string labelsSource;
};

inline ProtocolFile readProtocolFile(std::string const& path)
{
    ProtocolFile file;
    file.path = path;
    try
    {
        Json const json = readJsonFile(path);
        if (json.type != Json::Type::Object || json.find("format") == nullptr || json.at("format").asString() != "sta_deploy.protocol")
        {
            throw std::runtime_error("not an sta-deploy protocol file");
        }
        file.model = json.at("model").asString();
        file.r1 = json.at("r1").asInt();
        file.family = json.at("family").asString();
        file.numClasses = json.at("num_classes").asInt();
        for (Json const& dim : json.at("input").at("shape").array)
        {
            file.inputShape.push_back(dim.type == Json::Type::Number ? dim.asInt() : -1); // a symbolic batch
        }
        file.protocols = json.at("protocols");
        for (Json const& name : json.at("labels").array)
        {
            file.labels.push_back(name.asString());
        }
        file.labelsSource = json.at("labels_source").asString();
    }
    catch (std::runtime_error const& error)
    {
        throw std::runtime_error("protocol file " + path + ": " + error.what() + " (write it again with 'sta-deploy protocol MODEL.onnx')");
    }
    return file;
}

//! "5x3" -> (5, 3), with parse_views()'s limits.
inline std::pair<int64_t, int64_t> parseViews(std::string const& text)
{
    size_t const x = text.find_first_of("xX");
    try
    {
        size_t used = 0;
        if (x == std::string::npos)
        {
            throw std::invalid_argument("no x");
        }
        int64_t const temporal = std::stoll(text.substr(0, x), &used);
        if (used != x)
        {
            throw std::invalid_argument("trailing");
        }
        std::string const rest = text.substr(x + 1);
        int64_t const spatial = std::stoll(rest, &used);
        if (used != rest.size())
        {
            throw std::invalid_argument("trailing");
        }
        if (temporal < 1 || temporal > 32 || spatial < 1 || spatial > 10)
        {
            throw std::out_of_range("views " + text + " out of range: 1..32 temporal windows and 1..10 crops");
        }
        return {temporal, spatial};
    }
    catch (std::out_of_range const& error)
    {
        throw std::invalid_argument(error.what());
    }
    catch (std::invalid_argument const&)
    {
        throw std::invalid_argument("views must look like TxS (temporal windows x spatial crops), e.g. 1x1 or 5x3; got '" + text + "'");
    }
}

//! The protocol of `dataset` ("k400" | "ssv2"), with "TxS" views when given.
inline Protocol selectProtocol(ProtocolFile const& file, std::string const& dataset, std::string const& views)
{
    Json const* entry = file.protocols.find(dataset);
    if (entry == nullptr)
    {
        throw std::invalid_argument("protocol file " + file.path + " has no '" + dataset + "' protocol");
    }
    Protocol p;
    try
    {
        p.name = entry->at("name").asString();
        p.temporal = entry->at("temporal").asString();
        p.numFrames = entry->at("num_frames").asInt();
        p.stride = entry->at("stride").asInt();
        p.temporalViews = entry->at("temporal_views").asInt();
        p.spatialCrops = entry->at("spatial_crops").asInt();
        p.cropSize = entry->at("crop_size").asInt();
        p.cropStyle = entry->at("crop_style").asString();
        p.resizeRounding = entry->at("resize_rounding").asString();
        for (int c = 0; c < 3; ++c)
        {
            p.mean[c] = entry->at("mean").array.at(c).asNumber();
            p.std[c] = entry->at("std").array.at(c).asNumber();
        }
        p.average = entry->at("average").asString();
        p.minFrames = entry->at("min_frames").asInt();
    }
    catch (std::exception const& error)
    {
        throw std::runtime_error("protocol file " + file.path + ", protocol '" + dataset + "': " + error.what());
    }
    if (!views.empty())
    {
        std::tie(p.temporalViews, p.spatialCrops) = parseViews(views);
    }
    return p;
}

//! SamplingProtocol.as_dict(), keys in the same order.
inline std::string protocolJson(Protocol const& p)
{
    auto triple = [](double const* v) {
        return "[" + jsonNumber(v[0]) + ", " + jsonNumber(v[1]) + ", " + jsonNumber(v[2]) + "]";
    };
    return "{\"name\": " + jsonQuote(p.name) + ", \"temporal\": " + jsonQuote(p.temporal) + ", \"num_frames\": " + std::to_string(p.numFrames)
        + ", \"stride\": " + std::to_string(p.stride) + ", \"temporal_views\": " + std::to_string(p.temporalViews)
        + ", \"spatial_crops\": " + std::to_string(p.spatialCrops) + ", \"crop_size\": " + std::to_string(p.cropSize)
        + ", \"crop_style\": " + jsonQuote(p.cropStyle) + ", \"resize_rounding\": " + jsonQuote(p.resizeRounding) + ", \"mean\": " + triple(p.mean)
        + ", \"std\": " + triple(p.std) + ", \"average\": " + jsonQuote(p.average) + ", \"min_frames\": " + std::to_string(p.minFrames) + "}";
}

namespace detail
{
inline std::string strip(std::string const& text, char const* characters = " \t\r\n\f\v")
{
    size_t const begin = text.find_first_not_of(characters);
    if (begin == std::string::npos)
    {
        return "";
    }
    return text.substr(begin, text.find_last_not_of(characters) - begin + 1);
}

//! "3,name" / "3\tname" / "3 name" -> (3, "name"), else index -1.
inline std::pair<long long, std::string> splitIndex(std::string const& line)
{
    for (char separator : {',', '\t', ' '})
    {
        size_t const at = line.find(separator);
        if (at == std::string::npos)
        {
            continue;
        }
        std::string const head = strip(line.substr(0, at));
        std::string const tail = strip(line.substr(at + 1));
        if (!head.empty() && std::all_of(head.begin(), head.end(), [](unsigned char c) { return std::isdigit(c) != 0; }) && !tail.empty())
        {
            return {std::stoll(head), strip(tail, "\"")};
        }
    }
    return {-1, ""};
}
} // namespace detail

//! Class names, one per line (or "index name" lines covering 0..N-1), as read_labels_file().
inline std::vector<std::string> readLabelsFile(std::string const& path)
{
    std::ifstream file(path, std::ios::binary);
    if (!file)
    {
        throw std::runtime_error("cannot read labels file " + path);
    }
    std::string text((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
    std::vector<std::string> lines;
    std::string line;
    for (size_t i = 0; i <= text.size(); ++i)
    {
        char const c = i < text.size() ? text[i] : '\n';
        if (c == '\n' || c == '\r')
        {
            if (i < text.size() || !line.empty())
            {
                lines.push_back(line);
            }
            line.clear();
            if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n')
            {
                ++i;
            }
        }
        else
        {
            line += c;
        }
    }
    while (!lines.empty() && detail::strip(lines.back()).empty())
    {
        lines.pop_back();
    }
    if (lines.empty())
    {
        throw std::runtime_error("labels file " + path + " is empty; write one class name per line");
    }
    std::vector<std::string> names(lines.size());
    std::vector<bool> seen(lines.size(), false);
    bool indexed = true;
    for (auto const& entry : lines)
    {
        auto const [index, name] = detail::splitIndex(detail::strip(entry));
        if (index < 0 || index >= static_cast<long long>(lines.size()) || seen[static_cast<size_t>(index)])
        {
            indexed = false;
            break;
        }
        seen[static_cast<size_t>(index)] = true;
        names[static_cast<size_t>(index)] = name;
    }
    if (!indexed)
    {
        for (size_t i = 0; i < lines.size(); ++i)
        {
            names[i] = detail::strip(detail::strip(lines[i]), "\"");
        }
    }
    return names;
}

} // namespace sta_example
