// MobileNetV2's depthwise 3x3 convolutions (padding 1, stride 1 or 2): for inference with bias and activation, for
// training without bias and with both gradients.
#include "kernels.h"

namespace yolo {
namespace {
// Depthwise 3x3 convolution (one filter per channel, padding 1, stride 1 or 2) + bias + optional leaky ReLU:
// MobileNetV2's. Each plane is copied zero-padded, then every output row sums its 9 taps in a loop over the row
// that the compiler vectorises (stride 2: from the padded rows split into even and odd columns).
thread_local std::vector<float> dw_rows;

void depthwise(const float *x, const float *weight, const float *bias, bool act, const Conv &s, float *y) {
  const int64_t pw = s.w + 2, half = (pw + 1) / 2;
#pragma omp parallel for schedule(static)
  for (int64_t plane = 0; plane < s.n * s.c; ++plane) {
    const int64_t ch = plane % s.c;
    const float *src = x + plane * s.hw, *wt = weight + ch * 9;
    float *rows = scratch(&dw_rows, 3 * pw);  // three padded input rows (stride 2: evens, then odds)
    float *out = y + plane * s.ohw;
    for (int64_t i = 0; i < s.oh; ++i) {
      for (int64_t r = 0; r < 3; ++r) {
        float *row = rows + r * pw;
        const int64_t si = i * s.st + r - 1;
        if (si < 0 || si >= s.h) {
          std::fill(row, row + pw, 0.f);
          continue;
        }
        const float *line = src + si * s.w;
        if (s.st == 1) {
          row[0] = row[pw - 1] = 0.f;
          std::memcpy(row + 1, line, s.w * sizeof(float));
        } else {  // padded column q = j + 1: evens first (q = 0, 2, ...), then odds
          row[0] = 0.f;
          for (int64_t j = 1; j < s.w; j += 2) row[(j + 1) / 2] = line[j];
          for (int64_t j = 0; j < s.w; j += 2) row[half + j / 2] = line[j];
          if (s.w % 2 == 0) {  // the right padding column q = w + 1
            row[half + s.w / 2] = 0.f;
          } else {
            row[(s.w + 1) / 2] = 0.f;
          }
        }
      }
      float *dst = out + i * s.ow;
      const float b = bias[ch];
      for (int64_t j = 0; j < s.ow; ++j) dst[j] = b;
      for (int64_t r = 0; r < 3; ++r) {
        const float *row = rows + r * pw;
        const float w0 = wt[3 * r], w1 = wt[3 * r + 1], w2 = wt[3 * r + 2];
        if (s.st == 1) {
          for (int64_t j = 0; j < s.ow; ++j) dst[j] += w0 * row[j] + w1 * row[j + 1] + w2 * row[j + 2];
        } else {  // taps at padded columns 2j, 2j + 1, 2j + 2: even j, odd j, even j + 1
          const float *even = row, *odd = row + half;
          for (int64_t j = 0; j < s.ow; ++j) dst[j] += w0 * even[j] + w1 * odd[j] + w2 * even[j + 1];
        }
      }
      if (act)
        for (int64_t j = 0; j < s.ow; ++j) dst[j] = leaky(dst[j]);
    }
  }
}

// Training: MobileNetV2's depthwise 3x3 convolutions (padding 1, stride 1 or 2) without bias, and their gradients,
// plane by plane. For output column j, tap q reads input column j * st + q - 1; these are the j it is inside for.
struct TapRange {
  int64_t j0, j1;
  TapRange(const Conv &s, int64_t q)
      : j0(q == 0 ? 1 : 0), j1(std::min(s.ow, (s.w - q) / s.st + 1)) {}
};

void depthwise_grad_input(const float *dy, const float *weight, const Conv &s, float *dx) {
#pragma omp parallel for schedule(static)
  for (int64_t plane = 0; plane < s.n * s.c; ++plane) {
    const float *wt = weight + (plane % s.c) * 9, *grad = dy + plane * s.ohw;
    float *out = dx + plane * s.hw;
    std::fill(out, out + s.hw, 0.f);
    for (int64_t i = 0; i < s.oh; ++i) {
      for (int64_t r = 0; r < 3; ++r) {
        const int64_t si = i * s.st + r - 1;
        if (si < 0 || si >= s.h) continue;
        float *row = out + si * s.w - 1;
        for (int64_t q = 0; q < 3; ++q) {
          const TapRange range(s, q);
          const float wv = wt[3 * r + q];
          for (int64_t j = range.j0; j < range.j1; ++j) row[j * s.st + q] += wv * grad[i * s.ow + j];
        }
      }
    }
  }
}

void depthwise_grad_weight(const float *x, const float *dy, const Conv &s, float *dw) {
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t ch = 0; ch < s.c; ++ch) {
    double sums[9] = {};
    for (int64_t n = 0; n < s.n; ++n) {
      const float *src = x + (n * s.c + ch) * s.hw, *grad = dy + (n * s.c + ch) * s.ohw;
      for (int64_t i = 0; i < s.oh; ++i) {
        for (int64_t r = 0; r < 3; ++r) {
          const int64_t si = i * s.st + r - 1;
          if (si < 0 || si >= s.h) continue;
          const float *row = src + si * s.w - 1;
          for (int64_t q = 0; q < 3; ++q) {
            const TapRange range(s, q);
            float acc = 0.f;
            for (int64_t j = range.j0; j < range.j1; ++j) acc += grad[i * s.ow + j] * row[j * s.st + q];
            sums[3 * r + q] += acc;
          }
        }
      }
    }
    for (int q = 0; q < 9; ++q) dw[ch * 9 + q] = static_cast<float>(sums[q]);
  }
}

// Inputs x (n, c, h, w), weight (c, 1, 3, 3), bias (c); output y (n, c, oh, ow).
int depthwise_bias_act(void **params, int64_t **shapes, bool act, int64_t stride) {
  const Conv s(shapes[0], shapes[1], stride);
  depthwise(static_cast<const float *>(params[0]), static_cast<const float *>(params[1]),
            static_cast<const float *>(params[2]), act, s, static_cast<float *>(params[3]));
  return 0;
}

thread_local std::vector<float> zero_bias;

// Depthwise, training. Inputs x, weight (c, 1, 3, 3); output y. Inputs x (for its shape), dy, weight; output dx.
// Inputs x, dy, weight (for its shape); output dw.
int depthwise_forward(void **params, int64_t **shapes, int64_t stride) {
  const Conv s(shapes[0], shapes[1], stride);
  float *bias = scratch(&zero_bias, s.c);
  std::fill(bias, bias + s.c, 0.f);
  depthwise(static_cast<const float *>(params[0]), static_cast<const float *>(params[1]), bias, false, s,
            static_cast<float *>(params[2]));
  return 0;
}

int depthwise_input_grad(void **params, int64_t **shapes, int64_t stride) {
  depthwise_grad_input(static_cast<const float *>(params[1]), static_cast<const float *>(params[2]),
                       Conv(shapes[0], shapes[2], stride), static_cast<float *>(params[3]));
  return 0;
}

int depthwise_weight_grad(void **params, int64_t **shapes, int64_t stride) {
  depthwise_grad_weight(static_cast<const float *>(params[0]), static_cast<const float *>(params[1]),
                        Conv(shapes[0], shapes[2], stride), static_cast<float *>(params[3]));
  return 0;
}
}  // namespace

YOLO_AOT(DepthwiseBias) { return depthwise_bias_act(params, shapes, false, 1); }
YOLO_AOT(DepthwiseBiasLeaky) { return depthwise_bias_act(params, shapes, true, 1); }
YOLO_AOT(DepthwiseBiasStride2) { return depthwise_bias_act(params, shapes, false, 2); }
YOLO_AOT(DepthwiseBiasLeakyStride2) { return depthwise_bias_act(params, shapes, true, 2); }
YOLO_AOT(Depthwise) { return depthwise_forward(params, shapes, 1); }
YOLO_AOT(DepthwiseGradInput) { return depthwise_input_grad(params, shapes, 1); }
YOLO_AOT(DepthwiseGradWeight) { return depthwise_weight_grad(params, shapes, 1); }
YOLO_AOT(DepthwiseStride2) { return depthwise_forward(params, shapes, 2); }
YOLO_AOT(DepthwiseStride2GradInput) { return depthwise_input_grad(params, shapes, 2); }
YOLO_AOT(DepthwiseStride2GradWeight) { return depthwise_weight_grad(params, shapes, 2); }

}  // namespace yolo
