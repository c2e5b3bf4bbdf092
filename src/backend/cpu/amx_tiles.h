// The AMX tile registers' shapes, shared by the kernels that use the tiles (files named *_amx.cpp,
// compiled with the AMX flags; reached only after amx_bf16_usable() / amx_int8_usable()). Each
// kernel keeps its shapes in a static AmxTileConfig and calls amx_configure before its tile
// instructions; a thread reloads the configuration only when another kernel's was loaded last.
#pragma once
#include <immintrin.h>

#include <cstdint>

namespace keel::cpu {

// ldtilecfg's 64-byte operand: palette 1, then per tile its bytes a row and its rows.
struct alignas(64) AmxTileConfig {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

inline void amx_configure(const AmxTileConfig& config) {
  thread_local const AmxTileConfig* loaded = nullptr;
  if (loaded == &config) return;
  _tile_loadconfig(&config);
  loaded = &config;
}

}  // namespace keel::cpu
