#include "template/parser.h"

#include <initializer_list>

#include "template/error.h"

namespace keel::tmpl {

namespace {

class Parser {
 public:
  Parser(const std::vector<Token>& tokens, const ParseOptions& options) : toks_(tokens), opt_(options) {}

  Body parse_template() {
    Body body = subparse({});
    if (cur().type != TokenType::eof) fail("unexpected '" + describe(cur()) + "'");
    return body;
  }

 private:
  // ---- token helpers ----
  const Token& cur() const { return toks_[pos_]; }
  const Token& peek(size_t n = 1) const { return toks_[std::min(pos_ + n, toks_.size() - 1)]; }
  void advance() {
    if (pos_ + 1 < toks_.size()) ++pos_;
  }
  bool is_op(const char* op) const { return cur().type == TokenType::op && cur().text == op; }
  bool is_name(const char* name) const { return cur().type == TokenType::name && cur().text == name; }
  bool skip_op(const char* op) {
    if (!is_op(op)) return false;
    advance();
    return true;
  }
  bool skip_name(const char* name) {
    if (!is_name(name)) return false;
    advance();
    return true;
  }
  static std::string describe(const Token& t) {
    switch (t.type) {
      case TokenType::eof: return "end of template";
      case TokenType::block_end: return "end of statement block";
      case TokenType::var_end: return "end of print statement";
      case TokenType::block_begin: return "begin of statement block";
      case TokenType::var_begin: return "begin of print statement";
      case TokenType::text: return "template data";
      default: return t.text;
    }
  }
  [[noreturn]] void fail(const std::string& msg) const {
    throw TemplateError(ErrorType::syntax, msg + " (template line " + std::to_string(cur().line) + ")");
  }
  void expect_op(const char* op) {
    if (!skip_op(op)) fail(std::string("expected '") + op + "', got '" + describe(cur()) + "'");
  }
  std::string expect_name() {
    if (cur().type != TokenType::name) fail("expected a name, got '" + describe(cur()) + "'");
    std::string n = cur().text;
    advance();
    return n;
  }
  void expect_block_end() {
    if (cur().type != TokenType::block_end) fail("expected end of statement block, got '" + describe(cur()) + "'");
    advance();
  }

  // Guards recursion depth for expressions and nested blocks.
  struct DepthGuard {
    Parser& p;
    explicit DepthGuard(Parser& parser) : p(parser) {
      if (++p.depth_ > p.opt_.max_depth) p.fail("template nests too deeply (limit " + std::to_string(p.opt_.max_depth) + ")");
    }
    ~DepthGuard() { --p.depth_; }
  };
  // While alive, the parser is (or is not) inside an if: decides whether unknown filters fail now.
  struct SoftScope {
    Parser& p;
    bool saved;
    SoftScope(Parser& parser, bool soft) : p(parser), saved(parser.soft_) { p.soft_ = soft; }
    ~SoftScope() { p.soft_ = saved; }
  };

  // ---- statements ----
  Body subparse(std::initializer_list<const char*> end_names) {
    DepthGuard guard(*this);
    Body body;
    while (true) {
      const Token& t = cur();
      if (t.type == TokenType::eof) {
        if (end_names.size()) {
          std::string expected;
          for (const char* n : end_names) expected += std::string(expected.empty() ? "" : " or ") + "'" + n + "'";
          fail("unexpected end of template, expected " + expected);
        }
        return body;
      }
      if (t.type == TokenType::text) {
        body.push_back(std::make_unique<TextStmt>(t.text, t.line));
        advance();
      } else if (t.type == TokenType::var_begin) {
        int line = t.line;
        advance();
        ExprPtr e = parse_tuple(false, true, {}, false);
        if (cur().type != TokenType::var_end) fail("expected end of print statement, got '" + describe(cur()) + "'");
        advance();
        body.push_back(std::make_unique<OutputStmt>(std::move(e), line));
      } else if (t.type == TokenType::block_begin) {
        const Token& kw = peek();
        if (kw.type == TokenType::name)
          for (const char* n : end_names)
            if (kw.text == n) {
              advance();  // onto the keyword; the caller consumes it
              return body;
            }
        advance();
        body.push_back(parse_statement());
      } else {
        fail("unexpected '" + describe(t) + "'");
      }
    }
  }

  // Parses a body up to one of end_names; leaves the parser on that keyword.
  Body parse_body(std::initializer_list<const char*> end_names) {
    expect_block_end();
    return subparse(end_names);
  }
  void expect_end_tag(const char* name) {
    if (!skip_name(name)) fail(std::string("expected '") + name + "'");
    expect_block_end();
  }

  StmtPtr parse_statement() {
    if (cur().type != TokenType::name) fail("tag name expected");
    const std::string kw = cur().text;
    const int line = cur().line;
    advance();
    if (kw == "if") return parse_if(line);
    if (kw == "for") return parse_for(line);
    if (kw == "set") return parse_set(line);
    if (kw == "macro") return parse_macro(line);
    if (kw == "call") return parse_call_block(line);
    if (kw == "filter") return parse_filter_block(line);
    if (kw == "break" || kw == "continue") {
      if (loop_depth_ == 0) fail("'" + kw + "' outside of a loop");
      expect_block_end();
      if (kw == "break") return std::make_unique<BreakStmt>(line);
      return std::make_unique<ContinueStmt>(line);
    }
    if (kw == "generation") {
      auto s = std::make_unique<ScopeStmt>(line);
      s->body = parse_body({"endgeneration"});
      expect_end_tag("endgeneration");
      return s;
    }
    if (kw == "with") {
      auto s = std::make_unique<ScopeStmt>(line);
      s->new_scope = true;
      while (cur().type != TokenType::block_end) {
        if (!s->assignments.empty()) expect_op(",");
        std::string name = expect_name();
        expect_op("=");
        s->assignments.emplace_back(name, parse_expression(true));
      }
      s->body = parse_body({"endwith"});
      expect_end_tag("endwith");
      return s;
    }
    fail("encountered unknown tag '" + kw + "'");
  }

  StmtPtr parse_if(int line) {
    auto s = std::make_unique<IfStmt>(line);
    SoftScope soft(*this, true);
    while (true) {
      ExprPtr cond = parse_tuple(false, false, {}, false);
      Body body = parse_body({"elif", "else", "endif"});
      s->branches.emplace_back(std::move(cond), std::move(body));
      if (skip_name("elif")) continue;
      if (skip_name("else")) {
        s->else_body = parse_body({"endif"});
      }
      expect_end_tag("endif");
      return s;
    }
  }

  StmtPtr parse_for(int line) {
    auto s = std::make_unique<ForStmt>(line);
    do {
      s->targets.push_back(expect_name());
    } while (skip_op(","));
    if (!skip_name("in")) fail("expected 'in' in for loop");
    s->iter = parse_tuple(false, false, {"recursive"}, false);
    SoftScope inner(*this, false);
    if (skip_name("if")) s->filter = parse_expression(true);
    if (skip_name("recursive")) s->recursive = true;
    ++loop_depth_;
    s->body = parse_body({"endfor", "else"});
    --loop_depth_;
    if (skip_name("else")) s->else_body = parse_body({"endfor"});
    expect_end_tag("endfor");
    return s;
  }

  SetTarget parse_set_target() {
    SetTarget t;
    t.names.push_back(expect_name());
    if (is_op(".") && peek().type == TokenType::name) {
      advance();
      t.ns_attr = expect_name();
      return t;
    }
    while (skip_op(",")) {
      if (cur().type != TokenType::name) break;
      t.names.push_back(expect_name());
    }
    return t;
  }

  StmtPtr parse_set(int line) {
    SetTarget target = parse_set_target();
    if (skip_op("=")) {
      auto s = std::make_unique<SetStmt>(line);
      s->target = std::move(target);
      s->value = parse_tuple(false, true, {}, false);
      expect_block_end();
      return s;
    }
    auto s = std::make_unique<SetBlockStmt>(line);
    s->target = std::move(target);
    while (skip_op("|")) s->filters.push_back(parse_filter_call(nullptr));
    SoftScope inner(*this, false);
    s->body = parse_body({"endset"});
    expect_end_tag("endset");
    return s;
  }

  std::vector<MacroParam> parse_signature() {
    std::vector<MacroParam> params;
    expect_op("(");
    while (!is_op(")")) {
      if (!params.empty()) expect_op(",");
      if (is_op(")")) break;
      MacroParam p;
      p.name = expect_name();
      if (skip_op("=")) p.default_value = parse_expression(true);
      else if (!params.empty() && params.back().default_value) fail("non-default argument follows default argument");
      params.push_back(std::move(p));
    }
    expect_op(")");
    return params;
  }

  StmtPtr parse_macro(int line) {
    auto s = std::make_unique<MacroStmt>(line);
    s->name = expect_name();
    s->params = parse_signature();
    SoftScope inner(*this, false);
    int saved_loops = loop_depth_;
    loop_depth_ = 0;
    s->body = parse_body({"endmacro"});
    loop_depth_ = saved_loops;
    expect_end_tag("endmacro");
    return s;
  }

  StmtPtr parse_call_block(int line) {
    auto s = std::make_unique<CallBlockStmt>(line);
    if (is_op("(")) s->caller_params = parse_signature();
    ExprPtr call = parse_expression(true);
    if (call->kind != ExprKind::call) fail("expected a call after {% call %}");
    s->call.reset(static_cast<CallExpr*>(call.release()));
    SoftScope inner(*this, false);
    s->body = parse_body({"endcall"});
    expect_end_tag("endcall");
    return s;
  }

  StmtPtr parse_filter_block(int line) {
    auto s = std::make_unique<FilterBlockStmt>(line);
    do {
      s->filters.push_back(parse_filter_call(nullptr));
    } while (skip_op("|"));
    s->body = parse_body({"endfilter"});
    expect_end_tag("endfilter");
    return s;
  }

  // ---- expressions ----
  bool is_tuple_end(const std::vector<std::string>& extra_end) const {
    const Token& t = cur();
    if (t.type == TokenType::var_end || t.type == TokenType::block_end || t.type == TokenType::eof) return true;
    if (t.type == TokenType::op && t.text == ")") return true;
    if (t.type == TokenType::name)
      for (const auto& n : extra_end)
        if (t.text == n) return true;
    return false;
  }

  ExprPtr parse_tuple(bool simplified, bool with_condexpr, const std::vector<std::string>& extra_end, bool explicit_parens) {
    const int line = cur().line;
    std::vector<ExprPtr> items;
    bool is_tuple = false;
    while (true) {
      if (!items.empty()) expect_op(",");
      if (is_tuple_end(extra_end)) break;
      if (simplified) items.push_back(parse_primary());
      else items.push_back(parse_expression(with_condexpr));
      if (is_op(",")) is_tuple = true;
      else break;
    }
    if (!is_tuple) {
      if (!items.empty()) return std::move(items[0]);
      if (!explicit_parens) fail("expected an expression, got '" + describe(cur()) + "'");
    }
    auto l = std::make_unique<ListExpr>(true, line);
    l->items = std::move(items);
    return l;
  }

  ExprPtr parse_expression(bool with_condexpr) {
    DepthGuard guard(*this);
    return with_condexpr ? parse_condexpr() : parse_or();
  }

  ExprPtr parse_condexpr() {
    const int line = cur().line;
    ExprPtr expr1 = parse_or();
    while (skip_name("if")) {
      SoftScope soft(*this, true);
      auto c = std::make_unique<ConditionalExpr>(line);
      c->then = std::move(expr1);
      c->cond = parse_or();
      if (skip_name("else")) c->else_ = parse_condexpr();
      expr1 = std::move(c);
    }
    return expr1;
  }

  ExprPtr parse_or() {
    ExprPtr left = parse_and();
    while (is_name("or")) {
      int line = cur().line;
      advance();
      left = std::make_unique<LogicalExpr>(false, std::move(left), parse_and(), line);
    }
    return left;
  }

  ExprPtr parse_and() {
    ExprPtr left = parse_not();
    while (is_name("and")) {
      int line = cur().line;
      advance();
      left = std::make_unique<LogicalExpr>(true, std::move(left), parse_not(), line);
    }
    return left;
  }

  ExprPtr parse_not() {
    if (is_name("not")) {
      DepthGuard guard(*this);
      int line = cur().line;
      advance();
      return std::make_unique<UnaryExpr>("not", parse_not(), line);
    }
    return parse_compare();
  }

  ExprPtr parse_compare() {
    const int line = cur().line;
    ExprPtr first = parse_math1();
    std::unique_ptr<CompareExpr> cmp;
    while (true) {
      std::string op;
      if (cur().type == TokenType::op &&
          (cur().text == "==" || cur().text == "!=" || cur().text == "<" || cur().text == "<=" || cur().text == ">" || cur().text == ">=")) {
        op = cur().text;
        advance();
      } else if (is_name("in")) {
        op = "in";
        advance();
      } else if (is_name("not") && peek().type == TokenType::name && peek().text == "in") {
        op = "notin";
        advance();
        advance();
      } else {
        break;
      }
      if (!cmp) cmp = std::make_unique<CompareExpr>(std::move(first), line);
      cmp->rest.emplace_back(op, parse_math1());
    }
    if (cmp) return cmp;
    return first;
  }

  ExprPtr parse_binary_level(int level) {
    // level 0: + -   1: ~   2: * / // %   3: **
    static const std::vector<std::vector<std::string>> ops = {{"+", "-"}, {"~"}, {"*", "/", "//", "%"}, {"**"}};
    if (level == 4) return parse_unary(true);
    ExprPtr left = parse_binary_level(level + 1);
    while (cur().type == TokenType::op) {
      bool match = false;
      for (const auto& o : ops[size_t(level)]) match = match || cur().text == o;
      if (!match) break;
      std::string op = cur().text;
      int line = cur().line;
      advance();
      left = std::make_unique<BinaryExpr>(op, std::move(left), parse_binary_level(level + 1), line);
    }
    return left;
  }
  ExprPtr parse_math1() { return parse_binary_level(0); }

  ExprPtr parse_unary(bool with_filter) {
    DepthGuard guard(*this);
    const int line = cur().line;
    ExprPtr node;
    if (is_op("-") || is_op("+")) {
      std::string op = cur().text;
      advance();
      node = std::make_unique<UnaryExpr>(op, parse_unary(false), line);
    } else {
      node = parse_primary();
    }
    node = parse_postfix(std::move(node));
    if (with_filter) node = parse_filter_expr(std::move(node));
    return node;
  }

  ExprPtr parse_primary() {
    DepthGuard guard(*this);
    const Token& t = cur();
    const int line = t.line;
    if (t.type == TokenType::name) {
      std::string n = t.text;
      advance();
      if (n == "true" || n == "True") return std::make_unique<Literal>(Value(true), line);
      if (n == "false" || n == "False") return std::make_unique<Literal>(Value(false), line);
      if (n == "none" || n == "None") return std::make_unique<Literal>(Value(None{}), line);
      return std::make_unique<NameExpr>(n, line);
    }
    if (t.type == TokenType::string) {
      std::string s;
      while (cur().type == TokenType::string) {
        s += cur().text;
        advance();
      }
      return std::make_unique<Literal>(Value(s), line);
    }
    if (t.type == TokenType::integer) {
      int64_t v = t.int_value;
      advance();
      return std::make_unique<Literal>(Value(v), line);
    }
    if (t.type == TokenType::floating) {
      double v = t.float_value;
      advance();
      return std::make_unique<Literal>(Value(v), line);
    }
    if (skip_op("(")) {
      ExprPtr e = parse_tuple(false, true, {}, true);
      expect_op(")");
      return e;
    }
    if (skip_op("[")) {
      auto l = std::make_unique<ListExpr>(false, line);
      while (!is_op("]")) {
        if (!l->items.empty()) expect_op(",");
        if (is_op("]")) break;
        l->items.push_back(parse_expression(true));
      }
      expect_op("]");
      return l;
    }
    if (skip_op("{")) {
      auto d = std::make_unique<DictExpr>(line);
      while (!is_op("}")) {
        if (!d->items.empty()) expect_op(",");
        if (is_op("}")) break;
        ExprPtr k = parse_expression(true);
        expect_op(":");
        d->items.emplace_back(std::move(k), parse_expression(true));
      }
      expect_op("}");
      return d;
    }
    fail("unexpected '" + describe(t) + "'");
  }

  ExprPtr parse_postfix(ExprPtr node) {
    while (true) {
      if (is_op(".") || is_op("[")) node = parse_subscript(std::move(node));
      else if (is_op("(")) node = parse_call(std::move(node));
      else return node;
    }
  }

  ExprPtr parse_filter_expr(ExprPtr node) {
    while (true) {
      if (is_op("|")) {
        advance();
        node = parse_filter_call(std::move(node));
      } else if (is_name("is")) {
        node = parse_test(std::move(node));
      } else if (is_op("(")) {
        node = parse_call(std::move(node));
      } else {
        return node;
      }
    }
  }

  ExprPtr parse_subscript(ExprPtr node) {
    DepthGuard guard(*this);
    const int line = cur().line;
    if (skip_op(".")) {
      if (cur().type == TokenType::name) {
        std::string n = cur().text;
        advance();
        return std::make_unique<GetAttrExpr>(std::move(node), n, line);
      }
      if (cur().type == TokenType::integer) {
        auto idx = std::make_unique<Literal>(Value(cur().int_value), line);
        advance();
        return std::make_unique<GetItemExpr>(std::move(node), std::move(idx), line);
      }
      fail("expected name or number after '.'");
    }
    expect_op("[");
    ExprPtr start;
    if (!is_op(":")) start = parse_expression(true);
    if (skip_op(":")) {
      auto s = std::make_unique<SliceExpr>(line);
      s->obj = std::move(node);
      s->start = std::move(start);
      if (!is_op("]") && !is_op(":")) s->stop = parse_expression(true);
      if (skip_op(":") && !is_op("]")) s->step = parse_expression(true);
      expect_op("]");
      return s;
    }
    std::vector<ExprPtr> args;
    args.push_back(std::move(start));
    while (skip_op(",")) {
      if (is_op("]")) break;
      args.push_back(parse_expression(true));
    }
    expect_op("]");
    ExprPtr index;
    if (args.size() == 1) {
      index = std::move(args[0]);
    } else {
      auto t = std::make_unique<ListExpr>(true, line);
      t->items = std::move(args);
      index = std::move(t);
    }
    return std::make_unique<GetItemExpr>(std::move(node), std::move(index), line);
  }

  void parse_args(Arguments& args) {
    expect_op("(");
    while (!is_op(")")) {
      if (!args.positional.empty() || !args.keyword.empty()) expect_op(",");
      if (is_op(")")) break;
      if (is_op("*") || is_op("**")) fail("*args and **kwargs in calls are not supported");
      if (cur().type == TokenType::name && peek().type == TokenType::op && peek().text == "=") {
        std::string key = cur().text;
        advance();
        advance();
        args.keyword.emplace_back(key, parse_expression(true));
      } else {
        if (!args.keyword.empty()) fail("positional argument after keyword argument");
        args.positional.push_back(parse_expression(true));
      }
    }
    expect_op(")");
  }

  ExprPtr parse_call(ExprPtr callee) {
    DepthGuard guard(*this);
    auto c = std::make_unique<CallExpr>(std::move(callee), cur().line);
    parse_args(c->args);
    return c;
  }

  std::string parse_dotted_name() {
    std::string name = expect_name();
    while (is_op(".") && peek().type == TokenType::name) {
      advance();
      name.push_back('.');  // (two appends: GCC 12 warns falsely on `"." + string` here)
      name.append(expect_name());
    }
    return name;
  }

  std::unique_ptr<FilterExpr> parse_filter_call(ExprPtr operand) {
    DepthGuard guard(*this);
    const int line = cur().line;
    std::string name = parse_dotted_name();
    if (!soft_ && opt_.known_filter && !opt_.known_filter(name)) fail("no filter named '" + name + "'");
    auto f = std::make_unique<FilterExpr>(std::move(operand), name, line);
    if (is_op("(")) parse_args(f->args);
    return f;
  }

  ExprPtr parse_test(ExprPtr operand) {
    DepthGuard guard(*this);
    const int line = cur().line;
    advance();  // 'is'
    bool negated = skip_name("not");
    std::string name = parse_dotted_name();
    if (!soft_ && opt_.known_test && !opt_.known_test(name)) fail("no test named '" + name + "'");
    auto t = std::make_unique<TestExpr>(std::move(operand), name, line);
    t->negated = negated;
    const Token& c = cur();
    bool arg_start = c.type == TokenType::name || c.type == TokenType::string || c.type == TokenType::integer ||
                     c.type == TokenType::floating || (c.type == TokenType::op && (c.text == "[" || c.text == "{"));
    if (is_op("(")) {
      parse_args(t->args);
    } else if (arg_start && !is_name("else") && !is_name("or") && !is_name("and")) {
      if (is_name("is")) fail("you cannot chain multiple tests with is");
      t->args.positional.push_back(parse_postfix(parse_primary()));
    }
    return t;
  }

  const std::vector<Token>& toks_;
  const ParseOptions& opt_;
  size_t pos_ = 0;
  int depth_ = 0;
  int loop_depth_ = 0;
  bool soft_ = false;
};

}  // namespace

Body parse(const std::vector<Token>& tokens, const ParseOptions& options) {
  return Parser(tokens, options).parse_template();
}

}  // namespace keel::tmpl
