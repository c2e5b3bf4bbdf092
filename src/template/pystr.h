// Python's str semantics over UTF-8 bytes: strings are sequences of code points (len, index,
// slice), whitespace is str.isspace's set, repr and json.dumps quote as CPython does.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace keel::tmpl::pystr {

std::vector<char32_t> decode(std::string_view s);  // invalid bytes map to U+FFFD
std::string encode(const std::vector<char32_t>& cps, size_t begin, size_t end);
void append_utf8(std::string& out, char32_t cp);
size_t length(std::string_view s);  // code points

bool is_space(char32_t c);  // str.isspace
bool is_printable(char32_t c);  // str.isprintable (approximation: control, format, separators)

// strip/lstrip/rstrip: with no chars, Python whitespace; otherwise any code point of chars.
std::string strip(std::string_view s, const std::optional<std::string>& chars, bool left, bool right);
// str.split(sep=None, maxsplit=-1) and str.rsplit.
std::vector<std::string> split(std::string_view s, const std::optional<std::string>& sep, int64_t maxsplit);
std::vector<std::string> rsplit(std::string_view s, const std::optional<std::string>& sep, int64_t maxsplit);
std::string replace(std::string_view s, std::string_view old, std::string_view with, int64_t count);
// An upper bound of replace(s, old, with, count).size(), to check before building it.
uint64_t replace_size_bound(std::string_view s, std::string_view old, std::string_view with, int64_t count);
std::string lower(std::string_view s);
std::string upper(std::string_view s);
std::string title(std::string_view s);
std::string capitalize(std::string_view s);

std::string repr(std::string_view s);  // 'abc' with Python's quoting and escapes
// json.dumps string escaping with ensure_ascii (\uXXXX for non-ASCII) or not.
std::string json_quote(std::string_view s, bool ensure_ascii);

}  // namespace keel::tmpl::pystr
