// 2x2 max-pools: stride 2 and darknet's stride 1, forward (training and inference) and backward (training).
#include "kernels.h"

namespace yolo {
namespace {
// An NCHW tensor seen as planes of h x w, pooled to oh x ow.
struct Geometry {
  int64_t planes, h, w, oh, ow;
  explicit Geometry(const int64_t *shape)
      : planes(shape[0] * shape[1]), h(shape[2]), w(shape[3]), oh(shape[2] / 2), ow(shape[3] / 2) {}
};
}  // namespace

// y[n, c, i, j] = max of x[n, c, 2i..2i+1, 2j..2j+1]; an odd last row or column is dropped, as in
// MindSpore's "valid" max-pool.
YOLO_AOT(MaxPool2x2) {
  const float *x = static_cast<const float *>(params[0]);
  float *y = static_cast<float *>(params[1]);
  const Geometry g(shapes[0]);
  const int64_t h = g.h, w = g.w, oh = g.oh, ow = g.ow;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < g.planes * oh; ++r) {
    const float *r0 = x + (r / oh) * h * w + (r % oh) * 2 * w;
    const float *r1 = r0 + w;
    float *out = y + r * ow;
    for (int64_t j = 0; j < ow; ++j) {
      const float a = r0[2 * j] > r0[2 * j + 1] ? r0[2 * j] : r0[2 * j + 1];
      const float b = r1[2 * j] > r1[2 * j + 1] ? r1[2 * j] : r1[2 * j + 1];
      out[j] = a > b ? a : b;
    }
  }
  return 0;
}

// darknet's 2x2 stride-1 max-pool (inference): y[n, c, i, j] = max of x[n, c, i..i+1, j..j+1], the last row
// and column repeated (the same as darknet's -inf padding).
YOLO_AOT(MaxPool2x2Stride1) {
  const float *x = static_cast<const float *>(params[0]);
  float *y = static_cast<float *>(params[1]);
  const int64_t planes = shapes[0][0] * shapes[0][1], h = shapes[0][2], w = shapes[0][3];
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < planes * h; ++r) {
    const float *r0 = x + r * w;
    const float *r1 = r % h == h - 1 ? r0 : r0 + w;
    float *out = y + r * w;
    for (int64_t j = 0; j < w; ++j) {
      const int64_t k = j + 1 < w ? j + 1 : j;
      const float a = r0[j] > r0[k] ? r0[j] : r0[k];
      const float b = r1[j] > r1[k] ? r1[j] : r1[k];
      out[j] = a > b ? a : b;
    }
  }
  return 0;
}

// The gradient of MaxPool2x2Stride1: each window's gradient is added at its first maximum in row-major order
// (windows overlap). Inputs x, y (the forward's output), dy; output dx.
YOLO_AOT(MaxPool2x2Stride1Grad) {
  const float *x = static_cast<const float *>(params[0]);
  const float *y = static_cast<const float *>(params[1]);
  const float *dy = static_cast<const float *>(params[2]);
  float *dx = static_cast<float *>(params[3]);
  const int64_t planes = shapes[0][0] * shapes[0][1], h = shapes[0][2], w = shapes[0][3];
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < planes; ++p) {
    const float *xp = x + p * h * w, *yp = y + p * h * w, *gp = dy + p * h * w;
    float *dp = dx + p * h * w;
    std::fill(dp, dp + h * w, 0.f);
    for (int64_t i = 0; i < h; ++i) {
      const int64_t i1 = i + 1 < h ? i + 1 : i;
      for (int64_t j = 0; j < w; ++j) {
        const int64_t j1 = j + 1 < w ? j + 1 : j, v = i * w + j;
        const float m = yp[v];
        const int64_t at = xp[v] == m ? v : xp[i * w + j1] == m ? i * w + j1 : xp[i1 * w + j] == m ? i1 * w + j
                                                                                                 : i1 * w + j1;
        dp[at] += gp[v];
      }
    }
  }
  return 0;
}

// Lane patterns of two eight-float vectors a, b (lanes 0-7 of a, 8-15 of b): the even and odd of the sixteen,
// and back, the first and last four lanes of each interleaved.
constexpr v8i kEven = {0, 2, 4, 6, 8, 10, 12, 14}, kOdd = {1, 3, 5, 7, 9, 11, 13, 15};
constexpr v8i kLow = {0, 8, 1, 9, 2, 10, 3, 11}, kHigh = {4, 12, 5, 13, 6, 14, 7, 15};

// dx: each window's gradient goes to its first maximum in row-major order, zeros elsewhere (also in
// a dropped odd row or column). Inputs x, y (the forward's output), dy.
YOLO_AOT(MaxPool2x2Grad) {
  const float *x = static_cast<const float *>(params[0]);
  const float *y = static_cast<const float *>(params[1]);
  const float *dy = static_cast<const float *>(params[2]);
  float *dx = static_cast<float *>(params[3]);
  const Geometry g(shapes[0]);
  const int64_t h = g.h, w = g.w, oh = g.oh, ow = g.ow;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < g.planes * oh; ++r) {
    const int64_t offset = (r / oh) * h * w + (r % oh) * 2 * w;
    const float *x0 = x + offset, *x1 = x0 + w;
    float *d0 = dx + offset, *d1 = d0 + w;
    const float *m = y + r * ow, *grad = dy + r * ow;
    int64_t j = 0;
    for (; j + 8 <= ow; j += 8) {  // eight windows at once: the same choices, in vector lanes
      v8 a0, b0, a1, b1, v, gv;
      std::memcpy(&a0, x0 + 2 * j, sizeof(v8));
      std::memcpy(&b0, x0 + 2 * j + 8, sizeof(v8));
      std::memcpy(&a1, x1 + 2 * j, sizeof(v8));
      std::memcpy(&b1, x1 + 2 * j + 8, sizeof(v8));
      std::memcpy(&v, m + j, sizeof(v8));
      std::memcpy(&gv, grad + j, sizeof(v8));
      const v8i first = __builtin_shuffle(a0, b0, kEven) == v;
      const v8i second = ~first & (__builtin_shuffle(a0, b0, kOdd) == v);
      const v8i third = ~first & ~second & (__builtin_shuffle(a1, b1, kEven) == v);
      const v8i fourth = ~first & ~second & ~third;
      const v8i g = reinterpret_cast<v8i>(gv);
      const v8 top_even = reinterpret_cast<v8>(first & g), top_odd = reinterpret_cast<v8>(second & g);
      const v8 bottom_even = reinterpret_cast<v8>(third & g), bottom_odd = reinterpret_cast<v8>(fourth & g);
      const v8 out[4] = {__builtin_shuffle(top_even, top_odd, kLow), __builtin_shuffle(top_even, top_odd, kHigh),
                         __builtin_shuffle(bottom_even, bottom_odd, kLow),
                         __builtin_shuffle(bottom_even, bottom_odd, kHigh)};
      std::memcpy(d0 + 2 * j, out, 2 * sizeof(v8));
      std::memcpy(d1 + 2 * j, out + 2, 2 * sizeof(v8));
    }
    for (; j < ow; ++j) {
      const int64_t c = 2 * j;
      const float v = m[j], gv = grad[j];
      const bool first = x0[c] == v;
      const bool second = !first && x0[c + 1] == v;
      const bool third = !first && !second && x1[c] == v;
      d0[c] = first ? gv : 0.f;
      d0[c + 1] = second ? gv : 0.f;
      d1[c] = third ? gv : 0.f;
      d1[c + 1] = !first && !second && !third ? gv : 0.f;
    }
    if (w % 2) d0[w - 1] = d1[w - 1] = 0.f;
  }
  if (h % 2) {
#pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < g.planes; ++p) {
      float *last = dx + p * h * w + (h - 1) * w;
      for (int64_t j = 0; j < w; ++j) last[j] = 0.f;
    }
  }
  return 0;
}

}  // namespace yolo
