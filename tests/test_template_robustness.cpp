// Regression tests for what fuzzing the chat-template engine (fuzz/template.cpp) found: a
// hostile template (a GGUF's tokenizer.chat_template is untrusted) or conversation ends with a
// TemplateError, never a crash, a leak, a hang or gigabytes of memory. Inputs are hand-made.
#include <gtest/gtest.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <functional>
#include <string>

#include "template/chat.h"
#include "template/template.h"
#include "sanitizers.h"

using namespace keel;
using json = nlohmann::ordered_json;

namespace {

std::string render(const std::string& source, const json& context = json::object(), const tmpl::Limits& limits = {}) {
  tmpl::RenderOptions options;
  options.now = tmpl::parse_date("2025-01-31");
  options.limits = limits;
  return tmpl::Template(source).render(context, options);
}

// The TemplateError a rendering ends with; a test failure when it renders, and (uncaught) any
// other exception.
tmpl::ErrorType error_of(const std::string& source, const json& context = json::object(), const tmpl::Limits& limits = {}) {
  try {
    render(source, context, limits);
  } catch (const tmpl::TemplateError& e) {
    return e.type();
  }
  ADD_FAILURE() << "no error from: " << source;
  return tmpl::ErrorType::runtime;
}

// Runs `fn` on a thread with a 256 KiB stack: recursion that grows with the input overflows it
// at a few thousand levels, where the default 8 MiB would need hundreds of thousands.
void on_small_stack(const std::function<void()>& fn) {
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 256 << 10);
  pthread_t thread;
  auto body = [](void* arg) -> void* {
    (*static_cast<const std::function<void()>*>(arg))();
    return nullptr;
  };
  ASSERT_EQ(pthread_create(&thread, &attr, body, const_cast<std::function<void()>*>(&fn)), 0);
  pthread_join(thread, nullptr);
  pthread_attr_destroy(&attr);
}

// Renders `source` in a child process whose address space may grow by at most `headroom` bytes:
// true when it ended with the output or a TemplateError, false when it ran out of memory.
bool renders_within(const std::string& source, size_t headroom) {
  const pid_t pid = fork();
  if (pid == 0) {
    size_t pages = 0;
    std::ifstream("/proc/self/statm") >> pages;
    const rlim_t limit = pages * static_cast<rlim_t>(sysconf(_SC_PAGESIZE)) + headroom;
    const rlimit lim{limit, limit};
    if (setrlimit(RLIMIT_AS, &lim) != 0) _exit(3);
    try {
      render(source);
    } catch (const tmpl::TemplateError&) {
    } catch (const std::bad_alloc&) {
      _exit(2);
    }
    _exit(0);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

}  // namespace

// namespace() is the one mutable object: {% set ns.self = ns %} made a reference cycle that
// leaked (LeakSanitizer in the ASan run of this suite), and a chain of namespaces built in a loop
// was freed recursively, overflowing the stack (a 150-byte template crashed keel at 600k links).
TEST(TemplateRobustness, NamespaceCyclesAndChainsAreFreed) {
  EXPECT_EQ(render("{% set ns = namespace(a=1) %}{% set ns.me = ns %}{% set ns.l = [ns, {'k': ns}] %}{{ ns.me.me.a }}"), "1");
  on_small_stack([] {
    const std::string chain =
        "{% set h = namespace(cur=none) %}{% for i in range(20000) %}{% set h.cur = namespace(next=h.cur) %}{% endfor %}"
        "{{ h.cur.next.next is defined }}";
    EXPECT_EQ(render(chain), "True");
    tmpl::Limits small;
    small.max_work = 200'000;  // stops half way: the chain is freed on the error path too
    EXPECT_EQ(error_of(chain, json::object(), small), tmpl::ErrorType::limit);
  });
}

// Strings were copied on every read: a 60 MB string put 30 times in a list took 1.8 GB.
// Iterating a string built a Value per character (40 bytes each) before charging for them.
TEST(TemplateRobustness, LargeStringsAreNeitherCopiedNorExploded) {
#if KEEL_TEST_UNDER_ASAN
  GTEST_SKIP() << "RLIMIT_AS cannot bound an AddressSanitizer process";
#endif
  const std::string big = "{% set s = 'x' * 60000000 %}";
  EXPECT_TRUE(renders_within(big + "{% set l = [s,s,s,s,s,s,s,s,s,s,s,s,s,s,s,s,s,s,s,s,s,s,s,s,s,s,s,s,s,s] %}{{ l|length }}",
                             size_t{512} << 20));
  EXPECT_TRUE(renders_within(big + "{% for c in s %}{% endfor %}", size_t{512} << 20));
  EXPECT_TRUE(renders_within(big + "{{ s|list|length }}", size_t{512} << 20));
}

// Operations on a string take time in proportion to its length; they were charged one step, so a
// loop could search a 10 MB string a hundred thousand times (hours). The text of a list of
// shared strings was built without bound.
TEST(TemplateRobustness, WorkOnLargeStringsIsCharged) {
  tmpl::Limits limits;  // a tenth of the default work, so the sanitizer run stays quick
  limits.max_work = 2'000'000;
  const auto t0 = std::chrono::steady_clock::now();
  for (const char* loop : {"{{ 'y' in s }}", "{{ s[5] }}", "{{ s.count('y') }}", "{{ s|length }}"}) {
    SCOPED_TRACE(loop);
    const std::string source =
        std::string("{% set s = 'x' * 10000000 %}{% for i in range(100000) %}") + loop + "{% endfor %}";
    EXPECT_EQ(error_of(source, json::object(), limits), tmpl::ErrorType::limit);
  }
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 60.0);
  EXPECT_EQ(error_of("{% set s = 'x' * 10000000 %}{{ [s] * 100 }}"), tmpl::ErrorType::limit);
}

// Filters whose output is many times their input (a width, an indent, a replacement) built it
// before checking its size: std::length_error or gigabytes instead of a limit error.
TEST(TemplateRobustness, AmplifyingFiltersAreCheckedBeforeBuilding) {
  for (const char* source : {"{{ 'x'|indent(10**12) }}", "{{ ('\\n' * 1000000)|indent(1000) }}",
                             "{{ 'x'|center(10**12) }}", "{{ [[1]]|tojson(indent=10**12) }}",
                             "{{ [[[[1]]]]|tojson(indent='x' * 30000000) }}",
                             "{{ ('x' * 1000000)|replace('x', 'y' * 1000) }}",
                             "{{ ('x' * 1000000).replace('x', 'y' * 1000) }}", "{{ ('x' * 1000000).replace('', 'y' * 1000) }}"}) {
    SCOPED_TRACE(source);
    EXPECT_EQ(error_of(source), tmpl::ErrorType::limit);
  }
  // An empty string or list repeated 10**18 times looped 10**18 times.
  EXPECT_EQ(render("{{ '' * 10**18 }}|{{ [] * 10**18 }}|{{ ('ab' * 0)|length }}"), "|[]|0");
}

// A value of the wrong type reached std::get (std::bad_variant_access, which nothing caught);
// floats beyond int64, and integer arithmetic at its ends, were undefined behaviour; digits
// beyond int64 in an attribute path threw std::out_of_range.
TEST(TemplateRobustness, WrongTypesAndHugeNumbersAreTemplateErrors) {
  for (const char* source : {"{{ 'abc'|center('x') }}", "{{ 'abc'|indent([1]) }}", "{{ 'abc'|replace('a', 'b', 'c') }}",
                             "{{ 1.5|round('x') }}"}) {
    SCOPED_TRACE(source);
    EXPECT_EQ(error_of(source), tmpl::ErrorType::type);
  }
  for (const char* source : {"{{ 1e300|int }}", "{{ '%d' % 1e300 }}",
                             "{{ (-9223372036854775807 - 1)|abs }}", "{{ range(-9223372036854775807, 9223372036854775807) }}"}) {
    SCOPED_TRACE(source);
    EXPECT_EQ(error_of(source), tmpl::ErrorType::limit);
  }
  EXPECT_EQ(render("{{ 'nan'|float|int }} {{ 2.9|int }} {{ -2.9|int }}"), "0 2 -2");
  EXPECT_EQ(render("{{ range(-9223372036854775807 - 1, 9223372036854775807, 9223372036854775807)|list }}"),
            "[-9223372036854775808, -1, 9223372036854775806]");
  EXPECT_EQ(render("{{ [[1, 2]]|map(attribute='0.99999999999999999999')|list|length }}"), "1");
}

// A JSON object's keys went through Dict::set, which scans: a request message with 100k keys
// took minutes to render. namespace(d) and dict(d) did the same.
TEST(TemplateRobustness, LargeObjectsAreLinear) {
  json big = json::object();  // appended past ordered_map's own search, itself quadratic
  auto& members = static_cast<json::object_t::Container&>(big.get_ref<json::object_t&>());
  for (int i = 0; i < 100000; ++i) members.emplace_back(std::string("k").append(std::to_string(i)), i);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(render("{{ d|length }} {{ d.k99999 }} {{ namespace(d).k5 }} {{ dict(d)|length }}", json{{"d", big}}),
            "100000 99999 5 100000");
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 20.0);
}

// chat_context copied the conversation (recursively) before anything looked at its depth: a
// case file nested a million levels deep crashed `keel template` with a stack overflow.
TEST(TemplateRobustness, DeepConversationIsRefusedBeforeItIsCopied) {
  const json deep = json::parse("{\"messages\": [{\"role\": \"user\", \"content\": " + std::string(1000000, '[') +
                                std::string(1000000, ']') + "}]}");
  try {
    tmpl::chat_context(deep, json::object(), nullptr);
    FAIL() << "accepted";
  } catch (const tmpl::TemplateError& e) {
    EXPECT_EQ(e.type(), tmpl::ErrorType::limit);
    EXPECT_NE(std::string(e.what()).find("levels deep"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(tmpl::json_deeper_than(json::parse("[[1]]"), 1));
  EXPECT_FALSE(tmpl::json_deeper_than(json::parse("[[1]]"), 2));
  EXPECT_FALSE(tmpl::json_deeper_than(json(5), 0));
}
