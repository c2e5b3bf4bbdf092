// What a template can call: jinja2's filters and tests, the globals Hugging Face adds
// (raise_exception, strftime_now, transformers' tojson), and Python's methods on str/dict/list.
#pragma once
#include <functional>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "template/value.h"

namespace keel::tmpl {

using FilterFn = std::function<Value(Interpreter&, const Value&, CallArgs&)>;
using TestFn = std::function<bool(Interpreter&, const Value&, CallArgs&)>;

const FilterFn* find_filter(const std::string& name);  // null when jinja2+transformers lack it
const TestFn* find_test(const std::string& name);
bool is_known_filter(const std::string& name);  // includes jinja2 filters keel does not implement
bool is_known_test(const std::string& name);

std::unordered_map<std::string, Value> builtin_globals();

// obj.name as a bound method (str.strip, dict.items, ...), Undefined when there is none.
// Throws TemplateError(security) for methods the immutable sandbox refuses (list.append, ...).
Value bound_method(Interpreter& in, const Value& obj, const std::string& name);

// Python's json.dumps(v, ensure_ascii, indent, separators, sort_keys). indent: nullopt = None.
std::string to_json(Interpreter& in, const Value& v, bool ensure_ascii, const std::optional<std::string>& indent,
                    const std::string& item_sep, const std::string& key_sep, bool sort_keys);

// Binds call arguments to named parameters as Python does (positionals first, then keywords);
// TypeError on too many or unknown arguments.
class ArgBinder {
 public:
  ArgBinder(const CallArgs& args, std::vector<std::string> names, const std::string& function, bool allow_extra = false);
  const Value* get(size_t i) const { return values_[i] ? &*values_[i] : nullptr; }
  Value get_or(size_t i, Value fallback) const { return values_[i] ? *values_[i] : std::move(fallback); }
  std::vector<Value> extra_positional;  // beyond the named parameters (only if allow_extra)

 private:
  std::vector<std::optional<Value>> values_;
};

}  // namespace keel::tmpl
