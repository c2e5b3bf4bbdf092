#include <gtest/gtest.h>

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "gguf/writer.h"
#include "keel/error.h"
#include "test_paths.h"

using namespace keel::gguf;
using keel::quant::Type;

namespace {

std::string temp_path(const std::string& tag) { return keel::test::temp_dir() + "keel_writer_" + tag + ".gguf"; }

bool temp_files_left(const std::string& path) {
  const std::filesystem::path p(path);
  for (const auto& e : std::filesystem::directory_iterator(p.parent_path()))
    if (e.path().filename().string().rfind(p.filename().string() + ".tmp.", 0) == 0) return true;
  return false;
}

Metadata every_type() {
  Metadata md;
  md.set("general.architecture", value_string("llama"));
  md.set("t.u8", value_u8(250));
  md.set("t.i8", value_i8(-100));
  md.set("t.u16", value_u16(65000));
  md.set("t.i16", value_i16(-32000));
  md.set("t.u32", value_u32(4000000000u));
  md.set("t.i32", value_i32(-2000000000));
  md.set("t.u64", value_u64(uint64_t{1} << 60));
  md.set("t.i64", value_i64(-(int64_t{1} << 60)));
  md.set("t.f32", value_f32(0.25f));
  md.set("t.f64", value_f64(1e-300));
  md.set("t.bool", value_bool(true));
  md.set("t.str", value_string(std::string("h\0llo", 5)));
  md.set("t.strs", value_string_array({"a", "", "ccc"}));
  md.set("t.nested", value_array(ValueType::array, {value_array(ValueType::i32, {value_i32(1), value_i32(-2)}),
                                                    value_array(ValueType::i32, {})}));
  md.set("t.empty", value_array(ValueType::f32, {}));
  return md;
}

}  // namespace

TEST(Writer, RoundTripsMetadataTensorsAndAlignment) {
  const std::string path = temp_path("roundtrip");
  Metadata md = every_type();
  md.set("general.alignment", value_u32(64));
  std::vector<TensorRecord> tensors = {
      {"a", Type::F32, {3}},          // 12 bytes: padding follows
      {"b", Type::Q8_0, {64, 2}},     // 2 rows of 2 blocks
      {"c", Type::F16, {5, 1, 2, 1}},
  };
  std::vector<uint8_t> a(12), b(4 * 34), c(20);
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<uint8_t>(i + 1);
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<uint8_t>(i * 7);
  for (size_t i = 0; i < c.size(); ++i) c[i] = static_cast<uint8_t>(200 - i);
  {
    Writer w(path, md, tensors);
    w.write(a.data(), a.size());
    w.write(b.data(), 34);  // in pieces
    w.write(b.data() + 34, b.size() - 34);
    w.write(c.data(), c.size());
    w.commit();
  }
  EXPECT_FALSE(temp_files_left(path));
  File f = File::open(path);
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), 64u);
  EXPECT_EQ(f.data_offset() % 64, 0u);
  ASSERT_EQ(f.metadata().size(), md.items().size());
  for (size_t i = 0; i < md.items().size(); ++i) {
    EXPECT_EQ(f.metadata()[i].first, md.items()[i].first);
    EXPECT_EQ(f.metadata()[i].second.type, md.items()[i].second.type);
    EXPECT_EQ(f.metadata()[i].second.to_display(100), md.items()[i].second.to_display(100)) << md.items()[i].first;
  }
  EXPECT_EQ(*f.get_int("t.u64"), int64_t{1} << 60);
  EXPECT_EQ(*f.get_int("t.i8"), -100);
  EXPECT_EQ(*f.get_string("t.str"), std::string("h\0llo", 5));
  const Array* nested = f.get_array("t.nested");
  ASSERT_NE(nested, nullptr);
  ASSERT_EQ(nested->items.size(), 2u);
  EXPECT_EQ(nested->items[0].as_array()->items[1].as_int(), -2);
  ASSERT_EQ(f.tensors().size(), 3u);
  const TensorInfo& tb = f.require_tensor("b");
  EXPECT_EQ(tb.type, Type::Q8_0);
  EXPECT_EQ(tb.ne[0], 64u);
  EXPECT_EQ(tb.ne[1], 2u);
  EXPECT_EQ(tb.offset % 64, 0u);
  EXPECT_EQ(std::memcmp(f.require_tensor("a").data, a.data(), a.size()), 0);
  EXPECT_EQ(std::memcmp(tb.data, b.data(), b.size()), 0);
  const TensorInfo& tc = f.require_tensor("c");
  EXPECT_EQ(tc.n_dims, 4u);
  EXPECT_EQ(tc.ne[2], 2u);
  EXPECT_EQ(std::memcmp(tc.data, c.data(), c.size()), 0);
  // The layout predicted without writing is the file's.
  Layout lay = plan_layout(md, tensors);
  EXPECT_EQ(lay.file_bytes(), f.file_size());
  EXPECT_EQ(lay.data_offset, f.data_offset());
  std::filesystem::remove(path);
}

TEST(Writer, UnfinishedWriteLeavesNothing) {
  const std::string path = temp_path("unfinished");
  std::filesystem::remove(path);
  Metadata md = every_type();
  std::vector<uint8_t> row(256 * 4);
  {
    Writer w(path, md, {{"x", Type::F32, {256, 4}}});
    w.write(row.data(), row.size());
    EXPECT_TRUE(std::filesystem::exists(w.temp_path()));
    EXPECT_THROW(w.commit(), keel::Error);  // 3 rows missing
  }
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_FALSE(temp_files_left(path));
}

TEST(Writer, AnExistingOutputSurvivesAFailedWrite) {
  const std::string path = temp_path("keep");
  { std::ofstream(path) << "old"; }
  try {
    Writer w(path, every_type(), {{"x", Type::F32, {4}}});
    throw keel::Error("simulated failure mid-write");
  } catch (const keel::Error&) {
  }
  EXPECT_EQ(std::filesystem::file_size(path), 3u);
  EXPECT_FALSE(temp_files_left(path));
  std::filesystem::remove(path);
}

TEST(Writer, RefusesBadRecords) {
  const std::string path = temp_path("bad");
  Metadata md;
  EXPECT_THROW(Writer(path, md, {{"x", Type::Q4_K, {100, 2}}}), keel::Error);  // 100 % 256
  EXPECT_THROW(Writer(path, md, {{"x", Type::F32, {4}}, {"x", Type::F32, {4}}}), keel::Error);
  EXPECT_THROW(Writer(path, md, {{"x", Type::F32, {4, 0}}}), keel::Error);
  EXPECT_THROW(Writer(path, md, {{"x", Type::F32, {1, 1, 1, 1, 1}}}), keel::Error);
  Metadata bad_array;
  bad_array.set("k", value_array(ValueType::u32, {value_i32(1)}));
  EXPECT_THROW(Writer(path, bad_array, {}), keel::Error);
  Writer w(path, md, {{"x", Type::F32, {4}}});
  std::vector<uint8_t> too_much(20);
  EXPECT_THROW(w.write(too_much.data(), too_much.size()), keel::Error);
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST(Writer, UnwritableFolderIsAClearError) {
  try {
    Writer w("/nonexistent-dir/x.gguf", Metadata{}, {});
    FAIL();
  } catch (const keel::Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent-dir/x.gguf.tmp."), std::string::npos) << e.what();
  }
}
