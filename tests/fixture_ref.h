// Reading ../shared/fixtures references (see its README): prompts, stored logits rows, and the
// comparison keel's tests make (log-softmax difference, top-1 outside near-ties).
#pragma once
#include <cmath>
#include <cstring>
#include <algorithm>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "test_paths.h"

namespace keel::test {

struct Fixture {
  nlohmann::json ref;
  std::vector<int32_t> prompt_a, prompt_b, positions_b, greedy;
  int n_vocab = 512;
};

// A missing or unreadable reference is an error naming the file (not a JSON parse error, or rows
// indexed past the end of an empty table).
inline nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path);
  return nlohmann::json::parse(in);
}

inline Fixture load_fixture(const std::string& name, bool hf_dequant_greedy = false) {
  Fixture f;
  f.ref = read_json(shared("fixtures/" + name + ".ref.json"));
  f.prompt_a = f.ref["prompt_a"].get<std::vector<int32_t>>();
  f.prompt_b = f.ref["prompt_b"].get<std::vector<int32_t>>();
  f.positions_b = f.ref["positions"]["prompt_b"].get<std::vector<int32_t>>();
  f.greedy = (hf_dequant_greedy ? f.ref["hf_dequant_greedy"] : f.ref["greedy"])["tokens"].get<std::vector<int32_t>>();
  return f;
}

// rows x n_vocab little-endian float32; at least one whole row, nothing left over.
inline std::vector<std::vector<float>> read_rows_at(const std::string& path, int n_vocab) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::vector<char> bytes{std::istreambuf_iterator<char>(in), {}};
  const size_t row_bytes = sizeof(float) * static_cast<size_t>(n_vocab);
  if (bytes.empty() || bytes.size() % row_bytes != 0)
    throw std::runtime_error(path + " holds " + std::to_string(bytes.size()) + " bytes, not whole rows of " +
                             std::to_string(n_vocab) + " floats");
  std::vector<std::vector<float>> rows(bytes.size() / row_bytes, std::vector<float>(static_cast<size_t>(n_vocab)));
  for (size_t r = 0; r < rows.size(); ++r) std::memcpy(rows[r].data(), bytes.data() + r * row_bytes, row_bytes);
  return rows;
}
// A fixture's rows file (../shared/fixtures/FILE).
inline std::vector<std::vector<float>> read_rows(const std::string& file, int n_vocab) {
  return read_rows_at(shared("fixtures/" + file), n_vocab);
}

inline std::vector<double> log_softmax(const float* logits, int n) {
  double mx = logits[0];
  for (int i = 1; i < n; ++i) mx = std::max(mx, static_cast<double>(logits[i]));
  double sum = 0;
  for (int i = 0; i < n; ++i) sum += std::exp(static_cast<double>(logits[i]) - mx);
  const double lse = mx + std::log(sum);
  std::vector<double> out(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) out[i] = static_cast<double>(logits[i]) - lse;
  return out;
}

inline int top1(const std::vector<double>& v) {
  int best = 0;
  for (int i = 1; i < static_cast<int>(v.size()); ++i)
    if (v[i] > v[best]) best = i;
  return best;
}

// Gap between the reference's best and second-best entries (a near-tie when below 2e-3).
inline double top_gap(const std::vector<double>& v) {
  int best = top1(v);
  double second = -INFINITY;
  for (int i = 0; i < static_cast<int>(v.size()); ++i)
    if (i != best) second = std::max(second, v[i]);
  return v[best] - second;
}

struct RowComparison {
  double max_abs_diff = 0;   // max over rows of max |Δ log-softmax|
  int top1_mismatches = 0;   // outside near-ties of the reference
};

// Compares keel's logits (raw) with a reference row (raw logits, or log-probs: both normalised).
inline void compare_row(const float* keel_logits, const std::vector<float>& ref_row, RowComparison& acc) {
  const int n = static_cast<int>(ref_row.size());
  auto got = log_softmax(keel_logits, n);
  auto want = log_softmax(ref_row.data(), n);
  for (int i = 0; i < n; ++i) acc.max_abs_diff = std::max(acc.max_abs_diff, std::fabs(got[i] - want[i]));
  if (top_gap(want) >= 2e-3 && top1(got) != top1(want)) ++acc.top1_mismatches;
}

}  // namespace keel::test
