#include "tokenizer/json_input.h"

#include <algorithm>
#include <fstream>
#include <iterator>
#include <string_view>

#include "keel/error.h"

namespace keel::tokenizer {

namespace {

// The deepest nesting of arrays and objects in `text`, stopping early past `limit`.
int json_depth(std::string_view text, int limit) {
  int depth = 0, deepest = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size() && deepest <= limit; ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

}  // namespace

nlohmann::json read_json_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot open '" + path + "'");
  // Parsing from memory is several times faster than from the stream.
  const std::string text{std::istreambuf_iterator<char>(in), {}};
  if (json_depth(text, kMaxJsonDepth) > kMaxJsonDepth)
    throw Error(path + ": arrays and objects nested more than " + std::to_string(kMaxJsonDepth) +
                " levels deep (no tokenizer file keel reads nests like that)");
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw Error(path + ": not valid JSON: " + e.what());
  }
}

int64_t json_token_id(const std::string& path, const nlohmann::json& id, const std::string& field) {
  const bool ok = id.is_number_unsigned()   ? id.get<uint64_t>() < static_cast<uint64_t>(kMaxTokens)
                  : id.is_number_integer() ? id.get<int64_t>() >= 0 && id.get<int64_t>() < kMaxTokens
                                           : false;
  if (!ok)
    throw Error(path + ": " + field + " is " + id.dump() + ", expected a token id from 0 to " +
                std::to_string(kMaxTokens - 1));
  return id.get<int64_t>();
}

void check_dense_ids(const std::string& path, int64_t n_ids, int64_t listed) {
  if (n_ids == 0) throw Error(path + ": the vocabulary is empty (no model.vocab or added_tokens entries)");
  if (n_ids - listed > listed)
    throw Error(path + ": the largest token id is " + std::to_string(n_ids - 1) + " but only " +
                std::to_string(listed) + " tokens are listed (more than half the ids would be unused)");
}

}  // namespace keel::tokenizer
