#include "template/interpreter.h"

#include "template/builtins.h"
#include "template/pystr.h"

namespace keel::tmpl {

namespace {
// Work units charged per loop iteration (a scope and the loop object are built each time), so
// the work limit bounds loops by time rather than by node count alone.
constexpr uint64_t kLoopIterationCost = 20;
}  // namespace

const Value* Scope::find(const std::string& name) const {
  for (const Scope* s = this; s; s = s->parent.get()) {
    auto it = s->vars.find(name);
    if (it != s->vars.end()) return &it->second;
  }
  return nullptr;
}

Interpreter::Interpreter(const Limits& limits, std::tm now) : limits_(limits), now_(now) {
  globals_ = builtin_globals();
}

void Interpreter::charge(uint64_t units) {
  work_ += units;
  if (work_ > limits_.max_work)
    throw TemplateError(ErrorType::limit, "template exceeded its work limit (" + std::to_string(limits_.max_work) +
                                              " steps): it loops too long or builds values too large");
}

void Interpreter::check_size(size_t bytes) {
  if (bytes > limits_.max_output_bytes)
    throw TemplateError(ErrorType::limit, "template built a value of " + std::to_string(bytes) +
                                              " bytes, above the limit of " + std::to_string(limits_.max_output_bytes));
  charge(bytes / 16);
}

void Interpreter::type_error(const std::string& msg) { throw TemplateError(ErrorType::type, msg); }

void Interpreter::undefined_error(const Value& v) {
  const std::string& message = v.undefined_message();
  throw TemplateError(ErrorType::undefined, message.empty() ? "an undefined value was used" : message);
}

std::string Interpreter::render(const Body& body, const ScopePtr& root) {
  struct Release {
    Interpreter& in;
    ~Release() { in.release_namespaces(); }
  } release{*this};
  std::string out;
  out_ = &out;
  work_ = 0;
  call_depth_ = 0;
  exec(body, root);
  out_ = nullptr;
  return out;
}

NamespacePtr Interpreter::new_namespace() {
  namespaces_.push_back(std::make_shared<Namespace>());
  return namespaces_.back();
}

// A namespace is the one object a template can mutate, so the only way to a reference cycle
// ({% set ns.self = ns %}: a leak) or to a chain deeper than kMaxValueDepth ({% set ns.next =
// namespace(next=ns.next) %} in a loop: freeing it recursively overflows the stack). Every
// namespace lives until the rendering ends; then their attributes are dropped while all of them
// are still held, so nothing is left behind and nothing is freed recursively.
void Interpreter::release_namespaces() {
  for (const NamespacePtr& ns : namespaces_) ns->attrs.clear();
  namespaces_.clear();
}

void Interpreter::emit(const std::string& s) {
  if (out_->size() + s.size() > limits_.max_output_bytes)
    throw TemplateError(ErrorType::limit, "template output exceeded " + std::to_string(limits_.max_output_bytes) + " bytes");
  charge(1 + s.size() / 64);
  out_->append(s);
}

std::string Interpreter::capture(const Body& body, const ScopePtr& scope) {
  std::string buf;
  std::string* saved = out_;
  out_ = &buf;
  try {
    exec(body, scope);
  } catch (...) {
    out_ = saved;
    throw;
  }
  out_ = saved;
  return buf;
}

Interpreter::Flow Interpreter::exec(const Body& body, const ScopePtr& scope) {
  for (const auto& s : body) {
    Flow f = exec_stmt(*s, scope);
    if (f != Flow::normal) return f;
  }
  return Flow::normal;
}

Interpreter::Flow Interpreter::exec_stmt(const Stmt& s, const ScopePtr& scope) {
  charge(1);
  switch (s.kind) {
    case StmtKind::text: emit(static_cast<const TextStmt&>(s).text); return Flow::normal;
    case StmtKind::output: emit(eval(*static_cast<const OutputStmt&>(s).expr, scope).to_str()); return Flow::normal;
    case StmtKind::if_: {
      const auto& i = static_cast<const IfStmt&>(s);
      for (const auto& [cond, body] : i.branches)
        if (eval(*cond, scope).truthy()) return exec(body, scope);
      return exec(i.else_body, scope);
    }
    case StmtKind::for_: return exec_for(static_cast<const ForStmt&>(s), scope);
    case StmtKind::set: {
      const auto& st = static_cast<const SetStmt&>(s);
      exec_set(st.target, eval(*st.value, scope), scope);
      return Flow::normal;
    }
    case StmtKind::set_block: {
      const auto& st = static_cast<const SetBlockStmt&>(s);
      auto inner = std::make_shared<Scope>();
      inner->parent = scope;
      Value v(capture(st.body, inner));
      for (const auto& f : st.filters) {
        CallArgs args = eval_args(f->args, scope);
        v = apply_filter(f->name, v, args);
      }
      exec_set(st.target, v, scope);
      return Flow::normal;
    }
    case StmtKind::macro: {
      const auto& m = static_cast<const MacroStmt&>(s);
      scope->vars[m.name] = make_macro(m, scope);
      return Flow::normal;
    }
    case StmtKind::call_block: {
      const auto& cb = static_cast<const CallBlockStmt&>(s);
      // The body becomes `caller`, a macro with the block's parameters, seen from this scope.
      Value caller = Value::make_function("caller", [this, &cb, scope](Interpreter&, CallArgs& args) {
        auto inner = std::make_shared<Scope>();
        inner->parent = scope;
        for (size_t i = 0; i < cb.caller_params.size(); ++i) {
          const auto& p = cb.caller_params[i];
          if (i < args.positional.size()) inner->vars[p.name] = args.positional[i];
          else if (p.default_value) inner->vars[p.name] = eval(*p.default_value, scope);
          else inner->vars[p.name] = Value(Undefined{"'" + p.name + "' is undefined"});
        }
        for (auto& [k, v] : args.keyword) inner->vars[k] = v;
        return Value(capture(cb.body, inner));
      });
      Value callee = eval(*cb.call->callee, scope);
      CallArgs args = eval_args(cb.call->args, scope);
      args.keyword.emplace_back("caller", caller);
      emit(call(callee, args, "call block").to_str());
      return Flow::normal;
    }
    case StmtKind::filter_block: {
      const auto& fb = static_cast<const FilterBlockStmt&>(s);
      Value v(capture(fb.body, scope));
      for (const auto& f : fb.filters) {
        CallArgs args = eval_args(f->args, scope);
        v = apply_filter(f->name, v, args);
      }
      emit(v.to_str());
      return Flow::normal;
    }
    case StmtKind::scope: {
      const auto& sc = static_cast<const ScopeStmt&>(s);
      if (!sc.new_scope) return exec(sc.body, scope);
      auto inner = std::make_shared<Scope>();
      inner->parent = scope;
      for (const auto& [name, e] : sc.assignments) inner->vars[name] = eval(*e, scope);
      return exec(sc.body, inner);
    }
    case StmtKind::break_: return Flow::break_;
    case StmtKind::continue_: return Flow::continue_;
  }
  return Flow::normal;
}

void Interpreter::exec_set(const SetTarget& target, Value value, const ScopePtr& scope) {
  if (!target.ns_attr.empty()) {
    const Value* ns = scope->find(target.names[0]);
    if (!ns || !ns->is_namespace())
      throw TemplateError(ErrorType::runtime, "cannot assign attribute on non-namespace object");
    ns->ns().set(target.ns_attr, std::move(value));
    return;
  }
  if (target.names.size() == 1) {
    scope->vars[target.names[0]] = std::move(value);
    return;
  }
  std::vector<Value> items = iterate(value);
  if (items.size() != target.names.size())
    type_error("cannot unpack " + std::to_string(items.size()) + " values into " + std::to_string(target.names.size()));
  for (size_t i = 0; i < items.size(); ++i) scope->vars[target.names[i]] = items[i];
}

Interpreter::Flow Interpreter::exec_for(const ForStmt& s, const ScopePtr& scope) {
  if (s.recursive) throw TemplateError(ErrorType::runtime, "recursive for loops are not supported");
  std::vector<Value> items = iterate(eval(*s.iter, scope));
  auto bind = [&](const ScopePtr& inner, const Value& item) {
    if (s.targets.size() == 1) {
      inner->vars[s.targets[0]] = item;
      return;
    }
    std::vector<Value> parts = iterate(item);
    if (parts.size() != s.targets.size())
      type_error("cannot unpack " + std::to_string(parts.size()) + " values into " + std::to_string(s.targets.size()) + " loop variables");
    for (size_t i = 0; i < parts.size(); ++i) inner->vars[s.targets[i]] = parts[i];
  };
  if (s.filter) {
    std::vector<Value> kept;
    for (const Value& item : items) {
      charge(1);
      auto inner = std::make_shared<Scope>();
      inner->parent = scope;
      bind(inner, item);
      if (eval(*s.filter, inner).truthy()) kept.push_back(item);
    }
    items = std::move(kept);
  }
  const int64_t n = int64_t(items.size());
  // loop.cycle reads the current index through this shared counter: one function per loop.
  auto index = std::make_shared<int64_t>(0);
  const Value cycle = Value::make_function("loop.cycle", [index](Interpreter&, CallArgs& a) -> Value {
    if (a.positional.empty()) throw TemplateError(ErrorType::type, "no items for cycling given");
    return a.positional[size_t(*index) % a.positional.size()];
  });
  for (int64_t i = 0; i < n; ++i) {
    charge(kLoopIterationCost);
    *index = i;
    auto inner = std::make_shared<Scope>();
    inner->parent = scope;
    Value loop = Value::make_dict();
    auto& d = loop.dict().items;  // distinct keys: appended without the lookup Dict::set does
    d.reserve(12);
    d.emplace_back(Value("index"), Value(i + 1));
    d.emplace_back(Value("index0"), Value(i));
    d.emplace_back(Value("revindex"), Value(n - i));
    d.emplace_back(Value("revindex0"), Value(n - i - 1));
    d.emplace_back(Value("first"), Value(i == 0));
    d.emplace_back(Value("last"), Value(i == n - 1));
    d.emplace_back(Value("length"), Value(n));
    d.emplace_back(Value("depth"), Value(1));
    d.emplace_back(Value("depth0"), Value(0));
    if (i > 0) d.emplace_back(Value("previtem"), items[size_t(i - 1)]);
    if (i + 1 < n) d.emplace_back(Value("nextitem"), items[size_t(i + 1)]);
    d.emplace_back(Value("cycle"), cycle);
    inner->vars["loop"] = loop;
    bind(inner, items[size_t(i)]);
    if (exec(s.body, inner) == Flow::break_) break;
  }
  if (n == 0) {
    auto inner = std::make_shared<Scope>();
    inner->parent = scope;
    exec(s.else_body, inner);
  }
  return Flow::normal;
}

Value Interpreter::make_macro(const MacroStmt& m, const ScopePtr& scope, const Body*) {
  const MacroStmt* macro = &m;
  std::weak_ptr<Scope> weak = scope;  // the scope holds the macro: a strong ref would be a cycle
  return Value::make_function(m.name, [macro, weak](Interpreter& in, CallArgs& args) -> Value {
    ScopePtr def_scope = weak.lock();
    if (!def_scope) throw TemplateError(ErrorType::runtime, "macro '" + macro->name + "' called after its scope ended");
    Value caller;
    for (auto it = args.keyword.begin(); it != args.keyword.end(); ++it)
      if (it->first == "caller") {
        caller = it->second;
        args.keyword.erase(it);
        break;
      }
    return in.call_macro(*macro, def_scope, args, caller);
  });
}

Value Interpreter::call_macro(const MacroStmt& m, const ScopePtr& def_scope, CallArgs& args, const Value& caller) {
  if (call_depth_ >= limits_.max_call_depth)
    throw TemplateError(ErrorType::limit, "macro calls nest deeper than " + std::to_string(limits_.max_call_depth) +
                                              " (runaway recursion in '" + m.name + "'?)");
  auto inner = std::make_shared<Scope>();
  inner->parent = def_scope;
  std::vector<Value> varargs;
  for (size_t i = 0; i < args.positional.size(); ++i) {
    if (i < m.params.size()) inner->vars[m.params[i].name] = args.positional[i];
    else varargs.push_back(args.positional[i]);
  }
  Value kwargs = Value::make_dict();
  for (auto& [k, v] : args.keyword) {
    bool is_param = false;
    for (size_t i = 0; i < m.params.size(); ++i)
      if (m.params[i].name == k) {
        if (i < args.positional.size()) type_error("macro '" + m.name + "' got multiple values for argument '" + k + "'");
        is_param = true;
      }
    if (is_param) inner->vars[k] = v;
    else kwargs.dict().set(Value(k), v);
  }
  for (const auto& p : m.params)
    if (!inner->vars.count(p.name))
      inner->vars[p.name] = p.default_value ? eval(*p.default_value, inner) : Value(Undefined{"'" + p.name + "' is undefined"});
  inner->vars["varargs"] = Value::make_list(std::move(varargs), true);
  inner->vars["kwargs"] = kwargs;
  if (!caller.is_undefined()) inner->vars["caller"] = caller;
  ++call_depth_;
  std::string text;
  try {
    text = capture(m.body, inner);
  } catch (...) {
    --call_depth_;
    throw;
  }
  --call_depth_;
  return Value(std::move(text));
}

Value Interpreter::lookup(const std::string& name, const ScopePtr& scope) {
  if (const Value* v = scope->find(name)) return *v;
  auto it = globals_.find(name);
  if (it != globals_.end()) return it->second;
  return Value(Undefined{"'" + name + "' is undefined"});
}

CallArgs Interpreter::eval_args(const Arguments& a, const ScopePtr& scope) {
  CallArgs out;
  for (const auto& e : a.positional) out.positional.push_back(eval(*e, scope));
  for (const auto& [k, e] : a.keyword) out.keyword.emplace_back(k, eval(*e, scope));
  return out;
}

Value Interpreter::call(const Value& callee, CallArgs& args, const std::string& what) {
  if (callee.is_undefined()) undefined_error(callee);
  if (!callee.is_function()) type_error("'" + callee.type_name() + "' object is not callable");
  charge(1);
  Value result = callee.fn().call(*this, args);
  if (result.is_string()) check_size(result.str().size());  // a method may build a string by a small factor
  return result;
}

Value Interpreter::eval(const Expr& e, const ScopePtr& scope) {
  Value v = eval_expr(e, scope);
  // Strings are shared, not copied, but every operation on one takes time in proportion to its
  // length: each string an expression yields is charged by its size, so a loop cannot scan,
  // search or slice a large string over and over for free.
  if (v.is_string()) charge(v.str().size() / 16);
  return v;
}

Value Interpreter::eval_expr(const Expr& e, const ScopePtr& scope) {
  charge(1);
  switch (e.kind) {
    case ExprKind::literal: return static_cast<const Literal&>(e).value;
    case ExprKind::name: return lookup(static_cast<const NameExpr&>(e).name, scope);
    case ExprKind::list: {
      const auto& l = static_cast<const ListExpr&>(e);
      std::vector<Value> items;
      for (const auto& x : l.items) items.push_back(eval(*x, scope));
      return Value::make_list(std::move(items), l.tuple);
    }
    case ExprKind::dict: {
      Value d = Value::make_dict();
      for (const auto& [k, v] : static_cast<const DictExpr&>(e).items) {
        Value key = eval(*k, scope);
        if (key.is_list() && !key.list().tuple) type_error("unhashable type: 'list'");
        if (key.is_dict()) type_error("unhashable type: 'dict'");
        d.dict().set(key, eval(*v, scope));
      }
      return d;
    }
    case ExprKind::unary: {
      const auto& u = static_cast<const UnaryExpr&>(e);
      Value v = eval(*u.operand, scope);
      if (u.op == "not") return Value(!v.truthy());
      if (v.is_undefined()) undefined_error(v);
      if (!v.is_number()) type_error("bad operand type for unary " + u.op + ": '" + v.type_name() + "'");
      if (u.op == "+") return v.is_float() ? v : Value(v.as_int());
      if (v.is_float()) return Value(-v.as_double());
      if (v.as_int() == INT64_MIN) throw TemplateError(ErrorType::limit, "integer overflow");
      return Value(-v.as_int());
    }
    case ExprKind::binary: return eval_binary(static_cast<const BinaryExpr&>(e), scope);
    case ExprKind::logical: {
      const auto& l = static_cast<const LogicalExpr&>(e);
      Value a = eval(*l.lhs, scope);
      if (l.is_and ? !a.truthy() : a.truthy()) return a;
      return eval(*l.rhs, scope);
    }
    case ExprKind::compare: return eval_compare(static_cast<const CompareExpr&>(e), scope);
    case ExprKind::conditional: {
      const auto& c = static_cast<const ConditionalExpr&>(e);
      if (eval(*c.cond, scope).truthy()) return eval(*c.then, scope);
      if (c.else_) return eval(*c.else_, scope);
      return Value(Undefined{"the inline if expression evaluated to false and no else section was defined."});
    }
    case ExprKind::getattr: {
      const auto& g = static_cast<const GetAttrExpr&>(e);
      return getattr(eval(*g.obj, scope), g.name);
    }
    case ExprKind::getitem: {
      const auto& g = static_cast<const GetItemExpr&>(e);
      Value obj = eval(*g.obj, scope);
      return getitem(obj, eval(*g.index, scope));
    }
    case ExprKind::slice: return eval_slice(static_cast<const SliceExpr&>(e), scope);
    case ExprKind::call: {
      const auto& c = static_cast<const CallExpr&>(e);
      Value callee = eval(*c.callee, scope);
      CallArgs args = eval_args(c.args, scope);
      return call(callee, args, "call");
    }
    case ExprKind::filter: {
      const auto& f = static_cast<const FilterExpr&>(e);
      Value operand = f.operand ? eval(*f.operand, scope) : Value();
      CallArgs args = eval_args(f.args, scope);
      return apply_filter(f.name, operand, args);
    }
    case ExprKind::test: {
      const auto& t = static_cast<const TestExpr&>(e);
      Value operand = eval(*t.operand, scope);
      CallArgs args = eval_args(t.args, scope);
      bool r = apply_test(t.name, operand, args);
      return Value(t.negated ? !r : r);
    }
  }
  return Value();
}

Value Interpreter::eval_binary(const BinaryExpr& b, const ScopePtr& scope) {
  Value lhs = eval(*b.lhs, scope);
  Value rhs = eval(*b.rhs, scope);
  if (b.op == "~") {
    std::string s = lhs.to_str();
    std::string r = rhs.to_str();
    check_size(s.size() + r.size());
    return Value(s + r);
  }
  return arithmetic(*this, b.op, lhs, rhs);
}

Value Interpreter::eval_compare(const CompareExpr& c, const ScopePtr& scope) {
  Value left = eval(*c.first, scope);
  for (const auto& [op, e] : c.rest) {
    Value right = eval(*e, scope);
    bool ok;
    if (op == "==") ok = left.equals(right);
    else if (op == "!=") ok = !left.equals(right);
    else if (op == "in") ok = contains(right, left);
    else if (op == "notin") ok = !contains(right, left);
    else {
      int r = compare(left, right, op.c_str());
      ok = op == "<" ? r < 0 : op == "<=" ? r <= 0 : op == ">" ? r > 0 : r >= 0;
    }
    if (!ok) return Value(false);
    left = std::move(right);
  }
  return Value(true);
}

int Interpreter::compare(const Value& a, const Value& b, const char* op) {
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) {
      double x = a.as_double(), y = b.as_double();
      return x < y ? -1 : x > y ? 1 : 0;
    }
    int64_t x = a.as_int(), y = b.as_int();
    return x < y ? -1 : x > y ? 1 : 0;
  }
  if (a.is_string() && b.is_string()) {
    int r = a.str().compare(b.str());  // UTF-8 byte order is code point order
    return r < 0 ? -1 : r > 0 ? 1 : 0;
  }
  if (a.is_list() && b.is_list() && a.list().tuple == b.list().tuple) {
    const auto& x = a.list().items;
    const auto& y = b.list().items;
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (x[i].equals(y[i])) continue;
      return compare(x[i], y[i], op);
    }
    return x.size() < y.size() ? -1 : x.size() > y.size() ? 1 : 0;
  }
  if (a.is_undefined()) undefined_error(a);
  if (b.is_undefined()) undefined_error(b);
  type_error(std::string("'") + op + "' not supported between instances of '" + a.type_name() + "' and '" + b.type_name() + "'");
}

bool Interpreter::contains(const Value& container, const Value& item) {
  if (container.is_string()) {
    if (!item.is_string()) {
      if (item.is_undefined()) undefined_error(item);
      type_error("'in <string>' requires string as left operand, not " + item.type_name());
    }
    return container.str().find(item.str()) != std::string::npos;
  }
  if (container.is_list()) {
    charge(container.list().items.size());
    for (const Value& v : container.list().items)
      if (v.equals(item)) return true;
    return false;
  }
  if (container.is_dict()) {
    charge(container.dict().items.size());  // Dict::find scans
    return container.dict().find(item) != nullptr;
  }
  if (container.is_undefined()) return false;
  type_error("argument of type '" + container.type_name() + "' is not iterable");
}

std::vector<Value> Interpreter::iterate(const Value& v) {
  if (v.is_list()) {
    charge(v.list().items.size());
    return v.list().items;
  }
  if (v.is_dict()) {
    std::vector<Value> keys;
    for (const auto& kv : v.dict().items) keys.push_back(kv.first);
    charge(keys.size());
    return keys;
  }
  if (v.is_string()) {
    const std::vector<char32_t> cps = pystr::decode(v.str());
    charge(cps.size());  // before building: a Value per character is ~40 times the bytes
    std::vector<Value> chars;
    chars.reserve(cps.size());
    for (char32_t c : cps) {
      std::string s;
      pystr::append_utf8(s, c);
      chars.emplace_back(std::move(s));
    }
    return chars;
  }
  if (v.is_undefined()) return {};
  type_error("'" + v.type_name() + "' object is not iterable");
}

Value Interpreter::getattr(const Value& obj, const std::string& name) {
  if (obj.is_undefined()) undefined_error(obj);
  if (Value m = bound_method(*this, obj, name); !m.is_undefined()) return m;
  if (obj.is_dict()) {
    charge(obj.dict().items.size());  // Dict::find scans
    if (const Value* v = obj.dict().find(name)) return *v;
  } else if (obj.is_namespace()) {
    if (const Value* v = obj.ns().find(name)) return *v;
  }
  return Value(Undefined{"'" + obj.type_name() + " object' has no attribute '" + name + "'"});
}

Value Interpreter::getitem(const Value& obj, const Value& key) {
  if (obj.is_undefined()) undefined_error(obj);
  if (obj.is_dict()) {
    charge(obj.dict().items.size());  // Dict::find scans
    if (const Value* v = obj.dict().find(key)) return *v;
  } else if ((obj.is_list() || obj.is_string()) && key.is_number() && !key.is_float()) {
    int64_t i = key.as_int();
    if (obj.is_list()) {
      const auto& items = obj.list().items;
      int64_t n = int64_t(items.size());
      if (i < 0) i += n;
      if (i >= 0 && i < n) return items[size_t(i)];
    } else {
      std::vector<char32_t> cps = pystr::decode(obj.str());
      int64_t n = int64_t(cps.size());
      if (i < 0) i += n;
      if (i >= 0 && i < n) return Value(pystr::encode(cps, size_t(i), size_t(i) + 1));
    }
    return Value(Undefined{"'" + obj.type_name() + " object' has no element " + std::to_string(key.as_int())});
  } else if (obj.is_namespace() && key.is_string()) {
    if (const Value* v = obj.ns().find(key.str())) return *v;
  }
  // jinja2 falls back to the attribute of that name (so d['items'] finds a key, then a method).
  if (key.is_string() && !obj.is_namespace()) {
    if (Value m = bound_method(*this, obj, key.str()); !m.is_undefined()) return m;
  }
  return Value(Undefined{"'" + obj.type_name() + " object' has no element " + key.repr()});
}

Value Interpreter::eval_slice(const SliceExpr& s, const ScopePtr& scope) {
  Value obj = eval(*s.obj, scope);
  auto part = [&](const ExprPtr& e) -> std::optional<int64_t> {
    if (!e) return std::nullopt;
    Value v = eval(*e, scope);
    if (v.is_none()) return std::nullopt;
    if (v.is_undefined()) undefined_error(v);
    if (!v.is_number() || v.is_float()) type_error("slice indices must be integers or None");
    return v.as_int();
  };
  std::optional<int64_t> start = part(s.start), stop = part(s.stop), step_opt = part(s.step);
  if (obj.is_undefined()) undefined_error(obj);
  int64_t step = step_opt.value_or(1);
  if (step == 0) throw TemplateError(ErrorType::type, "slice step cannot be zero");
  auto indices = [&](int64_t n) {
    // Python's slice.indices(n).
    auto clamp = [&](std::optional<int64_t> v, int64_t dflt) {
      if (!v) return dflt;
      int64_t x = *v;
      if (x < 0) x += n;
      if (step > 0) return std::clamp<int64_t>(x, 0, n);
      return std::clamp<int64_t>(x, -1, n - 1);
    };
    int64_t b = clamp(start, step > 0 ? 0 : n - 1);
    int64_t e = clamp(stop, step > 0 ? n : -1);
    std::vector<size_t> idx;
    for (int64_t i = b; step > 0 ? i < e : i > e; i += step) idx.push_back(size_t(i));
    return idx;
  };
  if (obj.is_list()) {
    const auto& items = obj.list().items;
    std::vector<Value> out;
    for (size_t i : indices(int64_t(items.size()))) out.push_back(items[i]);
    charge(out.size());
    return Value::make_list(std::move(out), obj.list().tuple);
  }
  if (obj.is_string()) {
    std::vector<char32_t> cps = pystr::decode(obj.str());
    std::string out;
    for (size_t i : indices(int64_t(cps.size()))) pystr::append_utf8(out, cps[i]);
    charge(out.size() / 16);
    return Value(std::move(out));
  }
  return Value(Undefined{"'" + obj.type_name() + " object' has no element (not subscriptable)"});
}

Value Interpreter::apply_filter(const std::string& name, Value operand, CallArgs& args) {
  charge(1);
  const FilterFn* f = find_filter(name);
  if (!f) throw TemplateError(ErrorType::runtime, "No filter named '" + name + "' found.");
  Value result = (*f)(*this, operand, args);
  if (result.is_string()) check_size(result.str().size());  // e.g. escape: up to 5 times its input
  return result;
}

bool Interpreter::apply_test(const std::string& name, const Value& operand, CallArgs& args) {
  charge(1);
  const TestFn* t = find_test(name);
  if (!t) throw TemplateError(ErrorType::runtime, "No test named '" + name + "' found.");
  return (*t)(*this, operand, args);
}

}  // namespace keel::tmpl
