#include "template/chat.h"

#include <cstdio>

#include "keel/error.h"
#include "template/error.h"
#include "template/value.h"

namespace keel::tmpl {

bool json_deeper_than(const nlohmann::ordered_json& j, int limit) {
  if (!j.is_structured()) return false;
  if (limit <= 0) return true;
  for (const auto& item : j)
    if (json_deeper_than(item, limit - 1)) return true;
  return false;
}

nlohmann::ordered_json chat_context(const nlohmann::ordered_json& chat_case, const nlohmann::ordered_json& tokens,
                                    const nlohmann::ordered_json& overrides) {
  for (const auto* part : {&chat_case, &tokens, &overrides})
    if (json_deeper_than(*part, kMaxValueDepth))
      throw TemplateError(ErrorType::limit, "the conversation or its variables nest arrays and objects more than " +
                                                std::to_string(kMaxValueDepth) + " levels deep");
  if (!chat_case.is_object()) throw Error("chat case: expected a JSON object with \"messages\"");
  if (!chat_case.contains("messages") || !chat_case["messages"].is_array())
    throw Error("chat case: \"messages\" must be an array of message objects");
  nlohmann::ordered_json ctx = nlohmann::ordered_json::object();
  ctx["messages"] = chat_case["messages"];
  bool add_generation_prompt = false;
  if (chat_case.contains("add_generation_prompt")) {
    if (!chat_case["add_generation_prompt"].is_boolean()) throw Error("chat case: \"add_generation_prompt\" must be true or false");
    add_generation_prompt = chat_case["add_generation_prompt"].get<bool>();
  }
  ctx["add_generation_prompt"] = add_generation_prompt;
  if (chat_case.contains("tools") && !chat_case["tools"].is_null()) ctx["tools"] = chat_case["tools"];
  auto merge = [&ctx](const nlohmann::ordered_json& extra, const char* what) {
    if (extra.is_null()) return;
    if (!extra.is_object()) throw Error(std::string("chat case: ") + what + " must be a JSON object");
    for (auto it = extra.begin(); it != extra.end(); ++it) ctx[it.key()] = it.value();
  };
  merge(tokens, "the special tokens");
  if (chat_case.contains("vars")) merge(chat_case["vars"], "\"vars\"");
  merge(overrides, "the extra variables");
  return ctx;
}

std::tm parse_date(const std::string& s) {
  int y = 0, m = 0, d = 0;
  char tail = 0;
  if (std::sscanf(s.c_str(), "%4d-%2d-%2d%c", &y, &m, &d, &tail) != 3 || s.size() != 10 || m < 1 || m > 12 || d < 1 || d > 31)
    throw Error("expected a date as YYYY-MM-DD, got '" + s + "'", ErrorKind::usage);
  std::tm t{};
  t.tm_year = y - 1900;
  t.tm_mon = m - 1;
  t.tm_mday = d;
  t.tm_isdst = 0;
  // Fill in the weekday and day of the year (for %a, %A, %j) without a time zone.
  std::tm copy = t;
  time_t secs = timegm(&copy);
  gmtime_r(&secs, &t);
  return t;
}

std::tm today_local() {
  time_t now = time(nullptr);
  std::tm t{};
  localtime_r(&now, &t);
  return t;
}

}  // namespace keel::tmpl
