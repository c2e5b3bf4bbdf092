// qwen35 hparams from GGUF metadata: the recurrent-layer pattern (attention.recurrent_layers
// first, else full_attention_interval), the MTP block left out of the decoder, and clear errors
// for inconsistent Gated DeltaNet sizes or a layer pattern the tensors do not follow.
#include <gtest/gtest.h>

#include <cstdio>
#include <functional>
#include <string>

#include "gguf/gguf.h"
#include "gguf/writer.h"
#include "keel/error.h"
#include "model/model.h"
#include "test_paths.h"
#include "tools_lib/requantize.h"

using namespace keel;

namespace {

// tiny-qwen35 with its metadata edited (tensors copied byte for byte); returns the path.
std::string edited_copy(const std::string& tag, const std::function<void(gguf::Metadata&)>& edit) {
  const std::string path = keel::test::temp_dir() + "keel_qwen35_hp_" + tag + ".gguf";
  gguf::File in = gguf::File::open(test::shared("fixtures/tiny-qwen35.gguf"));
  tools::RequantizePlan plan = tools::plan_requantize(in, model::FileType::f32);
  edit(plan.metadata);
  tools::WriteOptions options;
  options.n_threads = 1;
  options.progress = false;
  tools::write_model(path, plan.metadata, plan.jobs, options);
  return path;
}

std::string load_error(const std::string& path) {
  try {
    model::Model::load(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Qwen35Hparams, RecurrentLayersArrayWinsOverInterval) {
  const std::string path = edited_copy("array", [](gguf::Metadata& md) {
    std::vector<gguf::Value> layers;
    for (int il = 0; il < 8; ++il) layers.push_back(gguf::value_bool((il + 1) % 4 != 0));
    md.set("qwen35.attention.recurrent_layers", gguf::value_array(gguf::ValueType::boolean, layers));
    md.set("qwen35.full_attention_interval", gguf::value_u32(2));  // ignored: the array is there
  });
  auto model = model::Model::load(path);
  EXPECT_EQ(model->hparams().n_attention_layers(), 2u);
  EXPECT_FALSE(model->hparams().is_recurrent(3));
  EXPECT_TRUE(model->hparams().is_recurrent(4));
  std::remove(path.c_str());
}

TEST(Qwen35Hparams, IntervalTheTensorsDoNotFollowIsAClearError) {
  const std::string path = edited_copy("interval", [](gguf::Metadata& md) {
    md.set("qwen35.full_attention_interval", gguf::value_u32(2));  // would make layer 1 attention
  });
  EXPECT_NE(load_error(path).find("'blk.1.attn_q.weight' is missing"), std::string::npos) << load_error(path);
  std::remove(path.c_str());
}

TEST(Qwen35Hparams, InconsistentGdnSizesAreAClearError) {
  const std::string path = edited_copy("ssm", [](gguf::Metadata& md) {
    md.set("qwen35.ssm.time_step_rank", gguf::value_u32(3));  // 3 value heads over 2 key heads
  });
  const std::string error = load_error(path);
  EXPECT_NE(error.find("qwen35.ssm.time_step_rank = 3"), std::string::npos) << error;
  std::remove(path.c_str());
}

TEST(Qwen35Hparams, MtpBlocksAreNotDecoderLayers) {
  const std::string path = edited_copy("nextn", [](gguf::Metadata& md) {
    md.set("qwen35.nextn_predict_layers", gguf::value_u32(1));  // blk.7 plays the MTP block here
  });
  auto model = model::Model::load(path);
  EXPECT_EQ(model->hparams().n_layer, 7u);
  EXPECT_EQ(model->hparams().n_attention_layers(), 1u);
  std::remove(path.c_str());
}
