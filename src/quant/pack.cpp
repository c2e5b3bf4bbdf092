#include "quant/pack.h"

#include <algorithm>

namespace keel::quant {
namespace {

// The 6-bit scale and min codes of Q4_K/Q5_K in 12 bytes (the inverse of get_scale_min_k4).
void pack_scale_min_k4(const uint8_t* ls, const uint8_t* lm, uint8_t* scales) {
  std::fill(scales, scales + K_SCALE_SIZE, uint8_t{0});
  for (int j = 0; j < 8; ++j) {
    if (j < 4) {
      scales[j] = ls[j];
      scales[j + 4] = lm[j];
    } else {
      scales[j + 4] = static_cast<uint8_t>((ls[j] & 0x0F) | ((lm[j] & 0x0F) << 4));
      scales[j - 4] |= static_cast<uint8_t>((ls[j] >> 4) << 6);
      scales[j] |= static_cast<uint8_t>((lm[j] >> 4) << 6);
    }
  }
}

}  // namespace

void pack_q8_0(float d, const int8_t* q, BlockQ8_0* out) {
  out->d = f32_to_f16(d);
  std::copy(q, q + QK8_0, out->qs);
}

void pack_q4_0(float d, const int8_t* q, BlockQ4_0* out) {
  out->d = f32_to_f16(d);
  for (int l = 0; l < QK4_0 / 2; ++l)
    out->qs[l] = static_cast<uint8_t>((q[l] + 8) | ((q[l + QK4_0 / 2] + 8) << 4));
}

void pack_q4_k(float d, float dmin, const uint8_t* scales, const uint8_t* mins, const uint8_t* q, BlockQ4_K* out) {
  out->d = f32_to_f16(d);
  out->dmin = f32_to_f16(dmin);
  pack_scale_min_k4(scales, mins, out->scales);
  for (int j = 0; j < 4; ++j)  // byte l of pair j: group 2j in the low nibble, 2j+1 in the high
    for (int l = 0; l < 32; ++l) out->qs[32 * j + l] = static_cast<uint8_t>(q[64 * j + l] | (q[64 * j + 32 + l] << 4));
}

void pack_q5_k(float d, float dmin, const uint8_t* scales, const uint8_t* mins, const uint8_t* q, BlockQ5_K* out) {
  out->d = f32_to_f16(d);
  out->dmin = f32_to_f16(dmin);
  pack_scale_min_k4(scales, mins, out->scales);
  std::fill(out->qh, out->qh + QK_K / 8, uint8_t{0});
  for (int j = 0; j < 4; ++j) {  // as Q4_K, the fifth bits of groups 2j, 2j+1 in bits 2j, 2j+1 of qh[l]
    for (int l = 0; l < 32; ++l) {
      const int lo = q[64 * j + l], hi = q[64 * j + 32 + l];
      out->qs[32 * j + l] = static_cast<uint8_t>((lo & 0x0F) | ((hi & 0x0F) << 4));
      out->qh[l] |= static_cast<uint8_t>(((lo >> 4) << (2 * j)) | ((hi >> 4) << (2 * j + 1)));
    }
  }
}

void pack_q6_k(float d, const int8_t* scales, const int8_t* q, BlockQ6_K* out) {
  out->d = f32_to_f16(d);
  std::copy(scales, scales + QK_K / 16, out->scales);
  for (int h = 0; h < 2; ++h) {  // each half of 128: four runs of 32 share ql (low 4 bits) and qh (high 2)
    uint8_t* ql = out->ql + 64 * h;
    uint8_t* qh = out->qh + 32 * h;
    const int8_t* qq = q + 128 * h;
    for (int l = 0; l < 32; ++l) {
      const int q1 = qq[l] + 32, q2 = qq[l + 32] + 32, q3 = qq[l + 64] + 32, q4 = qq[l + 96] + 32;
      ql[l] = static_cast<uint8_t>((q1 & 0x0F) | ((q3 & 0x0F) << 4));
      ql[l + 32] = static_cast<uint8_t>((q2 & 0x0F) | ((q4 & 0x0F) << 4));
      qh[l] = static_cast<uint8_t>((q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6));
    }
  }
}

}  // namespace keel::quant
