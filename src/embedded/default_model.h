// The default model (models/stories260K.gguf) is compiled into the binary, so `keel` runs from
// any directory with no file beside it. `-m default` (and no `-m` at all) names it.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "gguf/gguf.h"

namespace keel::embedded {

inline constexpr std::string_view kDefaultModelName = "default";

// The GGUF image, 64-byte aligned, in the binary's read-only data.
std::span<const uint8_t> default_model_bytes();

// "default" -> the embedded model; anything else -> the GGUF file at that path (a file that
// happens to be called "default" is reached as "./default").
gguf::File open_gguf(const std::string& name_or_path);

}  // namespace keel::embedded
