#include "template/value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

#include "template/error.h"
#include "template/pystr.h"

namespace keel::tmpl {

namespace {

void check_depth(int depth) {
  if (depth > kMaxValueDepth)
    throw TemplateError(ErrorType::limit, "a list or dict nests deeper than " + std::to_string(kMaxValueDepth) + " levels");
}

}  // namespace

int Value::depth() const {
  if (is_list()) return list().depth;
  if (is_dict()) return dict().depth;
  return 0;
}

Value Value::make_list(std::vector<Value> items, bool tuple) {
  auto l = std::make_shared<List>();
  for (const Value& v : items) l->depth = std::max(l->depth, v.depth() + 1);
  check_depth(l->depth);
  l->items = std::move(items);
  l->tuple = tuple;
  return Value(std::move(l));
}

Value Value::make_dict() { return Value(std::make_shared<Dict>()); }

Value Value::make_function(std::string name, std::function<Value(Interpreter&, CallArgs&)> fn) {
  return Value(FunctionPtr(std::make_shared<const Function>(Function{std::move(name), std::move(fn)})));
}

Value Value::from_json(const nlohmann::ordered_json& j) { return from_json(j, 0); }

Value Value::from_json(const nlohmann::ordered_json& j, int level) {
  check_depth(level);
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null: return Value(None{});
    case nlohmann::ordered_json::value_t::boolean: return Value(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer: return Value(j.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned: {
      uint64_t u = j.get<uint64_t>();
      return u <= uint64_t(INT64_MAX) ? Value(int64_t(u)) : Value(double(u));
    }
    case nlohmann::ordered_json::value_t::number_float: return Value(j.get<double>());
    case nlohmann::ordered_json::value_t::string: return Value(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      std::vector<Value> items;
      for (const auto& e : j) items.push_back(from_json(e, level + 1));
      return make_list(std::move(items));
    }
    case nlohmann::ordered_json::value_t::object: {
      // JSON object keys are unique: appended without the scan Dict::set does (quadratic on a
      // request with a hundred thousand keys).
      Value d = make_dict();
      Dict& dict = d.dict();
      dict.items.reserve(j.size());
      for (auto it = j.begin(); it != j.end(); ++it) {
        Value v = from_json(it.value(), level + 1);
        dict.depth = std::max(dict.depth, v.depth() + 1);
        dict.items.emplace_back(Value(it.key()), std::move(v));
      }
      return d;
    }
    default: return Value(None{});
  }
}

void Value::wrong_type(const char* wanted) const {
  if (is_undefined())
    throw TemplateError(ErrorType::undefined, undefined_message().empty() ? "an undefined value was used" : undefined_message());
  throw TemplateError(ErrorType::type, "expected " + std::string(wanted) + ", got " + type_name());
}

int64_t Value::as_int() const { return is_bool() ? int64_t(as_bool()) : get<int64_t>("int"); }

double Value::as_double() const {
  if (is_float()) return std::get<double>(v_);
  if (!is_bool() && !is_int()) wrong_type("number");
  return double(as_int());
}

int64_t python_int(double d) {
  if (std::isnan(d)) throw TemplateError(ErrorType::type, "cannot convert float NaN to integer");
  if (std::isinf(d)) throw TemplateError(ErrorType::type, "cannot convert float infinity to integer");
  // [-2^63, 2^63): both bounds are exact doubles.
  if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0))
    throw TemplateError(ErrorType::limit, "integer overflow: " + python_float_repr(d) + " is beyond 64 bits");
  return static_cast<int64_t>(d);
}

bool Value::truthy() const {
  if (is_undefined() || is_none()) return false;
  if (is_bool()) return as_bool();
  if (is_int()) return as_int() != 0;
  if (is_float()) return as_double() != 0.0;
  if (is_string()) return !str().empty();
  if (is_list()) return !list().items.empty();
  if (is_dict()) return !dict().items.empty();
  return true;
}

std::string Value::type_name() const {
  if (is_undefined()) return "Undefined";
  if (is_none()) return "NoneType";
  if (is_bool()) return "bool";
  if (is_int()) return "int";
  if (is_float()) return "float";
  if (is_string()) return "str";
  if (is_list()) return list().tuple ? "tuple" : "list";
  if (is_dict()) return "dict";
  if (is_namespace()) return "Namespace";
  return "function";
}

std::string python_float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d < 0 ? "-inf" : "inf";
  char buf[64];
  // Shortest round-trip digits in scientific form, then laid out as Python's repr does:
  // positional for exponents in [-4, 16), scientific otherwise.
  auto res = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  std::string sci(buf, res.ptr);
  bool negative = sci[0] == '-';
  if (negative) sci.erase(0, 1);
  size_t e_pos = sci.find('e');
  std::string mantissa = sci.substr(0, e_pos);
  int exponent = std::stoi(sci.substr(e_pos + 1));
  std::string digits;
  for (char c : mantissa)
    if (c != '.') digits.push_back(c);
  std::string out;
  if (exponent >= -4 && exponent < 16) {
    if (exponent < 0) {
      out = "0." + std::string(size_t(-exponent - 1), '0') + digits;
    } else if (size_t(exponent) + 1 >= digits.size()) {
      out = digits + std::string(size_t(exponent) + 1 - digits.size(), '0') + ".0";
    } else {
      out = digits.substr(0, size_t(exponent) + 1) + "." + digits.substr(size_t(exponent) + 1);
    }
  }
  if (out.empty()) {
    out = digits.substr(0, 1);
    if (digits.size() > 1) {
      out.push_back('.');
      out.append(digits, 1, std::string::npos);
    }
    char ebuf[16];
    std::snprintf(ebuf, sizeof ebuf, "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
    out += ebuf;
  }
  return negative ? "-" + out : out;
}

std::string Value::to_str() const {
  if (is_undefined()) return "";
  if (is_string()) return str();
  return repr();
}

std::string Value::repr() const {
  std::string out;
  repr_into(out);
  return out;
}

void Value::repr_into(std::string& out) const {
  if (is_list()) {
    const List& l = list();
    out += l.tuple ? "(" : "[";
    for (size_t i = 0; i < l.items.size(); ++i) {
      if (i) out += ", ";
      l.items[i].repr_into(out);
      if (out.size() > kMaxReprBytes)
        throw TemplateError(ErrorType::limit, "the text of a list is longer than " + std::to_string(kMaxReprBytes) + " bytes");
    }
    if (l.tuple && l.items.size() == 1) out += ",";
    out += l.tuple ? ")" : "]";
  } else if (is_dict()) {
    out += "{";
    bool first = true;
    for (const auto& [k, v] : dict().items) {
      if (!first) out += ", ";
      first = false;
      k.repr_into(out);
      out += ": ";
      v.repr_into(out);
      if (out.size() > kMaxReprBytes)
        throw TemplateError(ErrorType::limit, "the text of a dict is longer than " + std::to_string(kMaxReprBytes) + " bytes");
    }
    out += "}";
  } else if (is_undefined()) {
  } else if (is_none()) {
    out += "None";
  } else if (is_bool()) {
    out += as_bool() ? "True" : "False";
  } else if (is_int()) {
    out += std::to_string(as_int());
  } else if (is_float()) {
    out += python_float_repr(as_double());
  } else if (is_string()) {
    out += pystr::repr(str());
  } else if (is_namespace()) {
    out += "<Namespace>";
  } else {
    out += "<function " + fn().name + ">";
  }
}

bool Value::equals(const Value& o) const {
  if (is_number() && o.is_number()) {
    if (is_float() || o.is_float()) return as_double() == o.as_double();
    return as_int() == o.as_int();
  }
  if (is_string() && o.is_string()) return str() == o.str();
  if (is_undefined() || o.is_undefined()) return is_undefined() && o.is_undefined();
  if (is_none() || o.is_none()) return is_none() && o.is_none();
  if (is_list() && o.is_list()) {
    const auto& a = list().items;
    const auto& b = o.list().items;
    if (list().tuple != o.list().tuple || a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i)
      if (!a[i].equals(b[i])) return false;
    return true;
  }
  if (is_dict() && o.is_dict()) {
    const auto& a = dict().items;
    if (a.size() != o.dict().items.size()) return false;
    for (const auto& [k, v] : a) {
      const Value* other = o.dict().find(k);
      if (!other || !v.equals(*other)) return false;
    }
    return true;
  }
  return identical(o);
}

bool Value::identical(const Value& o) const {
  if (v_.index() != o.v_.index()) return false;
  if (is_none() || is_undefined()) return true;
  if (is_bool()) return as_bool() == o.as_bool();
  if (is_int()) return as_int() == o.as_int();
  if (is_float()) return as_double() == o.as_double();
  if (is_string()) return str() == o.str();
  if (is_list()) return list_ptr() == o.list_ptr();
  if (is_dict()) return &dict() == &o.dict();
  if (is_namespace()) return &ns() == &o.ns();
  return &fn() == &o.fn();
}

const Value* Dict::find(const Value& key) const {
  for (const auto& [k, v] : items)
    if (k.equals(key)) return &v;
  return nullptr;
}

const Value* Dict::find(const std::string& key) const {
  for (const auto& [k, v] : items)
    if (k.is_string() && k.str() == key) return &v;
  return nullptr;
}

void Dict::set(Value key, Value value) {
  depth = std::max(depth, value.depth() + 1);
  check_depth(depth);
  for (auto& [k, v] : items)
    if (k.equals(key)) {
      v = std::move(value);
      return;
    }
  items.emplace_back(std::move(key), std::move(value));
}

const Value* Namespace::find(const std::string& name) const {
  for (const auto& [k, v] : attrs)
    if (k == name) return &v;
  return nullptr;
}

void Namespace::set(const std::string& name, Value value) {
  for (auto& [k, v] : attrs)
    if (k == name) {
      v = std::move(value);
      return;
    }
  attrs.emplace_back(name, std::move(value));
}

}  // namespace keel::tmpl
