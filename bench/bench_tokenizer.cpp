// Tokenizer throughput on a long mixed prompt (English prose, C++ code, Chinese and Japanese),
// about 173K Qwen3 tokens, as in the ANCHORS workload: byte-level BPE with the Qwen3
// tokenizer.json and SentencePiece with the llama-spm vocabulary, plus the gpt-2 and
// deepseek-llm vocab GGUFs that llama.cpp can load too. items/s = tokens/s.
// A second, low-repetition text is the worst case for the per-call caches ("Varied").
// Set KEEL_TOKENIZER_BENCH_TEXT=FILE / KEEL_TOKENIZER_BENCH_VARIED_TEXT=FILE to write the texts
// out (to run llama.cpp on the same input). llama.cpp was measured with node-llama-cpp 3.21.1:
// loadModel({modelPath, vocabOnly: true}), then model.tokenize(text, false), timing the
// process CPU time of the best of 5 runs, pinned to one core like this benchmark.
#include <benchmark/benchmark.h>

#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "tokenizer/tokenizer.h"

namespace {

using keel::tokenizer::Tokenizer;

// ../shared beside the checkout (KEEL_SHARED_DIR overrides), found from this file's path.
std::string shared_path(const std::string& rel) {
  if (const char* dir = std::getenv("KEEL_SHARED_DIR")) return std::string(dir) + "/" + rel;
  const std::string here = __FILE__;  // [REPO/]bench/bench_tokenizer.cpp
  const std::string repo = here.substr(0, here.rfind("bench/"));  // "" when compiled from the root
  return repo + "../shared/" + rel;
}

// Deterministic text of roughly `bytes` bytes.
std::string make_text(size_t bytes) {
  static const char* kWords[] = {
      "the", "model", "memory", "budget", "prefill", "chunk", "attention", "layer", "token", "cache",
      "is", "of", "and", "to", "in", "a", "that", "with", "for", "each", "page", "context", "long",
      "prompt", "kernel", "device", "runs", "within", "refuses", "plan", "Apple", "Qwen", "weights",
      "quantized", "throughput", "decode", "it's", "don't", "we'll", "numbers", "1234", "2026", "3.14159",
  };
  static const char* kCode[] = {
      "for (int i = 0; i < n; ++i) {\n    sum += a[i] * b[i];\n}\n",
      "static inline float silu(float x) { return x / (1.0f + std::exp(-x)); }\n",
      "    if (plan.total_bytes() > budget) throw Error(\"over budget\");\n",
      "def tokenize(text):\n    return [vocab[t] for t in text.split()]\n\n",
      "\t// [n_tokens, n_embd] f32\n\tstd::vector<float> hidden(n_tokens * n_embd);\n",
  };
  static const char* kCjk[] = {
      "模型在预填充阶段按块处理提示，内存预算在分配之前就已知。",
      "长上下文的注意力按页平铺，使用在线软最大值。",
      "トークナイザーは元のモデルと同じ番号を返さなければならない。",
      "量子化された重みはメモリから直接読み込まれる。",
  };
  uint64_t state = 88172645463325252ULL;
  auto next = [&](uint64_t n) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state % n;
  };
  std::string text;
  text.reserve(bytes + 256);
  while (text.size() < bytes) {
    const uint64_t kind = next(10);
    if (kind < 7) {  // a sentence
      const uint64_t n = 6 + next(14);
      for (uint64_t i = 0; i < n; ++i) {
        std::string w = kWords[next(sizeof kWords / sizeof *kWords)];
        if (i == 0) w[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(w[0])));
        text += w;
        text += i + 1 == n ? ". " : (next(8) == 0 ? ", " : " ");
      }
      if (next(5) == 0) text += "\n\n";
    } else if (kind < 9) {
      text += kCode[next(sizeof kCode / sizeof *kCode)];
    } else {
      text += kCjk[next(sizeof kCjk / sizeof *kCjk)];
      text += "\n";
    }
  }
  return text;
}

// A text with little repetition (made-up words, random identifiers, numbers and CJK
// characters): the worst case for the per-call piece caches.
std::string make_varied_text(size_t bytes) {
  static const char* kSyllables[] = {"ka", "lo", "mer", "ti", "sa", "qu", "en", "dor", "vi", "ul", "pre", "fix",
                                     "ta", "no", "rim", "ge", "zu", "ph", "or", "an", "ist", "bl", "ce", "wy"};
  uint64_t state = 0x9E3779B97F4A7C15ULL;
  auto next = [&](uint64_t n) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state % n;
  };
  std::string text;
  text.reserve(bytes + 64);
  while (text.size() < bytes) {
    const uint64_t kind = next(20);
    if (kind < 14) {
      const uint64_t n = 1 + next(4);
      for (uint64_t i = 0; i < n; ++i) text += kSyllables[next(sizeof kSyllables / sizeof *kSyllables)];
      text += next(10) == 0 ? ", " : " ";
    } else if (kind < 16) {
      text += std::to_string(next(1000000)) + (next(2) ? "." : " ");
    } else if (kind < 18) {
      text += "x_" + std::to_string(next(100000)) + "(y" + std::to_string(next(1000)) + ");\n    ";
    } else {
      for (int i = 0; i < 6; ++i) {
        const uint32_t cp = 0x4E00 + static_cast<uint32_t>(next(0x5200));
        text += static_cast<char>(0xE0 | (cp >> 12));
        text += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        text += static_cast<char>(0x80 | (cp & 0x3F));
      }
      text += "\n";
    }
  }
  return text;
}

const std::string& varied_text() {
  static const std::string text = [] {
    std::string t = make_varied_text(640 * 1024);
    if (const char* out = std::getenv("KEEL_TOKENIZER_BENCH_VARIED_TEXT")) std::ofstream(out, std::ios::binary) << t;
    return t;
  }();
  return text;
}

const std::string& bench_text() {
  static const std::string text = [] {
    std::string t = make_text(640 * 1024);
    if (const char* out = std::getenv("KEEL_TOKENIZER_BENCH_TEXT")) std::ofstream(out, std::ios::binary) << t;
    return t;
  }();
  return text;
}

void run(benchmark::State& state, const Tokenizer& tok, const std::string& text = bench_text()) {
  size_t n_tokens = 0;
  for (auto _ : state) {
    std::vector<int32_t> ids = tok.encode(text, false, false);
    n_tokens = ids.size();
    benchmark::DoNotOptimize(ids.data());
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * n_tokens));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
  state.counters["tokens"] = static_cast<double>(n_tokens);
}

void BM_TokenizeBpeQwen3(benchmark::State& state) {
  static const Tokenizer tok = Tokenizer::from_hf_json(shared_path("tokenizers/qwen3/tokenizer.json"));
  run(state, tok);
}

void BM_TokenizeSpmLlama(benchmark::State& state) {
  static const Tokenizer tok =
      Tokenizer::from_gguf(keel::gguf::File::open(shared_path("vocab/ggml-vocab-llama-spm.gguf")));
  run(state, tok);
}

void BM_TokenizeBpeLlama3(benchmark::State& state) {
  static const Tokenizer tok = Tokenizer::from_hf_json(shared_path("tokenizers/llama3/tokenizer.json"));
  run(state, tok);
}

// The same vocabularies llama.cpp can load from shared/vocab, for a side-by-side comparison.
void BM_TokenizeBpeGpt2Gguf(benchmark::State& state) {
  static const Tokenizer tok = Tokenizer::from_gguf(keel::gguf::File::open(shared_path("vocab/ggml-vocab-gpt-2.gguf")));
  run(state, tok);
}

void BM_TokenizeBpeDeepseekLlmGguf(benchmark::State& state) {
  static const Tokenizer tok =
      Tokenizer::from_gguf(keel::gguf::File::open(shared_path("vocab/ggml-vocab-deepseek-llm.gguf")));
  run(state, tok);
}

void BM_TokenizeBpeQwen3Varied(benchmark::State& state) {
  static const Tokenizer tok = Tokenizer::from_hf_json(shared_path("tokenizers/qwen3/tokenizer.json"));
  run(state, tok, varied_text());
}

void BM_TokenizeSpmLlamaVaried(benchmark::State& state) {
  static const Tokenizer tok =
      Tokenizer::from_gguf(keel::gguf::File::open(shared_path("vocab/ggml-vocab-llama-spm.gguf")));
  run(state, tok, varied_text());
}

void BM_TokenizeBpeGpt2GgufVaried(benchmark::State& state) {
  static const Tokenizer tok = Tokenizer::from_gguf(keel::gguf::File::open(shared_path("vocab/ggml-vocab-gpt-2.gguf")));
  run(state, tok, varied_text());
}

void BM_DetokenizeQwen3(benchmark::State& state) {
  static const Tokenizer tok = Tokenizer::from_hf_json(shared_path("tokenizers/qwen3/tokenizer.json"));
  const std::vector<int32_t> ids = tok.encode(bench_text(), false, false);
  for (auto _ : state) benchmark::DoNotOptimize(tok.decode(ids));
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * ids.size()));
}

}  // namespace

BENCHMARK(BM_TokenizeBpeQwen3)->Unit(benchmark::kMillisecond)->MinTime(2.0);
BENCHMARK(BM_TokenizeSpmLlama)->Unit(benchmark::kMillisecond)->MinTime(2.0);
BENCHMARK(BM_TokenizeBpeLlama3)->Unit(benchmark::kMillisecond)->MinTime(2.0);
BENCHMARK(BM_TokenizeBpeGpt2Gguf)->Unit(benchmark::kMillisecond)->MinTime(2.0);
BENCHMARK(BM_TokenizeBpeDeepseekLlmGguf)->Unit(benchmark::kMillisecond)->MinTime(2.0);
BENCHMARK(BM_TokenizeBpeQwen3Varied)->Unit(benchmark::kMillisecond)->MinTime(2.0);
BENCHMARK(BM_TokenizeSpmLlamaVaried)->Unit(benchmark::kMillisecond)->MinTime(2.0);
BENCHMARK(BM_TokenizeBpeGpt2GgufVaried)->Unit(benchmark::kMillisecond)->MinTime(2.0);
BENCHMARK(BM_DetokenizeQwen3)->Unit(benchmark::kMillisecond);
