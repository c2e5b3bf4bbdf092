// Python's methods on values, its arithmetic operators and json.dumps, as templates see them.
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "template/builtins.h"
#include "template/error.h"
#include "template/interpreter.h"
#include "template/pystr.h"

namespace keel::tmpl {

ArgBinder::ArgBinder(const CallArgs& args, std::vector<std::string> names, const std::string& function, bool allow_extra)
    : values_(names.size()) {
  for (size_t i = 0; i < args.positional.size(); ++i) {
    if (i < names.size()) values_[i] = args.positional[i];
    else if (allow_extra) extra_positional.push_back(args.positional[i]);
    else Interpreter::type_error(function + "() takes at most " + std::to_string(names.size()) + " arguments");
  }
  for (const auto& [k, v] : args.keyword) {
    auto it = std::find(names.begin(), names.end(), k);
    if (it == names.end()) Interpreter::type_error(function + "() got an unexpected keyword argument '" + k + "'");
    size_t i = size_t(it - names.begin());
    if (values_[i]) Interpreter::type_error(function + "() got multiple values for argument '" + k + "'");
    values_[i] = v;
  }
}

namespace {

std::optional<std::string> opt_str(const ArgBinder& a, size_t i, const char* fn) {
  const Value* v = a.get(i);
  if (!v || v->is_none()) return std::nullopt;
  if (!v->is_string()) Interpreter::type_error(std::string(fn) + " arg must be None or str");
  return v->str();
}

int64_t opt_int(const ArgBinder& a, size_t i, int64_t fallback) {
  const Value* v = a.get(i);
  if (!v || v->is_none()) return fallback;
  if (!v->is_number() || v->is_float()) Interpreter::type_error("an integer is required, got " + v->type_name());
  return v->as_int();
}

Value str_list(const std::vector<std::string>& parts) {
  std::vector<Value> items;
  for (const auto& p : parts) items.emplace_back(p);
  return Value::make_list(std::move(items));
}

// startswith/endswith accept a str or a tuple of str.
bool affix_match(const std::string& s, const Value& affix, bool prefix) {
  auto one = [&](const Value& a) {
    if (!a.is_string()) Interpreter::type_error("startswith/endswith first arg must be str or a tuple of str");
    const std::string& x = a.str();
    if (x.size() > s.size()) return false;
    return prefix ? s.compare(0, x.size(), x) == 0 : s.compare(s.size() - x.size(), x.size(), x) == 0;
  };
  if (affix.is_list() && affix.list().tuple) {
    for (const Value& a : affix.list().items)
      if (one(a)) return true;
    return false;
  }
  return one(affix);
}

using Method = std::function<Value(Interpreter&, CallArgs&)>;

// `self` (a string) is captured by the bound method as a Value: sharing the bytes, not copying them.
Value string_method(const Value& self, const std::string& name) {
  auto make = [&](Method m) { return Value::make_function("str." + name, std::move(m)); };
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    bool left = name != "rstrip", right = name != "lstrip";
    return make([self, left, right, name](Interpreter&, CallArgs& a) {
      const std::string& s = self.str();
      ArgBinder b(a, {"chars"}, name);
      return Value(pystr::strip(s, opt_str(b, 0, name.c_str()), left, right));
    });
  }
  if (name == "split" || name == "rsplit") {
    return make([self, name](Interpreter& in, CallArgs& a) {
      const std::string& s = self.str();
      ArgBinder b(a, {"sep", "maxsplit"}, name);
      std::optional<std::string> sep = opt_str(b, 0, name.c_str());
      if (sep && sep->empty()) throw TemplateError(ErrorType::type, "empty separator");
      int64_t maxsplit = opt_int(b, 1, -1);
      auto parts = name == "split" ? pystr::split(s, sep, maxsplit) : pystr::rsplit(s, sep, maxsplit);
      in.charge(parts.size());
      return str_list(parts);
    });
  }
  if (name == "startswith" || name == "endswith") {
    return make([self, name](Interpreter&, CallArgs& a) {
      const std::string& s = self.str();
      ArgBinder b(a, {"prefix", "start", "end"}, name);
      if (!b.get(0)) Interpreter::type_error(name + "() takes at least 1 argument");
      std::string sub = s;
      if (b.get(1) || b.get(2)) {
        std::vector<char32_t> cps = pystr::decode(s);
        int64_t n = int64_t(cps.size());
        auto norm = [&](int64_t x) { return std::clamp<int64_t>(x < 0 ? x + n : x, 0, n); };
        int64_t st = norm(opt_int(b, 1, 0)), en = norm(opt_int(b, 2, n));
        sub = st < en ? pystr::encode(cps, size_t(st), size_t(en)) : "";
      }
      return Value(affix_match(sub, *b.get(0), name == "startswith"));
    });
  }
  if (name == "replace") {
    return make([self](Interpreter& in, CallArgs& a) {
      const std::string& s = self.str();
      ArgBinder b(a, {"old", "new", "count"}, "replace");
      if (!b.get(0) || !b.get(1) || !b.get(0)->is_string() || !b.get(1)->is_string())
        Interpreter::type_error("replace() arguments must be str");
      const int64_t count = opt_int(b, 2, -1);
      in.check_size(pystr::replace_size_bound(s, b.get(0)->str(), b.get(1)->str(), count));
      std::string r = pystr::replace(s, b.get(0)->str(), b.get(1)->str(), count);
      in.check_size(r.size());
      return Value(std::move(r));
    });
  }
  if (name == "lower" || name == "upper" || name == "title" || name == "capitalize") {
    return make([self, name](Interpreter&, CallArgs& a) {
      const std::string& s = self.str();
      ArgBinder b(a, {}, name);
      if (name == "lower") return Value(pystr::lower(s));
      if (name == "upper") return Value(pystr::upper(s));
      if (name == "title") return Value(pystr::title(s));
      return Value(pystr::capitalize(s));
    });
  }
  if (name == "find" || name == "rfind" || name == "index" || name == "rindex" || name == "count") {
    return make([self, name](Interpreter&, CallArgs& a) {
      const std::string& s = self.str();
      ArgBinder b(a, {"sub"}, name);
      if (!b.get(0) || !b.get(0)->is_string()) Interpreter::type_error(name + "() argument must be str");
      const std::string& sub = b.get(0)->str();
      if (name == "count") {
        if (sub.empty()) return Value(int64_t(pystr::length(s) + 1));
        int64_t n = 0;
        for (size_t p = s.find(sub); p != std::string::npos; p = s.find(sub, p + sub.size())) ++n;
        return Value(n);
      }
      size_t at = (name == "find" || name == "index") ? s.find(sub) : s.rfind(sub);
      if (at == std::string::npos) {
        if (name == "index" || name == "rindex") throw TemplateError(ErrorType::type, "substring not found");
        return Value(int64_t(-1));
      }
      return Value(int64_t(pystr::length(std::string_view(s).substr(0, at))));
    });
  }
  if (name == "join") {
    return make([self](Interpreter& in, CallArgs& a) {
      const std::string& s = self.str();
      ArgBinder b(a, {"iterable"}, "join");
      if (!b.get(0)) Interpreter::type_error("join() takes exactly one argument");
      std::string out;
      bool first = true;
      for (const Value& v : in.iterate(*b.get(0))) {
        if (!v.is_string()) Interpreter::type_error("sequence item: expected str instance, " + v.type_name() + " found");
        if (!first) out += s;
        first = false;
        out += v.str();
        in.check_size(out.size());
      }
      return Value(std::move(out));
    });
  }
  if (name == "splitlines") {
    return make([self](Interpreter&, CallArgs& a) {
      const std::string& s = self.str();
      ArgBinder b(a, {"keepends"}, "splitlines");
      bool keep = b.get(0) && b.get(0)->truthy();
      std::vector<std::string> lines;
      size_t i = 0, start = 0;
      while (i < s.size()) {
        if (s[i] == '\n' || s[i] == '\r') {
          size_t end = i;
          size_t next = (s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n') ? i + 2 : i + 1;
          lines.push_back(s.substr(start, (keep ? next : end) - start));
          start = i = next;
        } else {
          ++i;
        }
      }
      if (start < s.size()) lines.push_back(s.substr(start));
      return str_list(lines);
    });
  }
  if (name == "isdigit" || name == "isalpha" || name == "isalnum" || name == "isspace" || name == "islower" || name == "isupper") {
    return make([self, name](Interpreter&, CallArgs& a) {
      const std::string& s = self.str();
      ArgBinder b(a, {}, name);
      std::vector<char32_t> cps = pystr::decode(s);
      if (cps.empty()) return Value(false);
      if (name == "islower" || name == "isupper") {
        bool cased = false;
        std::string lo = pystr::lower(s), up = pystr::upper(s);
        cased = lo != up;
        return Value(cased && (name == "islower" ? s == lo : s == up));
      }
      for (char32_t c : cps) {
        bool ok = name == "isspace" ? pystr::is_space(c)
                  : name == "isdigit" ? (c >= '0' && c <= '9')
                  : name == "isalpha" ? ((c | 32) >= 'a' && (c | 32) <= 'z') || c >= 0x80
                                      : ((c | 32) >= 'a' && (c | 32) <= 'z') || (c >= '0' && c <= '9') || c >= 0x80;
        if (!ok) return Value(false);
      }
      return Value(true);
    });
  }
  return Value();
}

bool is_unsafe_method(const Value& obj, const std::string& name) {
  static const char* const list_mut[] = {"append", "extend", "insert", "pop", "remove", "reverse", "sort", "clear", "__setitem__"};
  static const char* const dict_mut[] = {"pop", "popitem", "update", "setdefault", "clear", "__setitem__"};
  if (obj.is_list() && !obj.list().tuple) {
    for (const char* m : list_mut)
      if (name == m) return true;
  }
  if (obj.is_dict()) {
    for (const char* m : dict_mut)
      if (name == m) return true;
  }
  return false;
}

}  // namespace

Value bound_method(Interpreter& in, const Value& obj, const std::string& name) {
  if (obj.is_string()) return string_method(obj, name);
  if (is_unsafe_method(obj, name))
    throw TemplateError(ErrorType::security,
                        "access to attribute '" + name + "' of '" + obj.type_name() + "' object is unsafe.");
  if (obj.is_dict()) {
    const Value self = obj;
    if (name == "items" || name == "keys" || name == "values") {
      return Value::make_function("dict." + name, [self, name](Interpreter& inner, CallArgs& a) {
        ArgBinder b(a, {}, name);
        std::vector<Value> out;
        for (const auto& [k, v] : self.dict().items) {
          if (name == "items") out.push_back(Value::make_list({k, v}, true));
          else out.push_back(name == "keys" ? k : v);
        }
        inner.charge(out.size());
        return Value::make_list(std::move(out));
      });
    }
    if (name == "get") {
      return Value::make_function("dict.get", [self](Interpreter&, CallArgs& a) {
        ArgBinder b(a, {"key", "default"}, "get");
        if (!b.get(0)) Interpreter::type_error("get expected at least 1 argument");
        if (const Value* v = self.dict().find(*b.get(0))) return *v;
        return b.get_or(1, Value(None{}));
      });
    }
    if (name == "copy") {
      return Value::make_function("dict.copy", [self](Interpreter&, CallArgs&) {
        Value c = Value::make_dict();
        c.dict().items = self.dict().items;
        c.dict().depth = self.dict().depth;
        return c;
      });
    }
    return Value();
  }
  if (obj.is_list()) {
    const Value self = obj;
    if (name == "index" || name == "count") {
      return Value::make_function("list." + name, [self, name](Interpreter&, CallArgs& a) {
        ArgBinder b(a, {"value"}, name);
        if (!b.get(0)) Interpreter::type_error(name + "() takes exactly one argument");
        int64_t n = 0;
        const auto& items = self.list().items;
        for (size_t i = 0; i < items.size(); ++i) {
          if (!items[i].equals(*b.get(0))) continue;
          if (name == "index") return Value(int64_t(i));
          ++n;
        }
        if (name == "index") throw TemplateError(ErrorType::type, "value is not in list");
        return Value(n);
      });
    }
    return Value();
  }
  (void)in;
  return Value();
}

namespace {

[[noreturn]] void unsupported(const std::string& op, const Value& a, const Value& b) {
  if (a.is_undefined()) Interpreter::undefined_error(a);
  if (b.is_undefined()) Interpreter::undefined_error(b);
  Interpreter::type_error("unsupported operand type(s) for " + op + ": '" + a.type_name() + "' and '" + b.type_name() + "'");
}

[[noreturn]] void overflow() { throw TemplateError(ErrorType::limit, "integer overflow"); }

int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

Value repeat(Interpreter& in, const Value& seq, int64_t times) {
  if (times < 0) times = 0;
  if (seq.is_string() ? seq.str().empty() : seq.list().items.empty()) times = 0;  // '' * 10**18: no loop
  if (seq.is_string()) {
    if (times > 0 && seq.str().size() > 0 && uint64_t(times) > in.limits().max_output_bytes / seq.str().size()) in.check_size(SIZE_MAX);
    std::string out;
    for (int64_t i = 0; i < times; ++i) out += seq.str();
    in.check_size(out.size());
    return Value(std::move(out));
  }
  const auto& items = seq.list().items;
  if (times > 0 && !items.empty() && uint64_t(times) > in.limits().max_output_bytes / items.size()) in.check_size(SIZE_MAX);
  std::vector<Value> out;
  for (int64_t i = 0; i < times; ++i) out.insert(out.end(), items.begin(), items.end());
  in.check_size(out.size() * 16);
  return Value::make_list(std::move(out), seq.list().tuple);
}

// str % args: printf-style formatting (%s %r %d %i %f %%).
Value percent_format(Interpreter& in, const std::string& fmt, const Value& args) {
  const bool tuple = args.is_list() && args.list().tuple;
  std::vector<Value> values = tuple ? args.list().items : std::vector<Value>{args};
  size_t next = 0;
  std::string out;
  for (size_t i = 0; i < fmt.size(); ++i) {
    if (fmt[i] != '%') {
      out.push_back(fmt[i]);
      continue;
    }
    if (++i >= fmt.size()) Interpreter::type_error("incomplete format");
    char c = fmt[i];
    if (c == '%') {
      out.push_back('%');
      continue;
    }
    if (next >= values.size()) Interpreter::type_error("not enough arguments for format string");
    const Value& v = values[next++];
    if (c == 's') out += v.to_str();
    else if (c == 'r') out += v.repr();
    else if (c == 'd' || c == 'i') {
      if (!v.is_number()) Interpreter::type_error("%d format: a real number is required, not " + v.type_name());
      out += std::to_string(v.is_float() ? python_int(v.as_double()) : v.as_int());
    } else if (c == 'f') {
      if (!v.is_number()) Interpreter::type_error("must be real number, not " + v.type_name());
      char buf[64];
      std::snprintf(buf, sizeof buf, "%f", v.as_double());
      out += buf;
    } else {
      Interpreter::type_error(std::string("unsupported format character '") + c + "'");
    }
  }
  // Python: an unused argument is an error, unless the single argument is a mapping-like object
  // (CPython's PyMapping_Check: lists and dicts).
  if (next < values.size() && (tuple || !(args.is_dict() || args.is_list())))
    Interpreter::type_error("not all arguments converted during string formatting");
  in.check_size(out.size());
  return Value(std::move(out));
}

}  // namespace

Value arithmetic(Interpreter& in, const std::string& op, const Value& a, const Value& b) {
  if (a.is_undefined() || b.is_undefined()) unsupported(op, a, b);
  const bool nums = a.is_number() && b.is_number();
  const bool ints = nums && !a.is_float() && !b.is_float();
  if (op == "+") {
    if (ints) {
      int64_t r;
      if (__builtin_add_overflow(a.as_int(), b.as_int(), &r)) overflow();
      return Value(r);
    }
    if (nums) return Value(a.as_double() + b.as_double());
    if (a.is_string() && !b.is_string())
      Interpreter::type_error("can only concatenate str (not \"" + b.type_name() + "\") to str");
    if (a.is_list() && !b.is_list())
      Interpreter::type_error("can only concatenate list (not \"" + b.type_name() + "\") to list");
    if (a.is_string() && b.is_string()) {
      in.check_size(a.str().size() + b.str().size());
      return Value(a.str() + b.str());
    }
    if (a.is_list() && b.is_list() && a.list().tuple == b.list().tuple) {
      std::vector<Value> items = a.list().items;
      items.insert(items.end(), b.list().items.begin(), b.list().items.end());
      in.check_size(items.size() * 16);
      return Value::make_list(std::move(items), a.list().tuple);
    }
    unsupported(op, a, b);
  }
  if (op == "*") {
    if (ints) {
      int64_t r;
      if (__builtin_mul_overflow(a.as_int(), b.as_int(), &r)) overflow();
      return Value(r);
    }
    if (nums) return Value(a.as_double() * b.as_double());
    if ((a.is_string() || a.is_list()) && b.is_number() && !b.is_float()) return repeat(in, a, b.as_int());
    if ((b.is_string() || b.is_list()) && a.is_number() && !a.is_float()) return repeat(in, b, a.as_int());
    unsupported(op, a, b);
  }
  if (op == "%" && a.is_string()) return percent_format(in, a.str(), b);
  if (!nums) unsupported(op, a, b);
  if (op == "-") {
    if (ints) {
      int64_t r;
      if (__builtin_sub_overflow(a.as_int(), b.as_int(), &r)) overflow();
      return Value(r);
    }
    return Value(a.as_double() - b.as_double());
  }
  if (op == "/") {
    if (b.as_double() == 0) throw TemplateError(ErrorType::type, "division by zero");
    return Value(a.as_double() / b.as_double());
  }
  if (op == "//" || op == "%") {
    if (b.as_double() == 0) throw TemplateError(ErrorType::type, op == "%" ? "modulo by zero" : "integer division or modulo by zero");
    if (ints) {
      if (a.as_int() == INT64_MIN && b.as_int() == -1) overflow();
      int64_t q = floor_div(a.as_int(), b.as_int());
      return op == "//" ? Value(q) : Value(a.as_int() - q * b.as_int());
    }
    // CPython's float divmod: the quotient comes from fmod, not from floor(x / y).
    double x = a.as_double(), y = b.as_double();
    double mod = std::fmod(x, y);
    double div = (x - mod) / y;
    if (mod != 0) {
      if ((y < 0) != (mod < 0)) {
        mod += y;
        div -= 1.0;
      }
    } else {
      mod = std::copysign(0.0, y);
    }
    double floordiv;
    if (div != 0) {
      floordiv = std::floor(div);
      if (div - floordiv > 0.5) floordiv += 1.0;
    } else {
      floordiv = std::copysign(0.0, x / y);
    }
    return op == "//" ? Value(floordiv) : Value(mod);
  }
  if (op == "**") {
    if (ints && b.as_int() >= 0) {
      int64_t base = a.as_int(), r = 1;
      for (int64_t e = b.as_int(); e > 0; --e) {
        if (__builtin_mul_overflow(r, base, &r)) overflow();
        if (r == 0 || r == 1) break;
        if (base == -1) {
          r = (e % 2 == 1) ? -r : r;
          break;
        }
      }
      return Value(r);
    }
    return Value(std::pow(a.as_double(), b.as_double()));
  }
  unsupported(op, a, b);
}

namespace {

void json_dump(Interpreter& in, const Value& v, bool ensure_ascii, const std::optional<std::string>& indent,
               const std::string& item_sep, const std::string& key_sep, bool sort_keys, int level, std::string& out) {
  in.charge(1);
  if (level > 200) throw TemplateError(ErrorType::limit, "tojson: value nests too deeply");
  auto newline = [&](int lvl) {
    in.check_size(out.size() + 1 + indent->size() * size_t(lvl));  // before: a long indent times the level
    out.push_back('\n');
    for (int i = 0; i < lvl; ++i) out += *indent;
  };
  if (v.is_none()) out += "null";
  else if (v.is_bool()) out += v.as_bool() ? "true" : "false";
  else if (v.is_int()) out += std::to_string(v.as_int());
  else if (v.is_float()) {
    double d = v.as_double();
    out += std::isnan(d) ? "NaN" : std::isinf(d) ? (d < 0 ? "-Infinity" : "Infinity") : python_float_repr(d);
  } else if (v.is_string()) out += pystr::json_quote(v.str(), ensure_ascii);
  else if (v.is_list()) {
    const auto& items = v.list().items;
    if (items.empty()) {
      out += "[]";
      return;
    }
    out.push_back('[');
    for (size_t i = 0; i < items.size(); ++i) {
      if (i) out += item_sep;
      if (indent) newline(level + 1);
      json_dump(in, items[i], ensure_ascii, indent, item_sep, key_sep, sort_keys, level + 1, out);
    }
    if (indent) newline(level);
    out.push_back(']');
  } else if (v.is_dict()) {
    std::vector<std::pair<std::string, const Value*>> entries;
    for (const auto& [k, val] : v.dict().items) {
      std::string key;
      if (k.is_string()) key = k.str();
      else if (k.is_bool()) key = k.as_bool() ? "true" : "false";
      else if (k.is_none()) key = "null";
      else if (k.is_int()) key = std::to_string(k.as_int());
      else if (k.is_float()) key = python_float_repr(k.as_double());
      else Interpreter::type_error("keys must be str, int, float, bool or None, not " + k.type_name());
      entries.emplace_back(std::move(key), &val);
    }
    if (sort_keys)
      std::stable_sort(entries.begin(), entries.end(), [](const auto& x, const auto& y) { return x.first < y.first; });
    if (entries.empty()) {
      out += "{}";
      return;
    }
    out.push_back('{');
    for (size_t i = 0; i < entries.size(); ++i) {
      if (i) out += item_sep;
      if (indent) newline(level + 1);
      out += pystr::json_quote(entries[i].first, ensure_ascii);
      out += key_sep;
      json_dump(in, *entries[i].second, ensure_ascii, indent, item_sep, key_sep, sort_keys, level + 1, out);
    }
    if (indent) newline(level);
    out.push_back('}');
  } else {
    Interpreter::type_error("Object of type " + v.type_name() + " is not JSON serializable");
  }
  in.check_size(out.size());
}

}  // namespace

std::string to_json(Interpreter& in, const Value& v, bool ensure_ascii, const std::optional<std::string>& indent,
                    const std::string& item_sep, const std::string& key_sep, bool sort_keys) {
  std::string out;
  json_dump(in, v, ensure_ascii, indent, item_sep, key_sep, sort_keys, 0, out);
  return out;
}

}  // namespace keel::tmpl
