// The chat-template renderer against jinja2: every template x conversation of
// ../shared/chat-templates renders byte for byte (or fails where jinja2 failed), snippets for the
// semantics the corpus leans on, and hostile templates stop with an error instead of hanging.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "template/chat.h"
#include "template/template.h"
#include "test_paths.h"

using namespace keel;
using json = nlohmann::ordered_json;

namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

tmpl::RenderOptions corpus_options() {
  tmpl::RenderOptions o;
  o.now = tmpl::parse_date("2026-01-15");  // the date the corpus was generated with
  return o;
}

std::string render(const std::string& source, const json& context) {
  return tmpl::Template(source).render(context, corpus_options());
}

void compile(const std::string& source) { tmpl::Template t(source); }

tmpl::ErrorType error_of(const std::string& source, const json& context = json::object(),
                         const tmpl::Limits& limits = tmpl::Limits{}) {
  try {
    tmpl::RenderOptions options = corpus_options();
    options.limits = limits;
    tmpl::Template(source).render(context, options);
  } catch (const tmpl::TemplateError& e) {
    return e.type();
  }
  ADD_FAILURE() << "no error from: " << source;
  return tmpl::ErrorType::runtime;
}

}  // namespace

TEST(ChatTemplates, CorpusRendersByteExactOrRefusesLikeJinja2) {
  const std::string dir = test::shared("chat-templates/");
  const json cases = json::parse(slurp(dir + "cases.json"))["cases"];
  const json templates = json::parse(slurp(dir + "templates.json"))["templates"];
  const json manifest = json::parse(slurp(dir + "expected/manifest.json"));
  ASSERT_GE(cases.size(), 13u);
  ASSERT_GE(templates.size(), 19u);
  int rendered = 0, refused = 0, pairs = 0;
  for (auto it = templates.begin(); it != templates.end(); ++it) {
    const std::string name = it.key();
    json tokens = json::object();
    for (const char* t : {"bos_token", "eos_token"})
      if (!it.value()[t].is_null()) tokens[t] = it.value()[t];
    const std::string source = slurp(dir + name + ".jinja");
    for (const json& c : cases) {
      const std::string base = dir + "expected/" + name + "__" + c["name"].get<std::string>();
      SCOPED_TRACE(base);
      ++pairs;
      const bool want_error = std::filesystem::exists(base + ".error");
      try {
        std::string got = tmpl::Template(source).render(tmpl::chat_context(c, tokens, nullptr), corpus_options());
        EXPECT_FALSE(want_error) << "jinja2 raised: " << slurp(base + ".error");
        if (!want_error) {
          EXPECT_EQ(got, slurp(base + ".txt"));
          rendered += got == slurp(base + ".txt");
        }
      } catch (const tmpl::TemplateError& e) {
        EXPECT_TRUE(want_error) << "keel raised " << tmpl::error_type_name(e.type()) << ": " << e.what();
        if (!want_error) continue;
        ++refused;
        // raise_exception's message is the template's own text: it must match exactly.
        if (e.type() == tmpl::ErrorType::raised) {
          EXPECT_EQ(std::string(e.what()), slurp(base + ".error"));
        }
      }
    }
  }
  // Every pair of the manifest was tried, with the manifest's totals.
  EXPECT_EQ(size_t(pairs), manifest["entries"].size());
  EXPECT_EQ(pairs, manifest["pairs"].get<int>());
  EXPECT_EQ(rendered, manifest["rendered"].get<int>());
  EXPECT_EQ(refused, manifest["raised"].get<int>());
}

// Snippets rendered by Python's jinja2 3.1.6 in Hugging Face's setup (ImmutableSandboxedEnvironment,
// trim_blocks, lstrip_blocks, transformers' tojson, strftime_now at 2026-01-15). "OK:" + the
// rendering, or "ERR:" + jinja2's exception (only the failure is checked).
const char* const kJinja2Snippets = R"json(
[
{
"src": "{% for x in xs %}\n  {{ x }}\n{% endfor %}\n",
"ctx": {
"xs": [
1,
2
]
},
"want": "OK:  1\n  2\n"
},
{
"src": "a  {%- if true %} b {% endif -%}  c\n  {# comment #}\n  d {{- ' e ' -}} f",
"ctx": {},
"want": "OK:a b c\n  d e f"
},
{
"src": "{% set ns = namespace(n=0) %}{% for i in range(5) if i is odd %}{% set ns.n = ns.n + i %}{{ loop.index }}/{{ loop.length }}{% if not loop.last %},{% endif %}{% endfor %} {{ ns.n }}",
"ctx": {},
"want": "OK:1/2,2/2 4"
},
{
"src": "{% macro m(a, b='B') %}[{{ a }}|{{ b }}|{{ varargs }}|{{ kwargs }}]{% endmacro %}{{ m(1) }}{{ m(1, 2, 3) }}{{ m(a=5, b=6) }}",
"ctx": {},
"want": "OK:[1|B|()|{}][1|2|(3,)|{}][5|6|()|{}]"
},
{
"src": "{{ '  x y  '.strip() }}|{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}|{{ 'abc'[::-1] }}|{{ 'héllo'[1:3] }}|{{ [1,2,3][-1] }}|{{ 'abc'.startswith(('x','a')) }}",
"ctx": {},
"want": "OK:x y|['a', 'b', '', 'c']|['a', 'b']|cba|él|3|True"
},
{
"src": "{{ d|tojson }}|{{ d|tojson(indent=2) }}|{{ d|dictsort }}|{{ d.items()|list }}|{{ d|length }}",
"ctx": {
"d": {
"b": [
1,
"é\n\"q\"",
null,
true,
1.5
],
"A": {}
}
},
"want": "OK:{\"b\": [1, \"é\\n\\\"q\\\"\", null, true, 1.5], \"A\": {}}|{\n  \"b\": [\n    1,\n    \"é\\n\\\"q\\\"\",\n    null,\n    true,\n    1.5\n  ],\n  \"A\": {}\n}|[('A', {}), ('b', [1, 'é\\n\"q\"', None, True, 1.5])]|[('b', [1, 'é\\n\"q\"', None, True, 1.5]), ('A', {})]|2"
},
{
"src": "{{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 10 }} {{ 1 + 2.0 }} {{ 'ab' * 3 }} {{ 3 ~ 'x' ~ none }}",
"ctx": {},
"want": "OK:3 -4 2 3.5 1024 3.0 ababab 3xNone"
},
{
"src": "{{ x is defined }}{{ y is none }}{{ 'a' is string }}{{ 1 is number }}{{ true is boolean }}{{ [] is iterable }}{{ {} is mapping }}{{ 'a' in 'cat' }}{{ 2 not in [1] }}",
"ctx": {
"y": null
},
"want": "OK:FalseTrueTrueTrueTrueTrueTrueTrueTrue"
},
{
"src": "{{ xs|selectattr('a')|map(attribute='b')|join(', ') }}|{{ xs|rejectattr('a', 'equalto', 1)|list|length }}|{{ xs|map(attribute='a')|unique|list }}",
"ctx": {
"xs": [
{
"a": 1,
"b": "x"
},
{
"a": 0,
"b": "y"
},
{
"a": 1,
"b": "z"
}
]
},
"want": "OK:x, z|1|[1, 0]"
},
{
"src": "{% for k, v in d.items() %}{{ k }}={{ v }};{% else %}empty{% endfor %}{% for x in [] %}x{% else %}none{% endfor %}",
"ctx": {
"d": {
"a": 1,
"b": [
1,
"x"
]
}
},
"want": "OK:a=1;b=[1, 'x'];none"
},
{
"src": "{{ (1, 'a') }} {{ [none, true, 1.0, 'it''s'] }} {{ {'k': 'v'} }} {{ 1e-5 }} {{ 123456789012345678.0 }} {{ 0.1 }}",
"ctx": {},
"want": "OK:(1, 'a') [None, True, 1.0, 'its'] {'k': 'v'} 1e-05 1.2345678901234568e+17 0.1"
},
{
"src": "{%- for m in messages -%}\n    {%- if loop.first and m.role == 'system' -%}\n        S:{{ m.content | trim }}\n    {%- elif m.role == 'user' %}\n        U:{{ m['content'] }}\n    {% endif %}\n{%- endfor %}",
"ctx": {
"messages": [
{
"role": "system",
"content": " hi "
},
{
"role": "user",
"content": "q"
}
]
},
"want": "OK:S:hi        U:q\n"
},
{
"src": "{{ 'a' if false }}|{{ 'x' if true else 'y' }}|{{ none|default('d') }}|{{ undefined_thing|default('d') }}|{{ ''|default('e', true) }}",
"ctx": {},
"want": "OK:|x|None|d|e"
},
{
"src": "{% set x = 'outer' %}{% for i in [1] %}{% set x = 'inner' %}{{ x }}{% endfor %}{{ x }}{% if true %}{% set y = 2 %}{% endif %}{{ y }}",
"ctx": {},
"want": "OK:innerouter2"
},
{
"src": "{{ 'Hello World'|upper }} {{ 'Hello'|lower }} {{ 'a-b'|replace('-', '+') }} {{ 'hello world'|title }} {{ [3,1,2]|sort|list }} {{ [1,2,3]|first }} {{ [1,2,3]|last }} {{ 'abc'|list }}",
"ctx": {},
"want": "OK:HELLO WORLD hello a+b Hello World [1, 2, 3] 1 3 ['a', 'b', 'c']"
},
{
"src": "{%- raw %}{{ not evaluated }}{% endraw %}",
"ctx": {},
"want": "OK:{{ not evaluated }}"
},
{
"src": "{% for i in range(3) %}{% if i == 1 %}{% continue %}{% endif %}{% if i == 2 %}{% break %}{% endif %}{{ i }}{% endfor %}",
"ctx": {},
"want": "OK:0"
},
{
"src": "{{ x.y }}",
"ctx": {
"x": {}
},
"want": "OK:"
},
{
"src": "{{ x.y.z }}",
"ctx": {
"x": {}
},
"want": "ERR:UndefinedError:'dict object' has no attribute 'y'"
},
{
"src": "{{ x['a'] }}",
"ctx": {},
"want": "ERR:UndefinedError:'x' is undefined"
},
{
"src": "{{ 'a' + 1 }}",
"ctx": {},
"want": "ERR:TypeError:can only concatenate str (not \"int\") to str"
},
{
"src": "{{ [1] < 'a' }}",
"ctx": {},
"want": "ERR:TypeError:'<' not supported between instances of 'list' and 'str'"
},
{
"src": "{{ strftime_now('%d %b %Y %A %j') }}",
"ctx": {},
"want": "OK:15 Jan 2026 Thursday 015"
},
{
"src": "{{ '%s-%d' % ('a', 3) }}|{{ 'x'.join(['a','b']) }}|{{ 'a\tb'|tojson }}|{{ 'é\u0001'|tojson }}",
"ctx": {},
"want": "OK:a-3|axb|\"a\\tb\"|\"é\\u0001\""
},
{
"src": "  {% if true %}\n    text\n  {% endif %}\n  {{ 'v' }}\n{#- c -#}\n  end",
"ctx": {},
"want": "OK:    text\n  vend"
},
{
"src": "{% set a, b = [1, 2] %}{{ a }}{{ b }}{% set t = (1,) %}{{ t }}{{ t|length }}",
"ctx": {},
"want": "OK:12(1,)1"
},
{
"src": "{{ messages[0].content[:5] }}{{ messages|length > 1 }}",
"ctx": {
"messages": [
{
"content": "abcdefg"
}
]
},
"want": "OK:abcdeFalse"
},
{
"src": "{{ loop }}",
"ctx": {},
"want": "OK:"
},
{
"src": "{% if x %}{{ x|nonexistent }}{% endif %}ok",
"ctx": {},
"want": "OK:ok"
},
{
"src": "{{ x|nonexistent }}",
"ctx": {},
"want": "ERR:TemplateAssertionError:No filter named 'nonexistent'."
},
{
"src": "{% macro f(n) %}{% if n > 0 %}{{ n }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(5) }}",
"ctx": {},
"want": "OK:54321"
},
{
"src": "{{ '\\u3000 x \\u3000'.strip() }}|{{ 'A\\u3000B'.split() }}",
"ctx": {},
"want": "OK:x|['A', 'B']"
},
{
"src": "{{ {'b':1,'a':2}|tojson(sort_keys=true) }} {{ [1,[2,{}]]|tojson(indent=1) }} {{ 'x'|tojson(separators=(',',':')) }}",
"ctx": {},
"want": "OK:{\"a\": 2, \"b\": 1} [\n 1,\n [\n  2,\n  {}\n ]\n] \"x\""
},
{
"src": "{{ dict(a=1)|tojson }}{{ x|string }}{{ none|string }}{{ [1,'a']|string }}",
"ctx": {
"x": 3
},
"want": "OK:{\"a\": 1}3None[1, 'a']"
},
{
"src": "{% filter upper %}abc{% endfilter %}{% set b %}in {{ 1 }}{% endset %}[{{ b }}]",
"ctx": {},
"want": "OK:ABC[in 1]"
},
{
"src": "{{ 1 == 1.0 }}{{ true == 1 }}{{ 'a' < 'b' }}{{ [1,2] == [1,2] }}{{ none == none }}{{ x == y }}",
"ctx": {},
"want": "OK:TrueTrueTrueTrueTrueTrue"
},
{
"src": "{{ ns.a }}{% set ns = namespace(a=[1]) %}{{ ns.a + [2] }}",
"ctx": {},
"want": "ERR:UndefinedError:'ns' is undefined"
},
{
"src": "{{ messages[-1]['content'].split('\n')[0].rstrip('.') }}",
"ctx": {
"messages": [
{
"content": "line one.\nline two"
}
]
},
"want": "OK:line one"
},
{
"src": "{{ 10 - 3 - 2 }} {{ 2 ** 3 ** 2 }} {{ not 1 == 2 }} {{ -2 ** 2 }} {{ 1 + 2 * 3 }}",
"ctx": {},
"want": "OK:5 64 True 4 7"
},
{
"src": "{{ [1,2]|join }}{{ x|join(',') }}{{ range(3)|list }}{{ range(1, 10, 3)|list }}",
"ctx": {},
"want": "OK:12[0, 1, 2][1, 4, 7]"
},
{
"src": "{{ 'abc'.endswith('c') }}{{ 'aXbXc'.replace('X', '-', 1) }}{{ 'a b c'.rsplit(' ', 1) }}{{ 'hello'.find('l') }}{{ 'ab'.upper() }}",
"ctx": {},
"want": "OK:Truea-bXc['a b', 'c']2AB"
},
{
"src": "{{ t|map('upper')|list }}{{ t|select('equalto', 'a')|list }}{{ t|reject('in', ['a'])|list }}",
"ctx": {
"t": [
"a",
"b"
]
},
"want": "OK:['A', 'B']['a']['b']"
},
{
"src": "{% for m in ms %}{{ loop.previtem is defined }}{{ loop.nextitem|default('-') }}{{ loop.revindex }}{% endfor %}",
"ctx": {
"ms": [
1,
2,
3
]
},
"want": "OK:False23True32True-1"
},
{
"src": "{{ x.content is string }}{{ x.get('c', 'dflt') }}{{ x.get('content') }}{{ x.keys()|list }}",
"ctx": {
"x": {
"content": "hi"
}
},
"want": "OK:Truedflthi['content']"
},
{
"src": "{%- set tools = tools | default([]) -%}{{ tools|length }}",
"ctx": {},
"want": "OK:0"
},
{
"src": "{{- bos_token -}}\n{%- if true -%}\n{{ '\n' }}\n{%- endif %}\n",
"ctx": {
"bos_token": "<s>"
},
"want": "OK:<s>\n"
}
]
)json";

TEST(ChatTemplates, MatchesJinja2OnSnippets) {
  const json table = json::parse(kJinja2Snippets);
  ASSERT_GT(table.size(), 40u);
  for (const json& s : table) {
    const std::string src = s["src"], want = s["want"];
    SCOPED_TRACE(src);
    if (want.rfind("OK:", 0) == 0) {
      std::string got;
      try {
        got = render(src, s["ctx"]);
      } catch (const tmpl::TemplateError& e) {
        ADD_FAILURE() << tmpl::error_type_name(e.type()) << ": " << e.what();
        continue;
      }
      EXPECT_EQ("OK:" + got, want);
    } else {
      EXPECT_THROW(render(src, s["ctx"]), tmpl::TemplateError) << want;
    }
  }
}

TEST(ChatTemplates, ErrorTypesFollowJinja2) {
  EXPECT_EQ(error_of("{{ raise_exception('no') }}"), tmpl::ErrorType::raised);
  EXPECT_EQ(error_of("{{ x.y }}"), tmpl::ErrorType::undefined);
  EXPECT_EQ(error_of("{{ 'a' + none }}"), tmpl::ErrorType::type);
  EXPECT_EQ(error_of("{% set l = [] %}{{ l.append(1) }}"), tmpl::ErrorType::security);
  EXPECT_EQ(error_of("{% if true %}{{ 1|from_json }}{% endif %}"), tmpl::ErrorType::runtime);
  // Outside an if, jinja2 rejects an unknown filter when compiling.
  EXPECT_THROW(compile("{{ 1|from_json }}"), tmpl::TemplateError);
  EXPECT_NO_THROW(compile("{% if false %}{{ 1|from_json }}{% endif %}"));
}

TEST(ChatTemplates, HostileTemplatesStopWithAnError) {
  // Runaway recursion, loops, output and value growth end with a limit error, not a hang or a crash.
  EXPECT_EQ(error_of("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}"), tmpl::ErrorType::limit);
  // (Smaller limits than the defaults keep this fast under the sanitizers; the defaults stop the
  // same templates within about a second.)
  tmpl::Limits small;
  small.max_work = 1'000'000;
  small.max_output_bytes = 1 << 20;
  EXPECT_EQ(error_of("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", json::object(), small),
            tmpl::ErrorType::limit);
  EXPECT_EQ(error_of("{% set ns = namespace(s='x') %}{% for i in range(100) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
                     json::object(), small),
            tmpl::ErrorType::limit);
  EXPECT_EQ(error_of("{% for i in range(100000) %}{{ 'x' * 100000 }}{% endfor %}", json::object(), small), tmpl::ErrorType::limit);
  EXPECT_EQ(error_of("{{ range(10**9)|length }}"), tmpl::ErrorType::limit);
  // Values nested ever deeper (printing and freeing them recurse) stop at a depth limit.
  EXPECT_EQ(error_of("{% set ns = namespace(x=1) %}{% for i in range(100000) %}{% set ns.x = [ns.x] %}{% endfor %}{{ ns.x }}"),
            tmpl::ErrorType::limit);
  json deep = json::array();
  for (int i = 0; i < 5000; ++i) deep = json::array({deep});
  EXPECT_EQ(error_of("{{ x }}", json{{"x", deep}}), tmpl::ErrorType::limit);
  // Deep nesting is refused by the parser instead of overflowing the stack.
  EXPECT_THROW(compile("{{ " + std::string(100000, '(') + "1" + std::string(100000, ')') + " }}"), tmpl::TemplateError);
  EXPECT_THROW(compile("{{ " + std::string(100000, '-') + "1 }}"), tmpl::TemplateError);
  EXPECT_THROW(compile("{{ " + std::string(100000, 'x') + std::string(100000, '|') + " }}"), tmpl::TemplateError);
  EXPECT_THROW(compile("{{ " + std::string(100000, '[') + " }}"), tmpl::TemplateError);
  std::string nested_ifs;
  for (int i = 0; i < 5000; ++i) nested_ifs += "{% if true %}";
  EXPECT_THROW(compile(nested_ifs), tmpl::TemplateError);
  // Malformed templates are syntax errors.
  for (const char* bad : {"{{ x", "{% if x %}", "{% for %}", "{# open", "{{ 'unterminated }}", "{% endif %}",
                          "{{ x ) }}", "{% set %}", "{% macro m( %}{% endmacro %}", "{{ 1 + }}", "{% frobnicate %}"}) {
    SCOPED_TRACE(bad);
    try {
      tmpl::Template t(bad);
      FAIL() << "compiled";
    } catch (const tmpl::TemplateError& e) {
      EXPECT_EQ(e.type(), tmpl::ErrorType::syntax);
    }
  }
}

TEST(ChatTemplates, ContextFollowsApplyChatTemplate) {
  const json c = json::parse(R"({"messages": [{"role": "user", "content": "hi"}], "vars": {"x": 1}})");
  const json ctx = tmpl::chat_context(c, json{{"bos_token", "<s>"}}, json{{"x", 2}});
  EXPECT_EQ(ctx["add_generation_prompt"], false);
  EXPECT_FALSE(ctx.contains("tools"));  // undefined in the template, not none
  EXPECT_EQ(ctx["bos_token"], "<s>");
  EXPECT_EQ(ctx["x"], 2);
  EXPECT_THROW(tmpl::chat_context(json::parse(R"({"messages": "hi"})"), nullptr, nullptr), Error);
  EXPECT_THROW(tmpl::chat_context(json::parse("[1]"), nullptr, nullptr), Error);
  EXPECT_THROW(tmpl::parse_date("2026-13-01"), Error);
  EXPECT_EQ(render("{{ strftime_now('%Y-%m-%d %a %b') }}", json::object()), "2026-01-15 Thu Jan");
}
