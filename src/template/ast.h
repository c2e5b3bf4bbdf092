// The syntax tree of a template: expressions and statements, as jinja2's parser builds them.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "template/value.h"

namespace keel::tmpl {

struct Expr;
struct Stmt;
using ExprPtr = std::unique_ptr<Expr>;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

enum class ExprKind {
  literal, name, list, dict, unary, binary, compare, logical, conditional, getattr, getitem, slice, call, filter, test
};

struct Expr {
  ExprKind kind;
  int line;
  Expr(ExprKind k, int l) : kind(k), line(l) {}
  virtual ~Expr() = default;
};

struct Literal : Expr {
  Value value;
  Literal(Value v, int l) : Expr(ExprKind::literal, l), value(std::move(v)) {}
};

struct NameExpr : Expr {
  std::string name;
  NameExpr(std::string n, int l) : Expr(ExprKind::name, l), name(std::move(n)) {}
};

struct ListExpr : Expr {  // [a, b] or (a, b)
  std::vector<ExprPtr> items;
  bool tuple;
  ListExpr(bool t, int l) : Expr(ExprKind::list, l), tuple(t) {}
};

struct DictExpr : Expr {
  std::vector<std::pair<ExprPtr, ExprPtr>> items;
  explicit DictExpr(int l) : Expr(ExprKind::dict, l) {}
};

struct UnaryExpr : Expr {  // op: "not", "-", "+"
  std::string op;
  ExprPtr operand;
  UnaryExpr(std::string o, ExprPtr e, int l) : Expr(ExprKind::unary, l), op(std::move(o)), operand(std::move(e)) {}
};

struct BinaryExpr : Expr {  // op: + - * / // % ** ~
  std::string op;
  ExprPtr lhs, rhs;
  BinaryExpr(std::string o, ExprPtr a, ExprPtr b, int l)
      : Expr(ExprKind::binary, l), op(std::move(o)), lhs(std::move(a)), rhs(std::move(b)) {}
};

struct LogicalExpr : Expr {  // "and" / "or", short-circuit, yields an operand as Python does
  bool is_and;
  ExprPtr lhs, rhs;
  LogicalExpr(bool a, ExprPtr x, ExprPtr y, int l) : Expr(ExprKind::logical, l), is_and(a), lhs(std::move(x)), rhs(std::move(y)) {}
};

struct CompareExpr : Expr {  // a < b <= c: chained; ops == != < <= > >= in notin
  ExprPtr first;
  std::vector<std::pair<std::string, ExprPtr>> rest;
  CompareExpr(ExprPtr f, int l) : Expr(ExprKind::compare, l), first(std::move(f)) {}
};

struct ConditionalExpr : Expr {  // a if cond else b (else_ may be null: undefined)
  ExprPtr then, cond, else_;
  explicit ConditionalExpr(int l) : Expr(ExprKind::conditional, l) {}
};

struct GetAttrExpr : Expr {  // obj.name
  ExprPtr obj;
  std::string name;
  GetAttrExpr(ExprPtr o, std::string n, int l) : Expr(ExprKind::getattr, l), obj(std::move(o)), name(std::move(n)) {}
};

struct GetItemExpr : Expr {  // obj[index]
  ExprPtr obj, index;
  GetItemExpr(ExprPtr o, ExprPtr i, int l) : Expr(ExprKind::getitem, l), obj(std::move(o)), index(std::move(i)) {}
};

struct SliceExpr : Expr {  // obj[start:stop:step], each part optional
  ExprPtr obj, start, stop, step;
  explicit SliceExpr(int l) : Expr(ExprKind::slice, l) {}
};

struct Arguments {
  std::vector<ExprPtr> positional;
  std::vector<std::pair<std::string, ExprPtr>> keyword;
};

struct CallExpr : Expr {
  ExprPtr callee;
  Arguments args;
  explicit CallExpr(ExprPtr c, int l) : Expr(ExprKind::call, l), callee(std::move(c)) {}
};

struct FilterExpr : Expr {  // operand | name(args)
  ExprPtr operand;
  std::string name;
  Arguments args;
  FilterExpr(ExprPtr o, std::string n, int l) : Expr(ExprKind::filter, l), operand(std::move(o)), name(std::move(n)) {}
};

struct TestExpr : Expr {  // operand is [not] name(args)
  ExprPtr operand;
  std::string name;
  bool negated = false;
  Arguments args;
  TestExpr(ExprPtr o, std::string n, int l) : Expr(ExprKind::test, l), operand(std::move(o)), name(std::move(n)) {}
};

enum class StmtKind { text, output, if_, for_, set, set_block, macro, call_block, filter_block, break_, continue_, scope };

struct Stmt {
  StmtKind kind;
  int line;
  Stmt(StmtKind k, int l) : kind(k), line(l) {}
  virtual ~Stmt() = default;
};

struct TextStmt : Stmt {
  std::string text;
  TextStmt(std::string t, int l) : Stmt(StmtKind::text, l), text(std::move(t)) {}
};

struct OutputStmt : Stmt {
  ExprPtr expr;
  OutputStmt(ExprPtr e, int l) : Stmt(StmtKind::output, l), expr(std::move(e)) {}
};

struct IfStmt : Stmt {
  std::vector<std::pair<ExprPtr, Body>> branches;  // if + elifs
  Body else_body;
  explicit IfStmt(int l) : Stmt(StmtKind::if_, l) {}
};

struct ForStmt : Stmt {
  std::vector<std::string> targets;  // one name, or several to unpack
  ExprPtr iter, filter;
  Body body, else_body;
  bool recursive = false;
  explicit ForStmt(int l) : Stmt(StmtKind::for_, l) {}
};

// An assignment target: a name, names to unpack, or namespace.attr.
struct SetTarget {
  std::vector<std::string> names;
  std::string ns_attr;  // non-empty: names[0].ns_attr
};

struct SetStmt : Stmt {
  SetTarget target;
  ExprPtr value;
  explicit SetStmt(int l) : Stmt(StmtKind::set, l) {}
};

struct SetBlockStmt : Stmt {  // {% set x | filter %}body{% endset %}
  SetTarget target;
  std::vector<std::unique_ptr<FilterExpr>> filters;  // operand null: applied to the body
  Body body;
  explicit SetBlockStmt(int l) : Stmt(StmtKind::set_block, l) {}
};

struct MacroParam {
  std::string name;
  ExprPtr default_value;  // may be null
};

struct MacroStmt : Stmt {
  std::string name;
  std::vector<MacroParam> params;
  Body body;
  explicit MacroStmt(int l) : Stmt(StmtKind::macro, l) {}
};

struct CallBlockStmt : Stmt {  // {% call(params) macro(args) %}body{% endcall %}
  std::unique_ptr<CallExpr> call;
  std::vector<MacroParam> caller_params;
  Body body;
  explicit CallBlockStmt(int l) : Stmt(StmtKind::call_block, l) {}
};

struct FilterBlockStmt : Stmt {
  std::vector<std::unique_ptr<FilterExpr>> filters;
  Body body;
  explicit FilterBlockStmt(int l) : Stmt(StmtKind::filter_block, l) {}
};

struct ScopeStmt : Stmt {  // {% generation %} and {% with %}: a body rendered in place
  std::vector<std::pair<std::string, ExprPtr>> assignments;
  Body body;
  bool new_scope = false;
  explicit ScopeStmt(int l) : Stmt(StmtKind::scope, l) {}
};

struct BreakStmt : Stmt {
  explicit BreakStmt(int l) : Stmt(StmtKind::break_, l) {}
};
struct ContinueStmt : Stmt {
  explicit ContinueStmt(int l) : Stmt(StmtKind::continue_, l) {}
};

}  // namespace keel::tmpl
