// Hyper-parameters of real models (from their Hugging Face configs), for `keel plan --preset`
// and `keel synth --preset` on models that are not on this machine.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "model/hparams.h"

namespace keel::model {

std::optional<Hparams> find_preset(std::string_view name);  // e.g. "qwen35-27b", "qwen3-0.6b"
std::vector<std::string> preset_names();
Hparams require_preset(std::string_view name);  // throws keel::Error listing the presets

}  // namespace keel::model
