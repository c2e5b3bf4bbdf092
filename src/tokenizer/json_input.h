// Reading untrusted JSON tokenizer files (tokenizer.json, tokenizer_config.json): the limits
// both importers (Tokenizer::from_hf_json and tools' import_tokenizer_json) apply before a
// value sizes an allocation or indexes a table. Errors name the file, the field and the value.
#pragma once
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace keel::tokenizer {

// Real tokenizer files nest a few levels (a normalizer Sequence inside a Sequence at most).
// nlohmann parses iteratively, but copying and walking a parsed document recurse, so a file
// nested thousands of levels deep would overflow the stack there: it is refused before parsing.
constexpr int kMaxJsonDepth = 64;
// Token ids are below this (16.7M; real vocabularies have < 1M).
constexpr int64_t kMaxTokens = int64_t{1} << 24;

// Reads and parses `path`; throws keel::Error for a missing file, invalid JSON or nesting
// deeper than kMaxJsonDepth.
nlohmann::json read_json_file(const std::string& path);

// A token id: a JSON integer in [0, kMaxTokens). Fractions (3.5), huge values (1e300, 2^63-1)
// and negative ones are errors naming `field` ("model.vocab[\"abc\"]") and the value.
int64_t json_token_id(const std::string& path, const nlohmann::json& id, const std::string& field);

// `n_ids` (largest id + 1) against the `listed` tokens: ids must be nearly dense (no more unused
// ids than listed ones), so one corrupt id cannot allocate a vocabulary of millions.
void check_dense_ids(const std::string& path, int64_t n_ids, int64_t listed);

}  // namespace keel::tokenizer
