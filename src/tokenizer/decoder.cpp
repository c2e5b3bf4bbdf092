#include "tokenizer/decoder.h"

#include <nlohmann/json.hpp>

namespace keel::tokenizer {

namespace {

using nlohmann::json;

std::string replace_all(const std::string& text, const Decoder::Step& s) {
  std::vector<Span> matches;
  if (s.kind == Decoder::Kind::replace_regex) {
    matches = s.regex->find_all(text);
  } else if (!s.pattern.empty()) {
    for (size_t at = text.find(s.pattern); at != std::string::npos; at = text.find(s.pattern, at + s.pattern.size()))
      matches.push_back({at, s.pattern.size()});
  }
  std::string out;
  size_t pos = 0;
  for (const Span& m : matches) {
    out.append(text, pos, m.offset - pos);
    out += s.content;
    pos = m.offset + m.length;
  }
  out.append(text, pos, std::string::npos);
  return out;
}

std::string strip(const std::string& token, const Decoder::Step& s) {
  const std::string& c = s.pattern;
  if (c.empty()) return token;
  size_t begin = 0, end = token.size();
  for (size_t i = 0; i < s.start && end - begin >= c.size() && token.compare(begin, c.size(), c) == 0; ++i)
    begin += c.size();
  for (size_t i = 0; i < s.stop && end - begin >= c.size() && token.compare(end - c.size(), c.size(), c) == 0; ++i)
    end -= c.size();
  return token.substr(begin, end - begin);
}

void collect(const json& spec, std::vector<Decoder::Step>& steps, std::vector<std::string>& unsupported) {
  using Kind = Decoder::Kind;
  if (spec.is_null()) return;
  const std::string type = spec.value("type", "");
  if (type == "Sequence") {
    for (const json& d : spec.at("decoders")) collect(d, steps, unsupported);
  } else if (type == "ByteLevel" || type == "Fuse") {
    steps.push_back({.kind = Kind::fuse});
  } else if (type == "Replace") {
    const json& pattern = spec.at("pattern");
    Decoder::Step s{.kind = pattern.contains("Regex") ? Kind::replace_regex : Kind::replace_string};
    if (s.kind == Kind::replace_regex)
      s.regex.emplace(pattern.at("Regex").get<std::string>());
    else
      s.pattern = pattern.at("String").get<std::string>();
    s.content = spec.at("content").get<std::string>();
    steps.push_back(std::move(s));
  } else if (type == "Strip") {
    Decoder::Step s{.kind = Kind::strip};
    s.pattern = spec.at("content").get<std::string>();
    s.start = spec.value("start", size_t{0});
    s.stop = spec.value("stop", size_t{0});
    steps.push_back(std::move(s));
  } else {
    unsupported.push_back(type.empty() ? "?" : type);
  }
}

}  // namespace

Decoder Decoder::from_json(const json& spec, std::vector<std::string>& unsupported) {
  Decoder d;
  collect(spec, d.steps_, unsupported);
  // A lone join is what concatenating the pieces does already.
  bool only_fuse = true;
  for (const Step& s : d.steps_) only_fuse = only_fuse && s.kind == Kind::fuse;
  if (only_fuse) d.steps_.clear();
  return d;
}

std::string Decoder::apply(std::vector<std::string> tokens) const {
  for (const Step& s : steps_) {
    if (s.kind == Kind::fuse) {
      std::string joined;
      for (const std::string& t : tokens) joined += t;
      tokens.assign(1, std::move(joined));
      continue;
    }
    for (std::string& t : tokens) t = s.kind == Kind::strip ? strip(t, s) : replace_all(t, s);
  }
  std::string out;
  for (const std::string& t : tokens) out += t;
  return out;
}

}  // namespace keel::tokenizer
