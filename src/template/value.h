// The values a chat template computes with: Python's data model as jinja2 sees it (undefined,
// None, bool, int, float, str, list/tuple, dict in insertion order, namespace, callables).
// Lists, dicts and namespaces are shared by reference, as in Python.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

namespace keel::tmpl {

class Value;
class Interpreter;

// Lists and dicts nest at most this deep, so printing, comparing, serialising and freeing them
// (all recursive) cannot overflow the stack; deeper values are a TemplateError(limit).
constexpr int kMaxValueDepth = 256;
// repr() (and so str()) of a list or dict stops with TemplateError(limit) past this many bytes, the
// default Limits::max_output_bytes: a list of a million items may share one large string.
constexpr size_t kMaxReprBytes = 64u << 20;

struct List {
  std::vector<Value> items;
  bool tuple = false;  // only changes how it prints: (a, b) instead of [a, b]
  int depth = 1;       // nesting depth, 1 for a list of scalars
};
struct Dict;       // ordered key → value
struct Namespace;  // jinja2's namespace(): the one mutable object a template can write to

// Arguments of a call: positionals then keywords, as written.
struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
};

struct Function {
  std::string name;
  std::function<Value(Interpreter&, CallArgs&)> call;
};

struct Undefined {
  std::string message;  // jinja2's UndefinedError message, raised when the value is used
};
struct None {};

// Strings are immutable, as in Python, and shared: reading a variable or putting a string in a
// list copies a pointer, not the bytes, so a template cannot multiply memory by copying one large
// string (only building a string is charged to the work limit).
using StrPtr = std::shared_ptr<const std::string>;
using ListPtr = std::shared_ptr<List>;
using DictPtr = std::shared_ptr<Dict>;
using NamespacePtr = std::shared_ptr<Namespace>;
using FunctionPtr = std::shared_ptr<const Function>;

class Value {
 public:
  Value() : v_(Undefined{}) {}
  Value(Undefined u) : v_(std::move(u)) {}
  Value(None) : v_(None{}) {}
  Value(bool b) : v_(b) {}
  Value(int64_t i) : v_(i) {}
  Value(int i) : v_(int64_t(i)) {}
  Value(double d) : v_(d) {}
  Value(std::string s) : v_(std::make_shared<const std::string>(std::move(s))) {}
  Value(const char* s) : Value(std::string(s)) {}
  Value(ListPtr l) : v_(std::move(l)) {}
  Value(DictPtr d) : v_(std::move(d)) {}
  Value(NamespacePtr n) : v_(std::move(n)) {}
  Value(FunctionPtr f) : v_(std::move(f)) {}

  static Value make_list(std::vector<Value> items, bool tuple = false);
  static Value make_dict();
  static Value make_function(std::string name, std::function<Value(Interpreter&, CallArgs&)> fn);
  static Value from_json(const nlohmann::ordered_json& j);  // TemplateError(limit) if too deep

  bool is_undefined() const { return std::holds_alternative<Undefined>(v_); }
  bool is_none() const { return std::holds_alternative<None>(v_); }
  bool is_bool() const { return std::holds_alternative<bool>(v_); }
  bool is_int() const { return std::holds_alternative<int64_t>(v_); }
  bool is_float() const { return std::holds_alternative<double>(v_); }
  bool is_number() const { return is_bool() || is_int() || is_float(); }  // Python: bool is an int
  bool is_string() const { return std::holds_alternative<StrPtr>(v_); }
  bool is_list() const { return std::holds_alternative<ListPtr>(v_); }
  bool is_dict() const { return std::holds_alternative<DictPtr>(v_); }
  bool is_namespace() const { return std::holds_alternative<NamespacePtr>(v_); }
  bool is_function() const { return std::holds_alternative<FunctionPtr>(v_); }

  // The accessors throw TemplateError(type) when the value holds another type, so an operation
  // handed the wrong type by a template is a TypeError, never an escaped std::bad_variant_access.
  bool as_bool() const { return get<bool>("bool"); }
  int64_t as_int() const;      // bool or int
  double as_double() const;    // bool, int or float
  const std::string& str() const { return *get<StrPtr>("str"); }
  List& list() const { return *get<ListPtr>("list"); }
  const ListPtr& list_ptr() const { return get<ListPtr>("list"); }
  Dict& dict() const { return *get<DictPtr>("dict"); }
  Namespace& ns() const { return *get<NamespacePtr>("Namespace"); }
  const Function& fn() const { return *get<FunctionPtr>("function"); }
  const std::string& undefined_message() const { return get<Undefined>("Undefined").message; }

  bool truthy() const;                 // Python's bool()
  std::string type_name() const;       // Python's type(x).__name__, for error messages
  std::string to_str() const;          // Python's str(x); undefined prints as ""
  std::string repr() const;            // Python's repr(x)
  bool equals(const Value& other) const;  // Python's ==
  bool identical(const Value& other) const;  // Python's `is` (sameas)
  int depth() const;  // nesting depth of a list or dict, 0 for anything else

 private:
  static Value from_json(const nlohmann::ordered_json& j, int level);
  void repr_into(std::string& out) const;
  template <typename T>
  const T& get(const char* wanted) const {
    if (const T* p = std::get_if<T>(&v_)) return *p;
    wrong_type(wanted);
  }
  [[noreturn]] void wrong_type(const char* wanted) const;
  std::variant<Undefined, None, bool, int64_t, double, StrPtr, ListPtr, DictPtr, NamespacePtr, FunctionPtr> v_;
};

struct Dict {
  std::vector<std::pair<Value, Value>> items;
  int depth = 1;  // nesting depth (kept by set(); code appending to items directly adds scalars only)
  const Value* find(const Value& key) const;
  const Value* find(const std::string& key) const;
  void set(Value key, Value value);
};

struct Namespace {
  std::vector<std::pair<std::string, Value>> attrs;
  const Value* find(const std::string& name) const;
  void set(const std::string& name, Value value);
};

// Python's float repr: shortest round-trip digits, "1.0", "1e+20", "inf", "nan".
std::string python_float_repr(double d);

// Python's int(d) for a float: truncated toward zero. TemplateError for inf and nan, and (where
// Python would make a big integer) beyond the range of int64.
int64_t python_int(double d);

}  // namespace keel::tmpl
