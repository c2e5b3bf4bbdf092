// jinja2's filters and tests (the ones chat templates use, with jinja2 3.1's argument names and
// defaults), transformers' tojson, and the globals a chat template sees.
#include "template/builtins.h"

#include <algorithm>
#include <charconv>
#include <clocale>
#include <cmath>
#include <locale.h>
#include <time.h>

#include "template/error.h"
#include "template/interpreter.h"
#include "template/pystr.h"

namespace keel::tmpl {

namespace {

size_t py_len(const Value& v) {
  if (v.is_string()) return pystr::length(v.str());
  if (v.is_list()) return v.list().items.size();
  if (v.is_dict()) return v.dict().items.size();
  if (v.is_undefined()) return 0;
  Interpreter::type_error("object of type '" + v.type_name() + "' has no len()");
}

// jinja2's make_attrgetter: "a.b.0" looked up part by part with subscript semantics.
Value attr_path(Interpreter& in, const Value& item, const Value& attribute) {
  if (!attribute.is_string()) return in.getitem(item, attribute);
  Value cur = item;
  for (const std::string& part : pystr::split(attribute.str(), std::string("."), -1)) {
    bool digits = !part.empty() && std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; });
    int64_t index = INT64_MAX;  // digits beyond int64: an index no list reaches
    if (digits) std::from_chars(part.data(), part.data() + part.size(), index);
    cur = in.getitem(cur, digits ? Value(index) : Value(part));
  }
  return cur;
}

// The sort key jinja2 uses when case_sensitive is false: strings compared lowercased.
Value ignore_case(const Value& v, bool case_sensitive) {
  if (!case_sensitive && v.is_string()) return Value(pystr::lower(v.str()));
  return v;
}

void sort_values(Interpreter& in, std::vector<Value>& items, const std::function<Value(const Value&)>& key, bool reverse) {
  std::vector<std::pair<Value, Value>> keyed;
  for (auto& v : items) keyed.emplace_back(key(v), v);
  std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& x, const auto& y) {
    return reverse ? in.compare(y.first, x.first, "<") < 0 : in.compare(x.first, y.first, "<") < 0;
  });
  in.charge(keyed.size() * 4);
  for (size_t i = 0; i < items.size(); ++i) items[i] = keyed[i].second;
}

// select/reject/selectattr/rejectattr: the test named by the first extra argument (truthiness
// when none), applied to the item or to its attribute.
Value select_impl(Interpreter& in, const Value& seq, CallArgs& a, bool by_attr, bool keep_when, const char* name) {
  if (!seq.truthy()) return Value::make_list({});  // jinja2 iterates only `if seq`
  std::vector<Value> rest = a.positional;
  Value attribute;
  if (by_attr) {
    if (rest.empty()) Interpreter::type_error(std::string(name) + "() missing the attribute argument");
    attribute = rest.front();
    rest.erase(rest.begin());
  }
  std::string test;
  if (!rest.empty()) {
    if (!rest.front().is_string()) Interpreter::type_error(std::string(name) + "(): the test name must be a string");
    test = rest.front().str();
    rest.erase(rest.begin());
  }
  CallArgs test_args{rest, a.keyword};
  std::vector<Value> out;
  for (const Value& item : in.iterate(seq)) {
    Value subject = by_attr ? attr_path(in, item, attribute) : item;
    bool r = test.empty() ? subject.truthy() : in.apply_test(test, subject, test_args);
    if (r == keep_when) out.push_back(item);
  }
  return Value::make_list(std::move(out));
}

std::string soft_str(const Value& v) { return v.to_str(); }

std::unordered_map<std::string, FilterFn> make_filters() {
  std::unordered_map<std::string, FilterFn> f;
  f["tojson"] = [](Interpreter& in, const Value& v, CallArgs& a) {
    // transformers' tojson: json.dumps(x, ensure_ascii=False, indent=indent, separators=separators, sort_keys=sort_keys)
    ArgBinder b(a, {"ensure_ascii", "indent", "separators", "sort_keys"}, "tojson");
    std::optional<std::string> indent;
    if (const Value* i = b.get(1); i && !i->is_none()) {
      if (i->is_string()) indent = i->str();
      else if (i->is_number() && !i->is_float()) {
        in.check_size(uint64_t(std::max<int64_t>(0, i->as_int())));
        indent = std::string(size_t(std::max<int64_t>(0, i->as_int())), ' ');
      }
      else Interpreter::type_error("tojson: indent must be an int or a str");
    }
    std::string item_sep = indent ? "," : ", ", key_sep = ": ";
    if (const Value* s = b.get(2); s && !s->is_none()) {
      std::vector<Value> parts = in.iterate(*s);
      if (parts.size() != 2 || !parts[0].is_string() || !parts[1].is_string())
        Interpreter::type_error("tojson: separators must be a pair of strings");
      item_sep = parts[0].str();
      key_sep = parts[1].str();
    }
    bool ensure_ascii = b.get(0) && b.get(0)->truthy();
    bool sort_keys = b.get(3) && b.get(3)->truthy();
    return Value(to_json(in, v, ensure_ascii, indent, item_sep, key_sep, sort_keys));
  };
  f["length"] = f["count"] = [](Interpreter&, const Value& v, CallArgs& a) {
    ArgBinder b(a, {}, "length");
    return Value(int64_t(py_len(v)));
  };
  f["string"] = [](Interpreter&, const Value& v, CallArgs& a) {
    ArgBinder b(a, {}, "string");
    return Value(soft_str(v));
  };
  f["safe"] = f["string"];
  f["trim"] = [](Interpreter&, const Value& v, CallArgs& a) {
    ArgBinder b(a, {"chars"}, "trim");
    std::optional<std::string> chars;
    if (const Value* c = b.get(0); c && !c->is_none()) chars = c->to_str();
    return Value(pystr::strip(soft_str(v), chars, true, true));
  };
  f["lower"] = [](Interpreter&, const Value& v, CallArgs&) { return Value(pystr::lower(soft_str(v))); };
  f["upper"] = [](Interpreter&, const Value& v, CallArgs&) { return Value(pystr::upper(soft_str(v))); };
  f["title"] = [](Interpreter&, const Value& v, CallArgs&) {
    // jinja2's do_title, not str.title: words start after runs of "-", whitespace, "(", "{", "[", "<".
    std::string out;
    bool word_start = true;
    for (char32_t c : pystr::decode(soft_str(v))) {
      bool delimiter = c == '-' || c == '(' || c == '{' || c == '[' || c == '<' || pystr::is_space(c);
      std::string one;
      pystr::append_utf8(one, c);
      out += delimiter ? one : word_start ? pystr::upper(one) : pystr::lower(one);
      word_start = delimiter;
    }
    return Value(std::move(out));
  };
  f["capitalize"] = [](Interpreter&, const Value& v, CallArgs&) { return Value(pystr::capitalize(soft_str(v))); };
  f["replace"] = [](Interpreter& in, const Value& v, CallArgs& a) {
    ArgBinder b(a, {"old", "new", "count"}, "replace");
    if (!b.get(0) || !b.get(1)) Interpreter::type_error("replace() needs old and new");
    int64_t count = b.get(2) && !b.get(2)->is_none() ? b.get(2)->as_int() : -1;
    const std::string s = soft_str(v), old = b.get(0)->to_str(), with = b.get(1)->to_str();
    in.check_size(pystr::replace_size_bound(s, old, with, count));
    std::string r = pystr::replace(s, old, with, count);
    in.check_size(r.size());
    return Value(std::move(r));
  };
  f["default"] = f["d"] = [](Interpreter&, const Value& v, CallArgs& a) {
    ArgBinder b(a, {"default_value", "boolean"}, "default");
    bool boolean = b.get(1) && b.get(1)->truthy();
    if (v.is_undefined() || (boolean && !v.truthy())) return b.get_or(0, Value(""));
    return v;
  };
  f["join"] = [](Interpreter& in, const Value& v, CallArgs& a) {
    ArgBinder b(a, {"d", "attribute"}, "join");
    std::string sep = b.get(0) ? b.get(0)->to_str() : "";
    std::string out;
    bool first = true;
    for (const Value& item : in.iterate(v)) {
      if (!first) out += sep;
      first = false;
      out += (b.get(1) && !b.get(1)->is_none()) ? attr_path(in, item, *b.get(1)).to_str() : item.to_str();
      in.check_size(out.size());
    }
    return Value(std::move(out));
  };
  f["items"] = [](Interpreter& in, const Value& v, CallArgs& a) {
    ArgBinder b(a, {}, "items");
    if (v.is_undefined()) return Value::make_list({});
    if (!v.is_dict()) Interpreter::type_error("Can only get item pairs from a mapping.");
    std::vector<Value> out;
    for (const auto& [k, val] : v.dict().items) out.push_back(Value::make_list({k, val}, true));
    in.charge(out.size());
    return Value::make_list(std::move(out));
  };
  f["list"] = [](Interpreter& in, const Value& v, CallArgs& a) {
    ArgBinder b(a, {}, "list");
    return Value::make_list(in.iterate(v));
  };
  f["first"] = [](Interpreter& in, const Value& v, CallArgs&) {
    std::vector<Value> items = in.iterate(v);
    return items.empty() ? Value(Undefined{"the first item of an empty sequence"}) : items.front();
  };
  f["last"] = [](Interpreter& in, const Value& v, CallArgs&) {
    std::vector<Value> items = in.iterate(v);
    return items.empty() ? Value(Undefined{"the last item of an empty sequence"}) : items.back();
  };
  f["reverse"] = [](Interpreter& in, const Value& v, CallArgs&) {
    if (v.is_string()) {
      std::vector<char32_t> cps = pystr::decode(v.str());
      std::reverse(cps.begin(), cps.end());
      return Value(pystr::encode(cps, 0, cps.size()));
    }
    std::vector<Value> items = in.iterate(v);
    std::reverse(items.begin(), items.end());
    return Value::make_list(std::move(items));
  };
  f["sort"] = [](Interpreter& in, const Value& v, CallArgs& a) {
    ArgBinder b(a, {"reverse", "case_sensitive", "attribute"}, "sort");
    std::vector<Value> items = in.iterate(v);
    bool cs = b.get(1) && b.get(1)->truthy();
    const Value* attribute = b.get(2) && !b.get(2)->is_none() ? b.get(2) : nullptr;
    sort_values(in, items, [&](const Value& x) { return ignore_case(attribute ? attr_path(in, x, *attribute) : x, cs); },
                b.get(0) && b.get(0)->truthy());
    return Value::make_list(std::move(items));
  };
  f["dictsort"] = [](Interpreter& in, const Value& v, CallArgs& a) {
    ArgBinder b(a, {"case_sensitive", "by", "reverse"}, "dictsort");
    if (!v.is_dict()) Interpreter::type_error("dictsort: can only sort a mapping");
    bool cs = b.get(0) && b.get(0)->truthy();
    std::string by = b.get(1) ? b.get(1)->to_str() : "key";
    if (by != "key" && by != "value") throw TemplateError(ErrorType::runtime, "You can only sort by either 'key' or 'value'");
    std::vector<Value> items;
    for (const auto& [k, val] : v.dict().items) items.push_back(Value::make_list({k, val}, true));
    size_t pos = by == "key" ? 0 : 1;
    sort_values(in, items, [&](const Value& x) { return ignore_case(x.list().items[pos], cs); }, b.get(2) && b.get(2)->truthy());
    return Value::make_list(std::move(items));
  };
  f["unique"] = [](Interpreter& in, const Value& v, CallArgs& a) {
    ArgBinder b(a, {"case_sensitive", "attribute"}, "unique");
    bool cs = b.get(0) && b.get(0)->truthy();
    const Value* attribute = b.get(1) && !b.get(1)->is_none() ? b.get(1) : nullptr;
    std::vector<Value> seen, out;
    for (const Value& item : in.iterate(v)) {
      Value key = ignore_case(attribute ? attr_path(in, item, *attribute) : item, cs);
      bool dup = false;
      for (const Value& s : seen) dup = dup || s.equals(key);
      in.charge(seen.size());
      if (dup) continue;
      seen.push_back(key);
      out.push_back(item);
    }
    return Value::make_list(std::move(out));
  };
  f["map"] = [](Interpreter& in, const Value& v, CallArgs& a) {
    std::vector<Value> out;
    if (!v.truthy()) return Value::make_list({});  // jinja2 iterates only `if seq`
    const Value* attribute = nullptr;
    Value fallback;
    bool has_default = false;
    for (const auto& [k, val] : a.keyword) {
      if (k == "attribute") attribute = &val;
      else if (k == "default") fallback = val, has_default = true;
    }
    if (attribute) {
      for (const Value& item : in.iterate(v)) {
        Value r = attr_path(in, item, *attribute);
        out.push_back(r.is_undefined() && has_default ? fallback : r);
      }
      return Value::make_list(std::move(out));
    }
    if (a.positional.empty() || !a.positional.front().is_string()) Interpreter::type_error("map: give a filter name or attribute=");
    std::string filter = a.positional.front().str();
    CallArgs rest{std::vector<Value>(a.positional.begin() + 1, a.positional.end()), a.keyword};
    for (const Value& item : in.iterate(v)) {
      CallArgs copy = rest;
      out.push_back(in.apply_filter(filter, item, copy));
    }
    return Value::make_list(std::move(out));
  };
  f["select"] = [](Interpreter& in, const Value& v, CallArgs& a) { return select_impl(in, v, a, false, true, "select"); };
  f["reject"] = [](Interpreter& in, const Value& v, CallArgs& a) { return select_impl(in, v, a, false, false, "reject"); };
  f["selectattr"] = [](Interpreter& in, const Value& v, CallArgs& a) { return select_impl(in, v, a, true, true, "selectattr"); };
  f["rejectattr"] = [](Interpreter& in, const Value& v, CallArgs& a) { return select_impl(in, v, a, true, false, "rejectattr"); };
  f["attr"] = [](Interpreter& in, const Value& v, CallArgs& a) {
    ArgBinder b(a, {"name"}, "attr");
    if (!b.get(0) || !b.get(0)->is_string()) Interpreter::type_error("attr: name must be a string");
    return in.getattr(v, b.get(0)->str());
  };
  f["int"] = [](Interpreter&, const Value& v, CallArgs& a) {
    ArgBinder b(a, {"default", "base"}, "int");
    Value fallback = b.get_or(0, Value(int64_t(0)));
    if (v.is_undefined()) Interpreter::undefined_error(v);
    if (v.is_float() && std::isnan(v.as_double())) return fallback;  // int(nan) is a ValueError: the default
    if (v.is_number()) return v.is_float() ? Value(python_int(v.as_double())) : Value(v.as_int());
    if (v.is_string()) {
      std::string s = pystr::strip(v.str(), std::nullopt, true, true);
      try {
        size_t used = 0;
        int64_t r = std::stoll(s, &used, int(b.get(1) ? b.get(1)->as_int() : 10));
        if (used == s.size()) return Value(r);
        double d = std::stod(s, &used);
        if (used == s.size() && std::isfinite(d)) return Value(python_int(d));
      } catch (const std::exception&) {
      }
    }
    return fallback;
  };
  f["float"] = [](Interpreter&, const Value& v, CallArgs& a) {
    ArgBinder b(a, {"default"}, "float");
    if (v.is_undefined()) Interpreter::undefined_error(v);
    if (v.is_number()) return Value(v.as_double());
    if (v.is_string()) {
      try {
        size_t used = 0;
        std::string s = pystr::strip(v.str(), std::nullopt, true, true);
        double d = std::stod(s, &used);
        if (used == s.size()) return Value(d);
      } catch (const std::exception&) {
      }
    }
    return b.get_or(0, Value(0.0));
  };
  f["abs"] = [](Interpreter&, const Value& v, CallArgs&) {
    if (!v.is_number()) Interpreter::type_error("bad operand type for abs(): '" + v.type_name() + "'");
    if (v.is_float()) return Value(std::fabs(v.as_double()));
    if (v.as_int() == INT64_MIN) throw TemplateError(ErrorType::limit, "integer overflow");
    return Value(v.as_int() < 0 ? -v.as_int() : v.as_int());
  };
  f["round"] = [](Interpreter&, const Value& v, CallArgs& a) {
    ArgBinder b(a, {"precision", "method"}, "round");
    if (!v.is_number()) Interpreter::type_error("round: a number is required");
    int64_t precision = b.get(0) ? b.get(0)->as_int() : 0;
    std::string method = b.get(1) ? b.get(1)->to_str() : "common";
    double scale = std::pow(10.0, double(precision));
    double x = v.as_double() * scale;
    double r = method == "ceil" ? std::ceil(x) : method == "floor" ? std::floor(x) : std::round(x);
    return Value(r / scale);
  };
  f["sum"] = [](Interpreter& in, const Value& v, CallArgs& a) {
    ArgBinder b(a, {"attribute", "start"}, "sum");
    Value total = b.get_or(1, Value(int64_t(0)));
    for (const Value& item : in.iterate(v))
      total = arithmetic(in, "+", total, b.get(0) && !b.get(0)->is_none() ? attr_path(in, item, *b.get(0)) : item);
    return total;
  };
  f["min"] = f["max"] = nullptr;  // set below (need the name)
  for (const char* which : {"min", "max"}) {
    bool is_max = std::string(which) == "max";
    f[which] = [is_max](Interpreter& in, const Value& v, CallArgs& a) {
      ArgBinder b(a, {"case_sensitive", "attribute"}, is_max ? "max" : "min");
      bool cs = b.get(0) && b.get(0)->truthy();
      std::vector<Value> items = in.iterate(v);
      if (items.empty()) return Value(Undefined{"the extreme of an empty sequence"});
      size_t best = 0;
      auto key = [&](const Value& x) { return ignore_case(b.get(1) ? attr_path(in, x, *b.get(1)) : x, cs); };
      for (size_t i = 1; i < items.size(); ++i) {
        int c = in.compare(key(items[i]), key(items[best]), "<");
        if (is_max ? c > 0 : c < 0) best = i;
      }
      return items[best];
    };
  }
  f["indent"] = [](Interpreter& in, const Value& v, CallArgs& a) {
    ArgBinder b(a, {"width", "first", "blank"}, "indent");
    std::string pad(4, ' ');
    if (b.get(0) && b.get(0)->is_string()) {
      pad = b.get(0)->str();
    } else if (b.get(0)) {
      const int64_t width = std::max<int64_t>(0, b.get(0)->as_int());
      in.check_size(uint64_t(width));
      pad.assign(size_t(width), ' ');
    }
    bool first = b.get(1) && b.get(1)->truthy();
    bool blank = b.get(2) && b.get(2)->truthy();
    std::string s = soft_str(v) + "\n";
    std::vector<std::string> lines;
    size_t start = 0;
    for (size_t i = 0; i < s.size(); ++i) {
      if (s[i] == '\n' || s[i] == '\r') {
        lines.push_back(s.substr(start, i - start));
        if (s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n') ++i;
        start = i + 1;
      }
    }
    if (start < s.size()) lines.push_back(s.substr(start));
    in.check_size(s.size() + uint64_t(lines.size() + 1) * pad.size());  // before building: every line padded
    std::string rv;
    for (size_t i = 0; i < lines.size(); ++i) {
      if (i) rv += "\n";
      if (i > 0 && (blank || !lines[i].empty())) rv += pad;
      rv += lines[i];
    }
    if (first) rv = pad + rv;
    in.check_size(rv.size());
    return Value(std::move(rv));
  };
  f["wordcount"] = [](Interpreter&, const Value& v, CallArgs&) {
    // jinja2 counts runs of \w (letters, digits, underscore).
    int64_t words = 0;
    bool in_word = false;
    for (char32_t c : pystr::decode(soft_str(v))) {
      bool w = c == '_' || (c >= '0' && c <= '9') || ((c | 32) >= 'a' && (c | 32) <= 'z') || (c >= 0x80 && !pystr::is_space(c));
      if (w && !in_word) ++words;
      in_word = w;
    }
    return Value(words);
  };
  f["format"] = [](Interpreter& in, const Value& v, CallArgs& a) {
    Value args = a.positional.size() == 1 ? a.positional[0] : Value::make_list(a.positional, true);
    if (a.positional.size() == 1 && !(args.is_list() && args.list().tuple)) args = Value::make_list({args}, true);
    return arithmetic(in, "%", Value(soft_str(v)), args);
  };
  f["e"] = f["escape"] = f["forceescape"] = [](Interpreter&, const Value& v, CallArgs&) {
    std::string out;
    for (char c : soft_str(v)) {
      switch (c) {
        case '&': out += "&amp;"; break;
        case '<': out += "&lt;"; break;
        case '>': out += "&gt;"; break;
        case '"': out += "&#34;"; break;
        case '\'': out += "&#39;"; break;
        default: out.push_back(c);
      }
    }
    return Value(std::move(out));
  };
  f["center"] = [](Interpreter& in, const Value& v, CallArgs& a) {
    ArgBinder b(a, {"width"}, "center");
    std::string s = soft_str(v);
    int64_t width = b.get(0) ? b.get(0)->as_int() : 80;
    int64_t n = int64_t(pystr::length(s));
    if (width <= n) return Value(s);
    in.check_size(s.size() + uint64_t(width - n));
    int64_t total = width - n, left = total / 2 + (total & width & 1);
    return Value(std::string(size_t(left), ' ') + s + std::string(size_t(total - left), ' '));
  };
  return f;
}

bool is_true_bool(const Value& v, bool which) { return v.is_bool() && v.as_bool() == which; }

std::unordered_map<std::string, TestFn> make_tests() {
  std::unordered_map<std::string, TestFn> t;
  auto arg0 = [](CallArgs& a, const char* name) -> const Value& {
    if (a.positional.empty()) Interpreter::type_error(std::string(name) + "() missing required argument");
    return a.positional[0];
  };
  t["defined"] = [](Interpreter&, const Value& v, CallArgs&) { return !v.is_undefined(); };
  t["undefined"] = [](Interpreter&, const Value& v, CallArgs&) { return v.is_undefined(); };
  t["none"] = [](Interpreter&, const Value& v, CallArgs&) { return v.is_none(); };
  t["string"] = [](Interpreter&, const Value& v, CallArgs&) { return v.is_string(); };
  t["number"] = [](Interpreter&, const Value& v, CallArgs&) { return v.is_number(); };
  t["integer"] = [](Interpreter&, const Value& v, CallArgs&) { return v.is_int(); };
  t["float"] = [](Interpreter&, const Value& v, CallArgs&) { return v.is_float(); };
  t["boolean"] = [](Interpreter&, const Value& v, CallArgs&) { return v.is_bool(); };
  t["true"] = [](Interpreter&, const Value& v, CallArgs&) { return is_true_bool(v, true); };
  t["false"] = [](Interpreter&, const Value& v, CallArgs&) { return is_true_bool(v, false); };
  t["mapping"] = [](Interpreter&, const Value& v, CallArgs&) { return v.is_dict(); };
  t["iterable"] = [](Interpreter&, const Value& v, CallArgs&) {
    return v.is_list() || v.is_dict() || v.is_string() || v.is_undefined();
  };
  t["sequence"] = t["iterable"];
  t["callable"] = [](Interpreter&, const Value& v, CallArgs&) { return v.is_function(); };
  t["eq"] = t["equalto"] = t["=="] = [arg0](Interpreter&, const Value& v, CallArgs& a) { return v.equals(arg0(a, "eq")); };
  t["ne"] = t["!="] = [arg0](Interpreter&, const Value& v, CallArgs& a) { return !v.equals(arg0(a, "ne")); };
  t["lt"] = t["lessthan"] = t["<"] = [arg0](Interpreter& in, const Value& v, CallArgs& a) { return in.compare(v, arg0(a, "lt"), "<") < 0; };
  t["le"] = t["<="] = [arg0](Interpreter& in, const Value& v, CallArgs& a) { return in.compare(v, arg0(a, "le"), "<=") <= 0; };
  t["gt"] = t["greaterthan"] = t[">"] = [arg0](Interpreter& in, const Value& v, CallArgs& a) { return in.compare(v, arg0(a, "gt"), ">") > 0; };
  t["ge"] = t[">="] = [arg0](Interpreter& in, const Value& v, CallArgs& a) { return in.compare(v, arg0(a, "ge"), ">=") >= 0; };
  t["in"] = [arg0](Interpreter& in, const Value& v, CallArgs& a) { return in.contains(arg0(a, "in"), v); };
  t["sameas"] = [arg0](Interpreter&, const Value& v, CallArgs& a) { return v.identical(arg0(a, "sameas")); };
  auto int_of = [](const Value& v) {
    if (!v.is_number()) Interpreter::type_error("an integer is required, got " + v.type_name());
    return v.is_float() ? python_int(v.as_double()) : v.as_int();
  };
  // jinja2: value % 2 == 1 / == 0, with Python's modulo (so 0.1 is neither odd nor even).
  t["odd"] = [](Interpreter& in, const Value& v, CallArgs&) { return arithmetic(in, "%", v, Value(2)).equals(Value(1)); };
  t["even"] = [](Interpreter& in, const Value& v, CallArgs&) { return arithmetic(in, "%", v, Value(2)).equals(Value(0)); };
  t["divisibleby"] = [int_of, arg0](Interpreter&, const Value& v, CallArgs& a) {
    int64_t d = int_of(arg0(a, "divisibleby"));
    if (d == 0) throw TemplateError(ErrorType::type, "integer division or modulo by zero");
    return int_of(v) % d == 0;
  };
  t["lower"] = [](Interpreter&, const Value& v, CallArgs&) {
    std::string s = v.to_str();
    return pystr::lower(s) == s && pystr::upper(s) != s;
  };
  t["upper"] = [](Interpreter&, const Value& v, CallArgs&) {
    std::string s = v.to_str();
    return pystr::upper(s) == s && pystr::lower(s) != s;
  };
  t["filter"] = [](Interpreter&, const Value& v, CallArgs&) { return v.is_string() && find_filter(v.str()) != nullptr; };
  t["test"] = [](Interpreter&, const Value& v, CallArgs&) { return v.is_string() && find_test(v.str()) != nullptr; };
  t["escaped"] = [](Interpreter&, const Value&, CallArgs&) { return false; };
  return t;
}

const std::unordered_map<std::string, FilterFn>& filters() {
  static const auto table = make_filters();
  return table;
}
const std::unordered_map<std::string, TestFn>& tests() {
  static const auto table = make_tests();
  return table;
}

}  // namespace

const FilterFn* find_filter(const std::string& name) {
  auto it = filters().find(name);
  return it == filters().end() ? nullptr : &it->second;
}

const TestFn* find_test(const std::string& name) {
  auto it = tests().find(name);
  return it == tests().end() ? nullptr : &it->second;
}

bool is_known_filter(const std::string& name) {
  // jinja2's built-in filters keel does not implement still compile; they fail when reached.
  static const char* const other[] = {"batch", "filesizeformat", "groupby", "pprint", "random", "slice",
                                      "striptags", "truncate", "urlencode", "urlize", "wordwrap", "xmlattr"};
  if (find_filter(name)) return true;
  for (const char* o : other)
    if (name == o) return true;
  return false;
}

bool is_known_test(const std::string& name) { return find_test(name) != nullptr; }

std::unordered_map<std::string, Value> builtin_globals() {
  std::unordered_map<std::string, Value> g;
  g["raise_exception"] = Value::make_function("raise_exception", [](Interpreter&, CallArgs& a) -> Value {
    ArgBinder b(a, {"message"}, "raise_exception");
    throw TemplateError(ErrorType::raised, b.get(0) ? b.get(0)->to_str() : "");
  });
  g["strftime_now"] = Value::make_function("strftime_now", [](Interpreter& in, CallArgs& a) -> Value {
    ArgBinder b(a, {"format"}, "strftime_now");
    if (!b.get(0) || !b.get(0)->is_string()) Interpreter::type_error("strftime_now() argument must be str");
    static const locale_t c_locale = newlocale(LC_ALL_MASK, "C", static_cast<locale_t>(0));
    const std::string& fmt = b.get(0)->str();
    if (fmt.empty()) return Value("");
    std::string buf(fmt.size() * 8 + 64, '\0');
    size_t n = strftime_l(buf.data(), buf.size(), fmt.c_str(), &in.now(), c_locale);
    if (n == 0) throw TemplateError(ErrorType::type, "strftime_now: format too long");
    buf.resize(n);
    return Value(std::move(buf));
  });
  g["range"] = Value::make_function("range", [](Interpreter& in, CallArgs& a) -> Value {
    ArgBinder b(a, {"start", "stop", "step"}, "range");
    auto as_int = [](const Value* v) {
      if (!v->is_number() || v->is_float()) Interpreter::type_error("range() arguments must be integers");
      return v->as_int();
    };
    if (!b.get(0)) Interpreter::type_error("range expected at least 1 argument");
    int64_t start = 0, stop, step = 1;
    if (!b.get(1)) {
      stop = as_int(b.get(0));
    } else {
      start = as_int(b.get(0));
      stop = as_int(b.get(1));
      if (b.get(2)) step = as_int(b.get(2));
    }
    if (step == 0) Interpreter::type_error("range() arg 3 must not be zero");
    // In 128 bits: stop - start and the rounding overflow int64 near its ends.
    const __int128 span = step > 0 ? __int128(stop) - start : __int128(start) - stop;
    const __int128 stride = step > 0 ? __int128(step) : -__int128(step);
    const __int128 count128 = span > 0 ? (span + stride - 1) / stride : 0;
    if (count128 > in.limits().max_range)
      throw TemplateError(ErrorType::limit, "range() of " +
                                                (count128 > INT64_MAX ? std::string("more than 2**63") : std::to_string(int64_t(count128))) +
                                                " items is above the limit of " + std::to_string(in.limits().max_range));
    const int64_t count = int64_t(count128);
    std::vector<Value> out;
    for (int64_t i = 0; i < count; ++i) out.emplace_back(int64_t(start + __int128(i) * step));  // inside [start, stop)
    in.charge(out.size());
    return Value::make_list(std::move(out));
  });
  g["namespace"] = Value::make_function("namespace", [](Interpreter& in, CallArgs& a) -> Value {
    NamespacePtr ns = in.new_namespace();
    // Namespace::set scans: an index keeps namespace(a_large_dict) linear.
    std::unordered_map<std::string, size_t> at;
    auto set = [&](std::string name, const Value& v) {
      auto [it, fresh] = at.emplace(name, ns->attrs.size());
      if (fresh) ns->attrs.emplace_back(std::move(name), v);
      else ns->attrs[it->second].second = v;
    };
    for (const Value& p : a.positional) {
      if (!p.is_dict()) Interpreter::type_error("namespace() takes a mapping or keyword arguments");
      in.charge(p.dict().items.size());
      for (const auto& [k, v] : p.dict().items) set(k.to_str(), v);
    }
    for (const auto& [k, v] : a.keyword) set(k, v);
    return Value(std::move(ns));
  });
  g["dict"] = Value::make_function("dict", [](Interpreter& in, CallArgs& a) -> Value {
    Value d = Value::make_dict();
    for (const Value& p : a.positional) {
      if (!p.is_dict()) Interpreter::type_error("dict() takes a mapping or keyword arguments");
      in.charge(p.dict().items.size());
      if (d.dict().items.empty()) {  // a copy: its keys are unique already (Dict::set would scan)
        d.dict().items = p.dict().items;
        d.dict().depth = p.dict().depth;
        continue;
      }
      for (const auto& [k, v] : p.dict().items) d.dict().set(k, v);
    }
    for (const auto& [k, v] : a.keyword) d.dict().set(Value(k), v);
    return d;
  });
  return g;
}

}  // namespace keel::tmpl
