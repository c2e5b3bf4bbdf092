// Evaluates a parsed template: scopes, statements, expressions, Python's operators, with limits
// on work, output and call depth so a hostile template ends with an error instead of hanging.
#pragma once
#include <ctime>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "template/ast.h"
#include "template/error.h"
#include "template/value.h"

namespace keel::tmpl {

struct Limits {
  size_t max_output_bytes = 64u << 20;   // the rendering, and any one string built on the way
  uint64_t max_work = 20'000'000;        // evaluation steps plus bytes/items copied (~1 s)
  int max_call_depth = 100;              // nested macro calls
  int64_t max_range = 100'000;           // range() length (jinja2's sandbox has the same limit)
};

struct Scope {
  std::unordered_map<std::string, Value> vars;
  std::shared_ptr<Scope> parent;
  const Value* find(const std::string& name) const;
};
using ScopePtr = std::shared_ptr<Scope>;

class Interpreter {
 public:
  Interpreter(const Limits& limits, std::tm now);

  // Renders `body` with `root` as the template's top-level scope.
  std::string render(const Body& body, const ScopePtr& root);

  Value eval(const Expr& e, const ScopePtr& scope);
  Value call(const Value& callee, CallArgs& args, const std::string& what);
  Value getattr(const Value& obj, const std::string& name);
  Value getitem(const Value& obj, const Value& key);
  std::vector<Value> iterate(const Value& v);  // Python's iter(), materialised
  bool contains(const Value& container, const Value& item);
  int compare(const Value& a, const Value& b, const char* op);  // <0, 0, >0; TypeError if unorderable
  Value apply_filter(const std::string& name, Value operand, CallArgs& args);
  bool apply_test(const std::string& name, const Value& operand, CallArgs& args);

  // Accounting for the work limit; throws TemplateError(limit) when exceeded.
  void charge(uint64_t units);
  void check_size(size_t bytes);  // a string or list about to be built

  // A new namespace(), owned by this rendering until it ends (see release_namespaces).
  NamespacePtr new_namespace();

  const std::tm& now() const { return now_; }
  const Limits& limits() const { return limits_; }

  [[noreturn]] static void type_error(const std::string& msg);
  [[noreturn]] static void undefined_error(const Value& v);

 private:
  enum class Flow { normal, break_, continue_ };
  Value eval_expr(const Expr& e, const ScopePtr& scope);
  void release_namespaces();
  Flow exec(const Body& body, const ScopePtr& scope);
  Flow exec_stmt(const Stmt& s, const ScopePtr& scope);
  Flow exec_for(const ForStmt& s, const ScopePtr& scope);
  void exec_set(const SetTarget& target, Value value, const ScopePtr& scope);
  Value make_macro(const MacroStmt& m, const ScopePtr& scope, const Body* caller_body = nullptr);
  Value call_macro(const MacroStmt& m, const ScopePtr& def_scope, CallArgs& args, const Value& caller);
  std::string capture(const Body& body, const ScopePtr& scope);
  void emit(const std::string& s);

  Value eval_binary(const BinaryExpr& b, const ScopePtr& scope);
  Value eval_compare(const CompareExpr& c, const ScopePtr& scope);
  Value eval_slice(const SliceExpr& s, const ScopePtr& scope);
  CallArgs eval_args(const Arguments& a, const ScopePtr& scope);
  Value lookup(const std::string& name, const ScopePtr& scope);

  Limits limits_;
  std::tm now_;
  uint64_t work_ = 0;
  int call_depth_ = 0;
  std::string* out_ = nullptr;
  std::unordered_map<std::string, Value> globals_;
  std::vector<NamespacePtr> namespaces_;  // every namespace() of this rendering
};

// Python's binary arithmetic on template values (+ - * / // % **), TypeError on mismatched types.
Value arithmetic(Interpreter& in, const std::string& op, const Value& a, const Value& b);

}  // namespace keel::tmpl
