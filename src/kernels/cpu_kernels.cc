// CPU kernels for MindSpore aot custom ops (float32, NCHW, contiguous): the 2x2 stride-2 max-pool (forward
// and backward, for training; the forward also for inference) and, for inference, darknet's 2x2 stride-1
// max-pool and the stride-1 'same' convolution with its bias (the folded BN) and optionally darknet's leaky
// ReLU in one op.
// Signature: MindSpore's aot interface; params holds the inputs, then the output.
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

// oneDNN's row-major sgemm, from the libdnnl that MindSpore ships; it runs on the calling thread only.
extern "C" int dnnl_sgemm(char transa, char transb, int64_t m, int64_t n, int64_t k, float alpha, const float *a,
                          int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc);

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
extern "C" int MaxPool2x2(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                          void *stream, void *extra) {
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
extern "C" int MaxPool2x2Stride1(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                 void *stream, void *extra) {
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

// dx: each window's gradient goes to its first maximum in row-major order, zeros elsewhere (also in
// a dropped odd row or column). Inputs x, y (the forward's output), dy.
extern "C" int MaxPool2x2Grad(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                              void *stream, void *extra) {
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
    for (int64_t j = 0; j < ow; ++j) {
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

// Convolution + bias + activation. MindSpore's CPU Conv2D runs yolov3-tiny's layers at 12 to 110 GFLOP/s on a
// 2-core AVX2 machine, and its bias add and leaky ReLU are two more passes over memory. Three paths, by shape:
// - few taps per output (c*k*k <= kDirectTaps, the layer on RGB): a direct convolution, 4 output channels x 16
//   columns in registers; im2col + sgemm is memory-bound there;
// - small weights (o*c*k*k <= kTiledWeights, the large early maps): blocks of output rows, each block's im2col
//   in a cache-sized buffer, one sgemm, bias and activation while it is in cache, blocks spread over threads;
// - large weights (the deep layers on small maps): im2col of several images side by side (one 13x13 map is
//   too few columns for sgemm to run at speed), one sgemm split over the threads, each piece finished as done.
namespace {
constexpr int64_t kDirectTaps = 32;
constexpr int64_t kTiledWeights = 100000;
constexpr int64_t kTileFloats = 65536;  // one row block's im2col buffer, 256 KB
constexpr int64_t kColumns = 8192;      // images per sgemm on the large-weight path: about this many columns,
constexpr int64_t kColFloats = 1 << 22;  // and an im2col buffer of at most 16 MB
constexpr int64_t kOutBlock = 4, kColBlock = 16;

typedef float v8 __attribute__((vector_size(32)));

struct Conv {
  int64_t n, c, h, w, o, k, hw, ckk, pad;
  Conv(const int64_t *x, const int64_t *weight)
      : n(x[0]), c(x[1]), h(x[2]), w(x[3]), o(weight[0]), k(weight[2]), hw(x[2] * x[3]),
        ckk(weight[1] * weight[2] * weight[3]), pad(weight[2] / 2) {}
};

// Buffers kept between calls (per thread): allocating megabytes per call costs page faults every time.
thread_local std::vector<float> pad_buffer, col_buffer, out_buffer;
float *scratch(std::vector<float> *v, int64_t size) {
  if (static_cast<int64_t>(v->size()) < size) v->resize(size);
  return v->data();
}

inline float leaky(float v) { return v > 0.f ? v : 0.1f * v; }

// rows [r0, r1) x columns [c0, c1) of c (row stride ld): += bias[row], then leaky ReLU if asked.
void bias_act(float *c, int64_t ld, int64_t r0, int64_t r1, int64_t c0, int64_t c1, const float *bias, bool act) {
  for (int64_t r = r0; r < r1; ++r) {
    float *row = c + r * ld;
    const float b = bias[r];
    if (act) {
      for (int64_t j = c0; j < c1; ++j) row[j] = leaky(row[j] + b);
    } else {
      for (int64_t j = c0; j < c1; ++j) row[j] += b;
    }
  }
}

// im2col row `tap` = (channel, di, dj) for output rows [i0, i1) of image n, zero-padded, into dst.
void im2col_tap(const float *x, const Conv &s, int64_t n, int64_t tap, int64_t i0, int64_t i1, float *dst) {
  const int64_t kk = s.k * s.k, ch = tap / kk, di = (tap % kk) / s.k - s.pad, dj = tap % s.k - s.pad;
  const int64_t j0 = std::max<int64_t>(0, -dj), j1 = std::min(s.w, s.w - dj);
  const float *plane = x + (n * s.c + ch) * s.hw;
  for (int64_t i = i0; i < i1; ++i, dst += s.w) {
    const int64_t si = i + di;
    if (si < 0 || si >= s.h) {
      std::memset(dst, 0, s.w * sizeof(float));
      continue;
    }
    std::fill(dst, dst + j0, 0.f);
    std::memcpy(dst + j0, plane + si * s.w + j0 + dj, (j1 - j0) * sizeof(float));
    std::fill(dst + j1, dst + s.w, 0.f);
  }
}

void conv_direct(const float *x, const float *weight, const float *bias, bool act, const Conv &s, float *y) {
  const int64_t ph = s.h + 2 * s.pad, pw = (s.w + kColBlock - 1) / kColBlock * kColBlock + 2 * s.pad;
  float *xp = scratch(&pad_buffer, s.n * s.c * ph * pw);
#pragma omp parallel for schedule(static)
  for (int64_t plane = 0; plane < s.n * s.c; ++plane) {
    float *dst = xp + plane * ph * pw;
    std::fill(dst, dst + ph * pw, 0.f);
    for (int64_t i = 0; i < s.h; ++i)
      std::memcpy(dst + (i + s.pad) * pw + s.pad, x + plane * s.hw + i * s.w, s.w * sizeof(float));
  }
  const int64_t kk = s.k * s.k;
#pragma omp parallel for schedule(static) collapse(2)
  for (int64_t n = 0; n < s.n; ++n) {
    for (int64_t i = 0; i < s.h; ++i) {
      for (int64_t ob = 0; ob < s.o; ob += kOutBlock) {
        for (int64_t j0 = 0; j0 < s.w; j0 += kColBlock) {
          v8 acc[kOutBlock][2];
          for (int64_t q = 0; q < kOutBlock; ++q) acc[q][0] = acc[q][1] = v8{} + bias[ob + q];
          for (int64_t ch = 0; ch < s.c; ++ch) {
            for (int64_t di = 0; di < s.k; ++di) {
              const float *row = xp + ((n * s.c + ch) * ph + i + di) * pw + j0;
              const float *wt = weight + (ob * s.c + ch) * kk + di * s.k;
              for (int64_t dj = 0; dj < s.k; ++dj) {
                v8 p0, p1;
                std::memcpy(&p0, row + dj, sizeof(v8));
                std::memcpy(&p1, row + dj + 8, sizeof(v8));
                for (int64_t q = 0; q < kOutBlock; ++q) {
                  const float wv = wt[q * s.c * kk + dj];
                  acc[q][0] += wv * p0;
                  acc[q][1] += wv * p1;
                }
              }
            }
          }
          const int64_t cols = std::min(kColBlock, s.w - j0);
          for (int64_t q = 0; q < kOutBlock; ++q) {
            float *dst = y + ((n * s.o + ob + q) * s.h + i) * s.w + j0;
            for (int64_t half = 0; half < 2; ++half) {
              v8 v = acc[q][half];
              if (act) v = v > 0.f ? v : 0.1f * v;
              if (cols == kColBlock) {
                std::memcpy(dst + 8 * half, &v, sizeof(v8));  // fixed size: one vector store
              } else {
                float part[8];
                std::memcpy(part, &v, sizeof(v8));
                for (int64_t j = 8 * half; j < std::min(cols, 8 * half + 8); ++j) dst[j] = part[j - 8 * half];
              }
            }
          }
        }
      }
    }
  }
}

void conv_tiled(const float *x, const float *weight, const float *bias, bool act, const Conv &s, float *y) {
  const int64_t rows = std::max<int64_t>(1, std::min(s.h, kTileFloats / (s.ckk * s.w)));
  const int64_t blocks = (s.h + rows - 1) / rows;
#pragma omp parallel for schedule(dynamic, 1) collapse(2)
  for (int64_t n = 0; n < s.n; ++n) {
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t i0 = b * rows, i1 = std::min(s.h, i0 + rows), cols = (i1 - i0) * s.w;
      float *col = scratch(&col_buffer, s.ckk * rows * s.w);
      for (int64_t tap = 0; tap < s.ckk; ++tap) im2col_tap(x, s, n, tap, i0, i1, col + tap * cols);
      float *out = y + n * s.o * s.hw + i0 * s.w;
      dnnl_sgemm('N', 'N', s.o, cols, s.ckk, 1.f, weight, s.ckk, col, cols, 0.f, out, s.hw);
      bias_act(out, s.hw, 0, s.o, 0, cols, bias, act);
    }
  }
}

// c (m x n) = a (m x k) b (k x n) + bias, activation; the longer side split in one piece per thread.
void gemm_bias_act(int64_t m, int64_t n, int64_t k, const float *a, const float *b, const float *bias, bool act,
                   float *c) {
  const bool split_n = n >= m;
  const int64_t len = split_n ? n : m;
  const int64_t pieces = std::max<int64_t>(1, std::min<int64_t>(omp_get_max_threads(), len / 64));
  const int64_t step = ((len + pieces - 1) / pieces + 15) / 16 * 16;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t lo = 0; lo < len; lo += step) {
    const int64_t size = std::min(step, len - lo);
    if (split_n) {
      dnnl_sgemm('N', 'N', m, size, k, 1.f, a, k, b + lo, n, 0.f, c + lo, n);
      bias_act(c, n, 0, m, lo, lo + size, bias, act);
    } else {
      dnnl_sgemm('N', 'N', size, n, k, 1.f, a + lo * k, k, b, n, 0.f, c + lo * n, n);
      bias_act(c, n, lo, lo + size, 0, n, bias, act);
    }
  }
}

void conv_whole(const float *x, const float *weight, const float *bias, bool act, const Conv &s, float *y) {
  const int64_t group = std::max<int64_t>(1, std::min({s.n, kColumns / s.hw, kColFloats / (s.ckk * s.hw)}));
  for (int64_t n0 = 0; n0 < s.n; n0 += group) {
    const int64_t g = std::min(group, s.n - n0), cols = g * s.hw;
    if (s.k == 1 && g == 1) {  // a 1x1 convolution of one image multiplies x itself
      gemm_bias_act(s.o, cols, s.ckk, weight, x + n0 * s.c * s.hw, bias, act, y + n0 * s.o * s.hw);
      continue;
    }
    float *col = scratch(&col_buffer, s.ckk * cols);
#pragma omp parallel for schedule(static) collapse(2)
    for (int64_t tap = 0; tap < s.ckk; ++tap)
      for (int64_t b = 0; b < g; ++b) im2col_tap(x, s, n0 + b, tap, 0, s.h, col + tap * cols + b * s.hw);
    if (g == 1) {
      gemm_bias_act(s.o, cols, s.ckk, weight, col, bias, act, y + n0 * s.o * s.hw);
      continue;
    }
    float *out = scratch(&out_buffer, s.o * cols);
    gemm_bias_act(s.o, cols, s.ckk, weight, col, bias, act, out);
#pragma omp parallel for schedule(static) collapse(2)
    for (int64_t r = 0; r < s.o; ++r)
      for (int64_t b = 0; b < g; ++b)
        std::memcpy(y + ((n0 + b) * s.o + r) * s.hw, out + r * cols + b * s.hw, s.hw * sizeof(float));
  }
}

// Inputs x (n, c, h, w), weight (o, c, k, k) with k odd, bias (o); output y (n, o, h, w).
int conv_bias_act(void **params, int64_t **shapes, bool act) {
  const float *x = static_cast<const float *>(params[0]), *weight = static_cast<const float *>(params[1]);
  const float *bias = static_cast<const float *>(params[2]);
  float *y = static_cast<float *>(params[3]);
  const Conv s(shapes[0], shapes[1]);
  if (s.ckk <= kDirectTaps && s.o % kOutBlock == 0) {
    conv_direct(x, weight, bias, act, s, y);
  } else if (s.o * s.ckk <= kTiledWeights) {
    conv_tiled(x, weight, bias, act, s, y);
  } else {
    conv_whole(x, weight, bias, act, s, y);
  }
  return 0;
}
}  // namespace

extern "C" int ConvBias(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                        void *extra) {
  return conv_bias_act(params, shapes, false);
}

extern "C" int ConvBiasLeaky(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                             void *stream, void *extra) {
  return conv_bias_act(params, shapes, true);
}
