#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "keel/error.h"
#include "test_paths.h"

using keel::gguf::File;

namespace {

std::vector<char> read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

std::string write_temp(const std::vector<char>& bytes, const std::string& tag) {
  std::string path = keel::test::temp_dir() + "keel_gguf_" + tag + ".gguf";
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return path;
}

std::string open_error(const std::string& path) {
  try {
    File::open(path);
  } catch (const keel::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Gguf, ReadsStories260K) {
  File f = File::open(keel::test::shared("models/stories260K.gguf"));
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  EXPECT_EQ(f.require_u32("llama.embedding_length"), 64u);
  EXPECT_EQ(f.get_array("tokenizer.ggml.tokens")->items.size(), 512u);
  const auto& emb = f.require_tensor("token_embd.weight");
  EXPECT_EQ(emb.ne[0], 64u);
  EXPECT_EQ(emb.ne[1], 512u);
  EXPECT_EQ(emb.type, keel::quant::Type::F32);
  EXPECT_EQ(emb.n_bytes, 64u * 512u * 4u);
  EXPECT_EQ(f.tensors().size(), 48u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(emb.data) % 32, 0u);
}

TEST(Gguf, RefusesVersion1) {
  std::string msg = open_error(keel::test::shared("models/tinyllamas-stories-260k-f32.gguf"));
  EXPECT_NE(msg.find("GGUF v1, not supported"), std::string::npos) << msg;
}

TEST(Gguf, RefusesBadMagic) {
  auto bytes = read_all(keel::test::shared("models/stories260K.gguf"));
  bytes[0] = 'X';
  std::string msg = open_error(write_temp(bytes, "magic"));
  EXPECT_NE(msg.find("bad magic"), std::string::npos) << msg;
}

TEST(Gguf, MissingFileIsAClearError) {
  std::string msg = open_error("/nonexistent/model.gguf");
  EXPECT_NE(msg.find("/nonexistent/model.gguf"), std::string::npos) << msg;
}

// Truncating a valid file anywhere must end in a clean keel::Error, never a crash.
TEST(Gguf, TruncationAtManyOffsetsIsAlwaysAnError) {
  auto bytes = read_all(keel::test::shared("models/stories260K.gguf"));
  File full = File::open(keel::test::shared("models/stories260K.gguf"));
  const size_t header = full.data_offset();
  std::vector<size_t> cuts;
  for (size_t n = 0; n < header; n += 7) cuts.push_back(n);
  for (size_t n = header; n < bytes.size(); n += 4099) cuts.push_back(n);
  cuts.push_back(bytes.size() - 1);
  for (size_t n : cuts) {
    std::vector<char> cut(bytes.begin(), bytes.begin() + static_cast<long>(n));
    std::string msg = open_error(write_temp(cut, "trunc"));
    EXPECT_FALSE(msg.empty()) << "truncation at " << n << " was accepted";
  }
}

// Flipping header bytes may produce a different valid file, but never a crash or a huge
// allocation (a corrupt count is bounded by the bytes left in the file).
TEST(Gguf, ByteFlipsInHeaderNeverCrash) {
  auto bytes = read_all(keel::test::shared("models/stories260K.gguf"));
  File full = File::open(keel::test::shared("models/stories260K.gguf"));
  const size_t header = full.data_offset();
  std::mt19937 rng(1234);
  int errors = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    auto mutated = bytes;
    int flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < flips; ++k) {
      size_t pos = rng() % header;
      mutated[pos] = static_cast<char>(mutated[pos] ^ (1u << (rng() % 8)));
    }
    if (!open_error(write_temp(mutated, "flip")).empty()) ++errors;
  }
  EXPECT_GT(errors, 0);
}

TEST(Gguf, CorruptCountsAndLengthsNameTheField) {
  auto bytes = read_all(keel::test::shared("models/stories260K.gguf"));
  // n_kv at offset 16: a huge count must be refused up front.
  auto huge_kv = bytes;
  for (int i = 16; i < 24; ++i) huge_kv[i] = static_cast<char>(0x7f);
  std::string msg = open_error(write_temp(huge_kv, "kv"));
  EXPECT_NE(msg.find("metadata count"), std::string::npos) << msg;
  // The first key's length at offset 24.
  auto long_key = bytes;
  for (int i = 24; i < 32; ++i) long_key[i] = static_cast<char>(0x40);
  msg = open_error(write_temp(long_key, "key"));
  EXPECT_NE(msg.find("beyond the end of the file"), std::string::npos) << msg;
}
