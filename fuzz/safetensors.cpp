// Safetensors reader (what `keel convert` reads from a Hugging Face folder): the header, every
// tensor's byte range, and a row of each float tensor. Any keel::Error is a clean refusal;
// anything else is a defect.
#include <cstdint>
#include <vector>

#include "fuzz_util.h"
#include "keel/error.h"
#include "tools_lib/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const keel::fuzz::InputFile input("model.safetensors");
  const std::string& path = input.write(data, size);
  try {
    const auto file = keel::tools::SafetensorsFile::open(path);
    std::vector<float> row;
    for (const keel::tools::StTensor& t : file.tensors()) {
      if (!t.is_float() || t.n_elements() == 0 || t.row_elems() > (1u << 20)) continue;
      row.resize(t.row_elems());
      keel::tools::read_row_f32(t, t.n_rows() - 1, row.data());
    }
  } catch (const keel::Error&) {
  }
  return 0;
}
