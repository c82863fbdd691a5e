// classify's command line: the options, their parsing and the usage text.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace sta_example
{

// A bad command line: main prints it with the usage hint and exits with code 2.
class UsageError : public std::runtime_error
{
public:
    using std::runtime_error::runtime_error;
};

struct Options
{
    std::string model;
    std::vector<std::string> clips;
    std::string backend;
    std::vector<std::string> pluginLibs;
    std::string labels;
    int64_t top{5};
    std::string views;
    std::string dataset{"k400"};
    bool json{false};
    std::string protocol;
    int threads{0};
    std::string saveViews;
    std::string average;
};

extern char const* const kUsage;

// Throws UsageError naming the option and what it takes.
Options parseArguments(int argc, char** argv);

} // namespace sta_example
