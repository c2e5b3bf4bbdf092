// GGUF reader, and everything keel builds from what it read: the metadata display (`keel
// inspect`), the tokenizer (encode/decode of a fixed text), the model (hparams, tensor table
// checked against the family) and its memory plan. Any keel::Error is a clean refusal; anything
// else (a crash, a sanitizer report, another exception, an allocation beyond libFuzzer's
// -malloc_limit_mb) is a defect.
#include <cstdint>

#include "fuzz_util.h"
#include "gguf/gguf.h"
#include "keel/error.h"
#include "model/model.h"
#include "plan/plan.h"
#include "tokenizer/tokenizer.h"

namespace {

void exercise_tokenizer(const keel::gguf::File& file) {
  try {
    const auto tok = keel::tokenizer::Tokenizer::from_gguf(file);
    const auto ids = tok.encode("Hello world <s> \xC3\xA9\xF0\x9F\x98\x80 123\n", true, true);
    (void)tok.decode(ids);
  } catch (const keel::Error&) {
  }
}

void exercise_model(const std::string& path) {
  try {
    const auto model = keel::model::Model::load(path);
    keel::plan::PlanRequest request;
    request.n_ctx = 64;
    request.n_threads = 1;
    const keel::plan::Plan plan = keel::plan::plan_for_model(*model, request);
    (void)keel::plan::format_plan(plan);
  } catch (const keel::Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const keel::fuzz::InputFile input("model.gguf");
  const std::string& path = input.write(data, size);
  try {
    const keel::gguf::File file = keel::gguf::File::open(path);
    for (const auto& [key, value] : file.metadata()) (void)value.to_display();
    exercise_tokenizer(file);
  } catch (const keel::Error&) {
    return 0;
  }
  exercise_model(path);
  return 0;
}
