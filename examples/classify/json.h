// A small JSON reader and writer, enough for the protocol file `sta-deploy protocol` writes and the
// --json output.  Header only.
#pragma once

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace sta_example
{

struct Json
{
    enum class Type
    {
        Null,
        Bool,
        Number,
        String,
        Array,
        Object
    };
    Type type{Type::Null};
    bool boolean{false};
    double number{0.0};
    std::string string;
    std::vector<Json> array;
    std::vector<std::pair<std::string, Json>> object; // in file order

    Json const* find(std::string const& key) const
    {
        for (auto const& item : object)
        {
            if (item.first == key)
            {
                return &item.second;
            }
        }
        return nullptr;
    }

    Json const& at(std::string const& key) const
    {
        Json const* value = type == Type::Object ? find(key) : nullptr;
        if (value == nullptr)
        {
            throw std::runtime_error("no '" + key + "'");
        }
        return *value;
    }

    Json* find(std::string const& key)
    {
        return const_cast<Json*>(static_cast<Json const*>(this)->find(key));
    }

    double asNumber() const
    {
        if (type != Type::Number)
        {
            throw std::runtime_error("expected a number");
        }
        return number;
    }

    int64_t asInt() const
    {
        double const value = asNumber();
        if (value != std::floor(value))
        {
            throw std::runtime_error("expected an integer");
        }
        return static_cast<int64_t>(value);
    }

    std::string const& asString() const
    {
        if (type != Type::String)
        {
            throw std::runtime_error("expected a string");
        }
        return string;
    }

    static Json fromNumber(double value)
    {
        Json json;
        json.type = Type::Number;
        json.number = value;
        return json;
    }
};

namespace detail
{
class JsonParser
{
public:
    explicit JsonParser(std::string const& text)
        : mText(text)
    {
    }

    Json parseDocument()
    {
        Json value = parseValue();
        skipSpace();
        if (mAt != mText.size())
        {
            fail("trailing characters");
        }
        return value;
    }

private:
    [[noreturn]] void fail(std::string const& what) const
    {
        throw std::runtime_error("invalid JSON at character " + std::to_string(mAt) + ": " + what);
    }

    void skipSpace()
    {
        while (mAt < mText.size() && (mText[mAt] == ' ' || mText[mAt] == '\n' || mText[mAt] == '\r' || mText[mAt] == '\t'))
        {
            ++mAt;
        }
    }

    bool consume(char const* word)
    {
        std::string const w(word);
        if (mText.compare(mAt, w.size(), w) == 0)
        {
            mAt += w.size();
            return true;
        }
        return false;
    }

    Json parseValue()
    {
        skipSpace();
        if (mAt >= mText.size())
        {
            fail("unexpected end");
        }
        Json value;
        char const c = mText[mAt];
        if (c == '{')
        {
            value.type = Json::Type::Object;
            ++mAt;
            skipSpace();
            if (mAt < mText.size() && mText[mAt] == '}')
            {
                ++mAt;
                return value;
            }
            while (true)
            {
                skipSpace();
                std::string key = parseString();
                skipSpace();
                if (mAt >= mText.size() || mText[mAt++] != ':')
                {
                    fail("expected ':'");
                }
                value.object.emplace_back(std::move(key), parseValue());
                skipSpace();
                if (mAt < mText.size() && mText[mAt] == ',')
                {
                    ++mAt;
                    continue;
                }
                if (mAt < mText.size() && mText[mAt] == '}')
                {
                    ++mAt;
                    return value;
                }
                fail("expected ',' or '}'");
            }
        }
        if (c == '[')
        {
            value.type = Json::Type::Array;
            ++mAt;
            skipSpace();
            if (mAt < mText.size() && mText[mAt] == ']')
            {
                ++mAt;
                return value;
            }
            while (true)
            {
                value.array.push_back(parseValue());
                skipSpace();
                if (mAt < mText.size() && mText[mAt] == ',')
                {
                    ++mAt;
                    continue;
                }
                if (mAt < mText.size() && mText[mAt] == ']')
                {
                    ++mAt;
                    return value;
                }
                fail("expected ',' or ']'");
            }
        }
        if (c == '"')
        {
            value.type = Json::Type::String;
            value.string = parseString();
            return value;
        }
        if (consume("true") || consume("false"))
        {
            value.type = Json::Type::Bool;
            value.boolean = mText[mAt - 4] == 't';
            return value;
        }
        if (consume("null"))
        {
            return value;
        }
        char const* begin = mText.c_str() + mAt;
        char* end = nullptr;
        value.number = std::strtod(begin, &end);
        if (end == begin)
        {
            fail("unexpected character");
        }
        value.type = Json::Type::Number;
        mAt += static_cast<size_t>(end - begin);
        return value;
    }

    static void appendUtf8(std::string& out, unsigned code)
    {
        if (code < 0x80)
        {
            out += static_cast<char>(code);
        }
        else if (code < 0x800)
        {
            out += static_cast<char>(0xC0 | (code >> 6));
            out += static_cast<char>(0x80 | (code & 0x3F));
        }
        else if (code < 0x10000)
        {
            out += static_cast<char>(0xE0 | (code >> 12));
            out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (code & 0x3F));
        }
        else
        {
            out += static_cast<char>(0xF0 | (code >> 18));
            out += static_cast<char>(0x80 | ((code >> 12) & 0x3F));
            out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (code & 0x3F));
        }
    }

    unsigned parseHex4()
    {
        if (mAt + 4 > mText.size())
        {
            fail("bad \\u escape");
        }
        unsigned code = static_cast<unsigned>(std::stoul(mText.substr(mAt, 4), nullptr, 16));
        mAt += 4;
        return code;
    }

    std::string parseString()
    {
        if (mAt >= mText.size() || mText[mAt] != '"')
        {
            fail("expected a string");
        }
        ++mAt;
        std::string out;
        while (mAt < mText.size() && mText[mAt] != '"')
        {
            char c = mText[mAt++];
            if (c != '\\')
            {
                out += c;
                continue;
            }
            if (mAt >= mText.size())
            {
                fail("unterminated string");
            }
            c = mText[mAt++];
            switch (c)
            {
            case 'n': out += '\n'; break;
            case 't': out += '\t'; break;
            case 'r': out += '\r'; break;
            case 'b': out += '\b'; break;
            case 'f': out += '\f'; break;
            case 'u':
            {
                unsigned code = parseHex4();
                if (code >= 0xD800 && code < 0xDC00 && consume("\\u"))
                {
                    code = 0x10000 + ((code - 0xD800) << 10) + (parseHex4() - 0xDC00);
                }
                appendUtf8(out, code);
                break;
            }
            default: out += c; // \" \\ \/
            }
        }
        if (mAt >= mText.size())
        {
            fail("unterminated string");
        }
        ++mAt;
        return out;
    }

    std::string const& mText;
    size_t mAt{0};
};
} // namespace detail

inline Json parseJson(std::string const& text)
{
    return detail::JsonParser(text).parseDocument();
}

inline Json readJsonFile(std::string const& path)
{
    std::ifstream file(path, std::ios::binary);
    if (!file)
    {
        throw std::runtime_error("cannot open " + path);
    }
    std::stringstream buffer;
    buffer << file.rdbuf();
    return parseJson(buffer.str());
}

//! A JSON string literal (UTF-8 passed through, control characters escaped).
inline std::string jsonQuote(std::string const& text)
{
    std::string out = "\"";
    for (char c : text)
    {
        switch (c)
        {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        default:
            if (static_cast<unsigned char>(c) < 0x20)
            {
                char escaped[8];
                std::snprintf(escaped, sizeof(escaped), "\\u%04x", static_cast<unsigned>(static_cast<unsigned char>(c)));
                out += escaped;
            }
            else
            {
                out += c;
            }
        }
    }
    return out + "\"";
}

//! The shortest text that reads back as the same double (integers without a fraction).
inline std::string jsonNumber(double value)
{
    if (!std::isfinite(value))
    {
        return "null";
    }
    char text[32];
    if (value == std::floor(value) && std::fabs(value) < 1e15)
    {
        std::snprintf(text, sizeof(text), "%lld", static_cast<long long>(value));
        return text;
    }
    for (int precision = 1; precision <= 17; ++precision)
    {
        std::snprintf(text, sizeof(text), "%.*g", precision, value);
        if (std::strtod(text, nullptr) == value)
        {
            break;
        }
    }
    return text;
}

inline std::string jsonDump(Json const& value)
{
    switch (value.type)
    {
    case Json::Type::Null: return "null";
    case Json::Type::Bool: return value.boolean ? "true" : "false";
    case Json::Type::Number: return jsonNumber(value.number);
    case Json::Type::String: return jsonQuote(value.string);
    case Json::Type::Array:
    {
        std::string out = "[";
        for (size_t i = 0; i < value.array.size(); ++i)
        {
            out += (i ? ", " : "") + jsonDump(value.array[i]);
        }
        return out + "]";
    }
    case Json::Type::Object:
    {
        std::string out = "{";
        for (size_t i = 0; i < value.object.size(); ++i)
        {
            out += (i ? ", " : "") + jsonQuote(value.object[i].first) + ": " + jsonDump(value.object[i].second);
        }
        return out + "}";
    }
    }
    return "null";
}

} // namespace sta_example
