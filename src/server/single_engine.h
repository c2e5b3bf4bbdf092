// An Engine over one runtime::Session: requests run one at a time (a mutex), each from an empty
// sequence. Enough for end-to-end tests of the HTTP layer until the multi-sequence scheduler
// implements Engine with continuous batching.
#pragma once
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "model/model.h"
#include "runtime/session.h"
#include "server/engine.h"
#include "template/template.h"
#include "tokenizer/tokenizer.h"

namespace keel::server {

class SingleSequenceEngine : public Engine {
 public:
  // chat_template: the template source (none: chat requests are refused with a clear error);
  // special_tokens: bos_token/eos_token as the template should see them.
  SingleSequenceEngine(std::shared_ptr<const model::Model> model, tokenizer::Tokenizer tokenizer,
                       const runtime::SessionOptions& options, std::optional<std::string> chat_template,
                       nlohmann::ordered_json special_tokens, std::string model_id);

  const ModelInfo& info() const override { return info_; }
  std::vector<int32_t> tokenize(const std::string& text) const override;
  std::vector<int32_t> chat_prompt(const nlohmann::ordered_json& messages, const nlohmann::ordered_json& tools) const override;
  GenerationResult generate(const GenerationRequest& request, const GenerationCallbacks& callbacks) override;

 private:
  std::shared_ptr<const model::Model> model_;
  tokenizer::Tokenizer tokenizer_;
  std::optional<tmpl::Template> template_;
  nlohmann::ordered_json special_tokens_;
  ModelInfo info_;
  std::mutex mutex_;                 // one request at a time
  runtime::Session session_;         // guarded by mutex_
};

// Holds back generated text that may be the start of a stop string; reports where one begins.
class StopScanner {
 public:
  explicit StopScanner(std::vector<std::string> stops) : stops_(std::move(stops)) {}
  // Appends `text`; returns what is safe to emit. Sets stopped() once a stop string is complete.
  std::string push(const std::string& text);
  std::string flush();  // the held-back text at the end (no stop string followed)
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string pending_;
  bool stopped_ = false;
};

}  // namespace keel::server
