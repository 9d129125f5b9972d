// CPU kernels for MindSpore aot custom ops (float32, NCHW, contiguous): the 2x2 stride-2 max-pool and darknet's
// 2x2 stride-1 one (forward and backward, for training; the forwards also for inference); for inference, the
// stride-1 and stride-2 convolutions with padding k / 2 and their bias (the folded BN) and optionally darknet's
// leaky ReLU in one op, and MobileNetV2's depthwise 3x3 convolutions the same way; for training, those
// convolutions without bias and their two gradients, a convolution with bias (the heads'), and batch
// normalisation with the batch's statistics plus leaky ReLU, forward and backward.
// Signature: MindSpore's aot interface; params holds the inputs, then the output.
#include <dlfcn.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {
// oneDNN's row-major sgemm (it runs on the calling thread only), from a private copy of the libdnnl that MindSpore
// ships (YOLO_DNNL, set by src/cpu_kernels.py): src/onednn.py caps MindSpore's own instance at AVX2, and this
// copy keeps every instruction set the CPU has.
typedef int (*SgemmFn)(char, char, int64_t, int64_t, int64_t, float, const float *, int64_t, const float *, int64_t,
                       float, float *, int64_t);

void *const dnnl_lib = dlopen(YOLO_DNNL, RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
const SgemmFn sgemm_fn = dnnl_lib ? reinterpret_cast<SgemmFn>(dlsym(dnnl_lib, "dnnl_sgemm")) : nullptr;

// Precision of every matrix product below (KernelsSetPrecision, from src/precision.py): fp32 sgemm, or bf16 operands
// (rounded to nearest even) with fp32 accumulation and result through dnnl_gemm_bf16bf16f32 (AMX or AVX512-BF16
// where the CPU has them). Process-wide: a setting of the run, not of a layer.
typedef int (*GemmBf16Fn)(char, char, int64_t, int64_t, int64_t, float, const uint16_t *, int64_t, const uint16_t *,
                          int64_t, float, float *, int64_t);
const GemmBf16Fn gemm_bf16_fn =
    dnnl_lib ? reinterpret_cast<GemmBf16Fn>(dlsym(dnnl_lib, "dnnl_gemm_bf16bf16f32")) : nullptr;
int use_bf16 = 0;
thread_local std::vector<uint16_t> bf16_a, bf16_b;

inline uint16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // NaN stays NaN
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// A rows x cols row-major block (leading dimension ld) as packed bf16 in buf (its leading dimension is cols).
const uint16_t *packed_bf16(const float *src, int64_t rows, int64_t cols, int64_t ld, std::vector<uint16_t> *buf) {
  if (buf->size() < static_cast<size_t>(rows * cols)) buf->resize(rows * cols);
  uint16_t *dst = buf->data();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) dst[r * cols + c] = to_bf16(src[r * ld + c]);
  return dst;
}

// Every product of the kernels: dnnl_sgemm's arguments (row-major, on the calling thread only), in the precision set.
inline void gemm(char transa, char transb, int64_t m, int64_t n, int64_t k, float alpha, const float *a, int64_t lda,
                 const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
  if (!use_bf16) {
    sgemm_fn(transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  const int64_t a_cols = transa == 'N' ? k : m, b_cols = transb == 'N' ? n : k;
  const uint16_t *a16 = packed_bf16(a, transa == 'N' ? m : k, a_cols, lda, &bf16_a);
  const uint16_t *b16 = packed_bf16(b, transb == 'N' ? k : n, b_cols, ldb, &bf16_b);
  gemm_bf16_fn(transa, transb, m, n, k, alpha, a16, a_cols, b16, b_cols, beta, c, ldc);
}

// An NCHW tensor seen as planes of h x w, pooled to oh x ow.
struct Geometry {
  int64_t planes, h, w, oh, ow;
  explicit Geometry(const int64_t *shape)
      : planes(shape[0] * shape[1]), h(shape[2]), w(shape[3]), oh(shape[2] / 2), ow(shape[3] / 2) {}
};
}  // namespace

// 1 when the private libdnnl loaded and has its sgemm (checked by src/cpu_kernels.py before any op is made).
extern "C" int KernelsReady() { return sgemm_fn != nullptr; }

// 1 when the private libdnnl has dnnl_gemm_bf16bf16f32.
extern "C" int KernelsBf16Ready() { return gemm_bf16_fn != nullptr; }

// The matrix products' precision from now on: 0 fp32, 1 bf16 operands with fp32 accumulation (needs KernelsBf16Ready).
extern "C" void KernelsSetPrecision(int bf16) { use_bf16 = bf16 && gemm_bf16_fn != nullptr; }

// The instruction set that the private libdnnl dispatches to (a dnnl_cpu_isa_t), 0 if it did not load.
extern "C" int KernelsIsa() {
  typedef int (*IsaFn)();
  const IsaFn isa = dnnl_lib ? reinterpret_cast<IsaFn>(dlsym(dnnl_lib, "dnnl_get_effective_cpu_isa")) : nullptr;
  return isa ? isa() : 0;
}

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

// The gradient of MaxPool2x2Stride1: each window's gradient is added at its first maximum in row-major order
// (windows overlap). Inputs x, y (the forward's output), dy; output dx.
extern "C" int MaxPool2x2Stride1Grad(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                     void *stream, void *extra) {
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
// 2-core AVX2 machine, and its bias add and leaky ReLU are two more passes over memory. Four paths, by shape
// (Winograd, for 3x3 layers with many channels, is further down):
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

// A convolution with padding k / 2 and stride st: input n x c x h x w, output n x o x oh x ow.
struct Conv {
  int64_t n, c, h, w, o, k, hw, ckk, pad, st, oh, ow, ohw;
  Conv(const int64_t *x, const int64_t *weight, int64_t stride = 1)
      : n(x[0]), c(x[1]), h(x[2]), w(x[3]), o(weight[0]), k(weight[2]), hw(x[2] * x[3]),
        ckk(weight[1] * weight[2] * weight[3]), pad(weight[2] / 2), st(stride),
        oh((x[2] + 2 * pad - k) / stride + 1), ow((x[3] + 2 * pad - k) / stride + 1), ohw(oh * ow) {}
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

// Output columns [j0, j1) of tap column offset dj whose input column j * st + dj lies inside the map.
struct TapColumns {
  int64_t j0, j1;
  TapColumns(const Conv &s, int64_t dj)
      : j0(std::min(s.ow, std::max<int64_t>(0, (s.st - 1 - dj) / s.st))),
        j1(std::max(j0, std::min(s.ow, (s.w - dj + s.st - 1) / s.st))) {}
};

// im2col row `tap` = (channel, di, dj) for output rows [i0, i1) of image n, zero-padded, into dst.
void im2col_tap(const float *x, const Conv &s, int64_t n, int64_t tap, int64_t i0, int64_t i1, float *dst) {
  const int64_t kk = s.k * s.k, ch = tap / kk, di = (tap % kk) / s.k - s.pad, dj = tap % s.k - s.pad;
  const TapColumns cols(s, dj);
  const float *plane = x + (n * s.c + ch) * s.hw;
  for (int64_t i = i0; i < i1; ++i, dst += s.ow) {
    const int64_t si = i * s.st + di;
    if (si < 0 || si >= s.h) {
      std::memset(dst, 0, s.ow * sizeof(float));
      continue;
    }
    std::fill(dst, dst + cols.j0, 0.f);
    const float *src = plane + si * s.w + dj;
    if (s.st == 1) {
      std::memcpy(dst + cols.j0, src + cols.j0, (cols.j1 - cols.j0) * sizeof(float));
    } else {
      for (int64_t j = cols.j0; j < cols.j1; ++j) dst[j] = src[j * s.st];
    }
    std::fill(dst + cols.j1, dst + s.ow, 0.f);
  }
}

// The inverse of im2col_tap for the input gradient: dx (image n, the tap's channel) += the tap's column rows.
void col2im_tap(const float *col, const Conv &s, int64_t n, int64_t tap, float *dx) {
  const int64_t kk = s.k * s.k, ch = tap / kk, di = (tap % kk) / s.k - s.pad, dj = tap % s.k - s.pad;
  const TapColumns cols(s, dj);
  float *plane = dx + (n * s.c + ch) * s.hw;
  for (int64_t i = 0; i < s.oh; ++i, col += s.ow) {
    const int64_t si = i * s.st + di;
    if (si < 0 || si >= s.h) continue;
    float *dst = plane + si * s.w + dj;
    for (int64_t j = cols.j0; j < cols.j1; ++j) dst[j * s.st] += col[j];
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
  const int64_t rows = std::max<int64_t>(1, std::min(s.oh, kTileFloats / (s.ckk * s.ow)));
  const int64_t blocks = (s.oh + rows - 1) / rows;
#pragma omp parallel for schedule(dynamic, 1) collapse(2)
  for (int64_t n = 0; n < s.n; ++n) {
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t i0 = b * rows, i1 = std::min(s.oh, i0 + rows), cols = (i1 - i0) * s.ow;
      float *col = scratch(&col_buffer, s.ckk * rows * s.ow);
      for (int64_t tap = 0; tap < s.ckk; ++tap) im2col_tap(x, s, n, tap, i0, i1, col + tap * cols);
      float *out = y + n * s.o * s.ohw + i0 * s.ow;
      gemm('N', 'N', s.o, cols, s.ckk, 1.f, weight, s.ckk, col, cols, 0.f, out, s.ohw);
      bias_act(out, s.ohw, 0, s.o, 0, cols, bias, act);
    }
  }
}

// piece(lo, size) for pieces of [0, len), one per thread (multiples of 16), run in parallel: oneDNN's sgemm
// runs on the calling thread only.
template <class Piece>
void split_over_threads(int64_t len, Piece piece) {
  const int64_t pieces = std::max<int64_t>(1, std::min<int64_t>(omp_get_max_threads(), len / 64));
  const int64_t step = ((len + pieces - 1) / pieces + 15) / 16 * 16;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t lo = 0; lo < len; lo += step) piece(lo, std::min(step, len - lo));
}

// c (m x n) = a (m x k) b (k x n) + bias, activation; the longer side of c split over the threads.
void gemm_bias_act(int64_t m, int64_t n, int64_t k, const float *a, const float *b, const float *bias, bool act,
                   float *c) {
  if (n >= m) {
    split_over_threads(n, [&](int64_t lo, int64_t size) {
      gemm('N', 'N', m, size, k, 1.f, a, k, b + lo, n, 0.f, c + lo, n);
      bias_act(c, n, 0, m, lo, lo + size, bias, act);
    });
  } else {
    split_over_threads(m, [&](int64_t lo, int64_t size) {
      gemm('N', 'N', size, n, k, 1.f, a + lo * k, k, b, n, 0.f, c + lo * n, n);
      bias_act(c, n, lo, lo + size, 0, n, bias, act);
    });
  }
}

// Images per im2col group on the large-weight paths: about kColumns columns, at most kColFloats of columns.
int64_t image_group(const Conv &s) {
  return std::max<int64_t>(1, std::min({s.n, kColumns / s.ohw, kColFloats / (s.ckk * s.ohw)}));
}

// im2col of images [n0, n0 + g) side by side: col is ckk x (g * ohw).
void im2col_images(const float *x, const Conv &s, int64_t n0, int64_t g, float *col) {
  const int64_t cols = g * s.ohw;
#pragma omp parallel for schedule(static) collapse(2)
  for (int64_t tap = 0; tap < s.ckk; ++tap)
    for (int64_t b = 0; b < g; ++b) im2col_tap(x, s, n0 + b, tap, 0, s.oh, col + tap * cols + b * s.ohw);
}

// g images of rows x plane (NCHW) -> rows x (g * plane), the images side by side; and back.
void images_to_sides(const float *images, int64_t rows, int64_t g, int64_t plane, float *sides) {
#pragma omp parallel for schedule(static) collapse(2)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t b = 0; b < g; ++b)
      std::memcpy(sides + (r * g + b) * plane, images + (b * rows + r) * plane, plane * sizeof(float));
}

void sides_to_images(const float *sides, int64_t rows, int64_t g, int64_t plane, float *images) {
#pragma omp parallel for schedule(static) collapse(2)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t b = 0; b < g; ++b)
      std::memcpy(images + (b * rows + r) * plane, sides + (r * g + b) * plane, plane * sizeof(float));
}

void conv_whole(const float *x, const float *weight, const float *bias, bool act, const Conv &s, float *y) {
  const int64_t group = image_group(s);
  for (int64_t n0 = 0; n0 < s.n; n0 += group) {
    const int64_t g = std::min(group, s.n - n0), cols = g * s.ohw;
    if (s.k == 1 && s.st == 1 && g == 1) {  // a 1x1 convolution of one image multiplies x itself
      gemm_bias_act(s.o, cols, s.ckk, weight, x + n0 * s.c * s.hw, bias, act, y + n0 * s.o * s.ohw);
      continue;
    }
    float *col = scratch(&col_buffer, s.ckk * cols);
    im2col_images(x, s, n0, g, col);
    if (g == 1) {
      gemm_bias_act(s.o, cols, s.ckk, weight, col, bias, act, y + n0 * s.o * s.ohw);
      continue;
    }
    float *out = scratch(&out_buffer, s.o * cols);
    gemm_bias_act(s.o, cols, s.ckk, weight, col, bias, act, out);
    sides_to_images(out, s.o, g, s.ohw, y + n0 * s.o * s.ohw);
  }
}

// Winograd F(2x2, 3x3) (Lavin and Gray, 2016) for 3x3 layers with many channels: each 2x2 output tile comes
// from a 4x4 input tile through 16 products of transformed weights and inputs, 16 sgemms of (o x c) by
// (c x tiles) instead of one (o x 9c) by (9c x 4 tiles): 2.25x fewer multiply-adds. The transforms only add,
// subtract and halve, so the results differ from im2col's in rounding only. Tiles run in chunks of at most
// kWinogradFloats of transformed inputs and products.
// fewer input channels: the transforms cost more than they save
constexpr int64_t kWinogradChannels = 32;
constexpr int64_t kWinogradTiles = 100;    // fewer tiles per call: the weight transform costs more than it saves
constexpr int64_t kWinogradFloats = 1 << 22;
constexpr int64_t kRun = 64;  // tiles of one tile row transformed together
// Distance between the 16 matrices of one transform: their size plus one cache line, so that the 16 streams a
// tile reads or writes do not all fall into the same cache sets.
inline int64_t spaced(int64_t size) { return size + 16; }

thread_local std::vector<float> wino_weights, wino_inputs, wino_products;

// u[k][o][c], k = 4 * row + column of the 4x4 tile: G g G^T with G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1].
void winograd_weights(const float *weight, int64_t o, int64_t c, float *u) {
  const int64_t stride = spaced(o * c);
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < o * c; ++p) {
    const float *g = weight + p * 9;
    float t[4][3];
    for (int j = 0; j < 3; ++j) {
      t[0][j] = g[j];
      t[1][j] = 0.5f * (g[j] + g[3 + j] + g[6 + j]);
      t[2][j] = 0.5f * (g[j] - g[3 + j] + g[6 + j]);
      t[3][j] = g[6 + j];
    }
    for (int i = 0; i < 4; ++i) {
      float *dst = u + 4 * i * stride + p;
      dst[0] = t[i][0];
      dst[stride] = 0.5f * (t[i][0] + t[i][1] + t[i][2]);
      dst[2 * stride] = 0.5f * (t[i][0] - t[i][1] + t[i][2]);
      dst[3 * stride] = t[i][2];
    }
  }
}

struct Tiles {
  int64_t rows, cols, per_image;  // tiles over one image: rows x cols
  explicit Tiles(const Conv &s) : rows((s.h + 1) / 2), cols((s.w + 1) / 2), per_image(rows * cols) {}
};

// Image, tile row and tile column of consecutive tiles, without a division per tile.
struct TileWalk {
  const Tiles &tiles;
  int64_t n, row, col;
  TileWalk(const Tiles &t, int64_t first)
      : tiles(t), n(first / t.per_image), row(first % t.per_image / t.cols), col(first % t.cols) {}
  void skip(int64_t k) {  // k tiles on, within the current tile row
    if ((col += k) < tiles.cols) return;
    col = 0;
    if (++row < tiles.rows) return;
    row = 0;
    ++n;
  }
};

// body(plane, at, q, run) for runs of up to kRun consecutive tiles of one tile row (the run's first tile at
// `at`, the q-th of the chunk t0 .. t0 + count - 1), for every plane in [0, planes), the planes split over the
// threads.
template <class Body>
void for_tile_runs(int64_t planes, const Tiles &tiles, int64_t t0, int64_t count, Body body) {
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < planes; ++p) {
    TileWalk at(tiles, t0);
    for (int64_t q = 0; q < count;) {
      const int64_t run = std::min({kRun, count - q, tiles.cols - at.col});
      body(p, at, q, run);
      q += run;
      at.skip(run);
    }
  }
}

// v[k][c][q] for tiles q = t0 .. t0 + count - 1 (over all images, row-major): B^T d B of the 4x4 input tile d
// at (2 * tile row - 1, 2 * tile column - 1), zero outside the map; B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1].
// Runs of up to kRun tiles of one tile row at a time: their four input rows are copied (zero-padded) first.
void winograd_inputs(const float *x, const Conv &s, const Tiles &tiles, int64_t t0, int64_t count, float *v) {
  const int64_t plane_stride = spaced(s.c * count);
  for_tile_runs(s.c, tiles, t0, count, [&](int64_t ch, const TileWalk &at, int64_t q, int64_t run) {
    const float *plane = x + (at.n * s.c + ch) * s.hw;
    const int64_t j0 = 2 * at.col - 1, len = 2 * run + 2;
    const int64_t lo = std::max<int64_t>(0, -j0), hi = std::min(len, s.w - j0);
    float seg[4][2 * kRun + 2];
    for (int r = 0; r < 4; ++r) {
      const int64_t i = 2 * at.row - 1 + r;
      if (i < 0 || i >= s.h) {
        std::fill(seg[r], seg[r] + len, 0.f);
        continue;
      }
      std::fill(seg[r], seg[r] + lo, 0.f);
      std::memcpy(seg[r] + lo, plane + i * s.w + j0 + lo, (hi - lo) * sizeof(float));
      std::fill(seg[r] + hi, seg[r] + len, 0.f);
    }
    float *dst = v + ch * count + q;
    for (int64_t j = 0; j < run; ++j) {
      float b[4][4];
      for (int c = 0; c < 4; ++c) {
        const float d0 = seg[0][2 * j + c], d1 = seg[1][2 * j + c], d2 = seg[2][2 * j + c], d3 = seg[3][2 * j + c];
        b[0][c] = d0 - d2;
        b[1][c] = d1 + d2;
        b[2][c] = d2 - d1;
        b[3][c] = d1 - d3;
      }
      for (int r = 0; r < 4; ++r) {
        dst[(4 * r) * plane_stride + j] = b[r][0] - b[r][2];
        dst[(4 * r + 1) * plane_stride + j] = b[r][1] + b[r][2];
        dst[(4 * r + 2) * plane_stride + j] = b[r][2] - b[r][1];
        dst[(4 * r + 3) * plane_stride + j] = b[r][1] - b[r][3];
      }
    }
  });
}

// y's 2x2 tiles from the products m[k][o][q]: A^T m A + bias, activation; A^T = [1 1 1 0; 0 1 -1 -1]. Runs of
// up to kRun tiles of one tile row at a time, in loops the compiler vectorises.
void winograd_outputs(const float *m, const float *bias, bool act, const Conv &s, const Tiles &tiles, int64_t t0,
                      int64_t count, float *y) {
  const int64_t plane_stride = spaced(s.o * count);
  for_tile_runs(s.o, tiles, t0, count, [&](int64_t oc, const TileWalk &at, int64_t q, int64_t run) {
    const float *src = m + oc * count + q;
    float out[2][2][kRun];
    for (int64_t j = 0; j < run; ++j) {
      float t[2][4];
      for (int c = 0; c < 4; ++c) {
        const float p0 = src[c * plane_stride + j], p1 = src[(4 + c) * plane_stride + j];
        const float p2 = src[(8 + c) * plane_stride + j], p3 = src[(12 + c) * plane_stride + j];
        t[0][c] = p0 + p1 + p2;
        t[1][c] = p1 - p2 - p3;
      }
      for (int i = 0; i < 2; ++i) {
        const float a = t[i][0] + t[i][1] + t[i][2] + bias[oc], b = t[i][1] - t[i][2] - t[i][3] + bias[oc];
        out[i][0][j] = act ? std::max(a, 0.1f * a) : a;
        out[i][1][j] = act ? std::max(b, 0.1f * b) : b;
      }
    }
    const int64_t i0 = 2 * at.row, j0 = 2 * at.col, width = std::min(2 * run, s.w - j0);
    for (int64_t i = 0; i < 2 && i0 + i < s.h; ++i) {
      float *row = y + ((at.n * s.o + oc) * s.h + i0 + i) * s.w + j0;
      for (int64_t j = 0; j < width; ++j) row[j] = out[i][j % 2][j / 2];
    }
  });
}

void conv_winograd(const float *x, const float *weight, const float *bias, bool act, const Conv &s, float *y) {
  const Tiles tiles(s);
  const int64_t total = s.n * tiles.per_image;
  const int64_t chunk = std::max<int64_t>(64, kWinogradFloats / (16 * (s.c + s.o)));
  float *u = scratch(&wino_weights, 16 * spaced(s.o * s.c));
  winograd_weights(weight, s.o, s.c, u);
  float *v = scratch(&wino_inputs, 16 * spaced(s.c * std::min(chunk, total)));
  float *m = scratch(&wino_products, 16 * spaced(s.o * std::min(chunk, total)));
  for (int64_t t0 = 0; t0 < total; t0 += chunk) {
    const int64_t count = std::min(chunk, total - t0);
    winograd_inputs(x, s, tiles, t0, count, v);
#pragma omp parallel for schedule(static)
    for (int64_t k = 0; k < 16; ++k)
      gemm('N', 'N', s.o, count, s.c, 1.f, u + k * spaced(s.o * s.c), s.c, v + k * spaced(s.c * count), count,
                 0.f, m + k * spaced(s.o * count), count);
    winograd_outputs(m, bias, act, s, tiles, t0, count, y);
  }
}

// The weight gradient through the same algorithm: with dM = A dY A^T per tile (dY zero beyond the map's edge),
// dU[k] = sum over tiles of dM[k] V[k]^T (16 sgemms again) and dW = G^T dU G; exact, like the forward.
void winograd_output_grads(const float *dy, const Conv &s, const Tiles &tiles, int64_t t0, int64_t count,
                           float *dm) {
  const int64_t plane_stride = spaced(s.o * count);
  for_tile_runs(s.o, tiles, t0, count, [&](int64_t oc, const TileWalk &at, int64_t q, int64_t run) {
    const int64_t j0 = 2 * at.col, width = std::min(2 * run, s.w - j0);
    float seg[2][2 * kRun];
    for (int r = 0; r < 2; ++r) {
      const int64_t i = 2 * at.row + r;
      const int64_t copied = i < s.h ? width : 0;
      if (copied) std::memcpy(seg[r], dy + ((at.n * s.o + oc) * s.h + i) * s.w + j0, copied * sizeof(float));
      std::fill(seg[r] + copied, seg[r] + 2 * run, 0.f);
    }
    float *dst = dm + oc * count + q;
    for (int64_t j = 0; j < run; ++j) {
      const float a = seg[0][2 * j], b = seg[0][2 * j + 1], c = seg[1][2 * j], d = seg[1][2 * j + 1];
      const float rows[4][2] = {{a, b}, {a + c, b + d}, {a - c, b - d}, {-c, -d}};
      for (int r = 0; r < 4; ++r) {
        dst[(4 * r) * plane_stride + j] = rows[r][0];
        dst[(4 * r + 1) * plane_stride + j] = rows[r][0] + rows[r][1];
        dst[(4 * r + 2) * plane_stride + j] = rows[r][0] - rows[r][1];
        dst[(4 * r + 3) * plane_stride + j] = -rows[r][1];
      }
    }
  });
}

void grad_weight_winograd(const float *x, const float *dy, const Conv &s, float *dw) {
  const Tiles tiles(s);
  const int64_t total = s.n * tiles.per_image;
  const int64_t chunk = std::max<int64_t>(64, kWinogradFloats / (16 * (s.c + s.o)));
  const int64_t u_stride = spaced(s.o * s.c);
  float *du = scratch(&wino_weights, 16 * u_stride);
  float *v = scratch(&wino_inputs, 16 * spaced(s.c * std::min(chunk, total)));
  float *dm = scratch(&wino_products, 16 * spaced(s.o * std::min(chunk, total)));
  for (int64_t t0 = 0; t0 < total; t0 += chunk) {
    const int64_t count = std::min(chunk, total - t0);
    winograd_inputs(x, s, tiles, t0, count, v);
    winograd_output_grads(dy, s, tiles, t0, count, dm);
#pragma omp parallel for schedule(static)
    for (int64_t k = 0; k < 16; ++k)
      gemm('N', 'T', s.o, s.c, count, 1.f, dm + k * spaced(s.o * count), count, v + k * spaced(s.c * count),
                 count, t0 == 0 ? 0.f : 1.f, du + k * u_stride, s.c);
  }
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < s.o * s.c; ++p) {  // G^T = [1 .5 .5 0; 0 .5 -.5 0; 0 .5 .5 1]
    float d[4][4], t[3][4];
    for (int k = 0; k < 16; ++k) d[k / 4][k % 4] = du[k * u_stride + p];
    for (int j = 0; j < 4; ++j) {
      t[0][j] = d[0][j] + 0.5f * (d[1][j] + d[2][j]);
      t[1][j] = 0.5f * (d[1][j] - d[2][j]);
      t[2][j] = 0.5f * (d[1][j] + d[2][j]) + d[3][j];
    }
    float *g = dw + p * 9;
    for (int a = 0; a < 3; ++a) {
      g[3 * a] = t[a][0] + 0.5f * (t[a][1] + t[a][2]);
      g[3 * a + 1] = 0.5f * (t[a][1] - t[a][2]);
      g[3 * a + 2] = 0.5f * (t[a][1] + t[a][2]) + t[a][3];
    }
  }
}

// Winograd for 3x3 stride-1 layers with many channels in and out: with 16 outputs (the input gradient of
// yolov3-tiny's second layer) its per-tile products are too thin, and im2col + sgemm took half the time.
bool use_winograd(const Conv &s) {
  return s.k == 3 && s.st == 1 && s.c >= kWinogradChannels && s.o >= kWinogradChannels &&
         s.n * Tiles(s).per_image >= kWinogradTiles;
}

void conv_any(const float *x, const float *weight, const float *bias, bool act, const Conv &s, float *y) {
  if (s.st == 1 && s.ckk <= kDirectTaps && s.o % kOutBlock == 0) {
    conv_direct(x, weight, bias, act, s, y);
  } else if (use_winograd(s)) {
    conv_winograd(x, weight, bias, act, s, y);
  } else if (s.o * s.ckk <= kTiledWeights) {
    conv_tiled(x, weight, bias, act, s, y);
  } else {
    conv_whole(x, weight, bias, act, s, y);
  }
}

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

// Inputs x (n, c, h, w), weight (o, c, k, k) with k odd (depthwise: (c, 1, 3, 3)), bias (o); output y (n, o, oh,
// ow) for padding k / 2 and the given stride.
int conv_bias_act(void **params, int64_t **shapes, bool act, int64_t stride, bool depthwise_conv = false) {
  const float *x = static_cast<const float *>(params[0]), *weight = static_cast<const float *>(params[1]);
  const float *bias = static_cast<const float *>(params[2]);
  const Conv s(shapes[0], shapes[1], stride);
  float *y = static_cast<float *>(params[3]);
  if (depthwise_conv) {
    depthwise(x, weight, bias, act, s, y);
  } else {
    conv_any(x, weight, bias, act, s, y);
  }
  return 0;
}

// Training: the convolution without bias, its input gradient and its weight gradient. Stride 1: the input
// gradient is the same convolution of dy with the weights transposed and turned by 180 degrees; stride 2: the
// columns W^T dy scattered back (col2im). The weight gradient is Winograd's where the forward is Winograd, else dy
// times the transposed im2col columns of x.
thread_local std::vector<float> zero_bias, turned_weights, dy_columns;

void conv_no_bias(const float *x, const Conv &s, const float *weight, float *y) {
  float *bias = scratch(&zero_bias, s.o);
  std::fill(bias, bias + s.o, 0.f);
  conv_any(x, weight, bias, false, s, y);
}

void grad_input_turned(const float *dy, const float *weight, const Conv &s, float *dx) {
  const int64_t kk = s.k * s.k;
  float *turned = scratch(&turned_weights, s.c * s.o * kk);
#pragma omp parallel for schedule(static)
  for (int64_t ci = 0; ci < s.c; ++ci)
    for (int64_t oc = 0; oc < s.o; ++oc)
      for (int64_t q = 0; q < kk; ++q) turned[(ci * s.o + oc) * kk + q] = weight[(oc * s.c + ci) * kk + kk - 1 - q];
  const int64_t dy_shape[4] = {s.n, s.o, s.h, s.w}, turned_shape[4] = {s.c, s.o, s.k, s.k};
  conv_no_bias(dy, Conv(dy_shape, turned_shape), turned, dx);
}

void grad_input_col2im(const float *dy, const float *weight, const Conv &s, float *dx) {
  std::fill(dx, dx + s.n * s.c * s.hw, 0.f);
  const int64_t group = image_group(s);
  for (int64_t n0 = 0; n0 < s.n; n0 += group) {
    const int64_t g = std::min(group, s.n - n0), cols = g * s.ohw;
    float *grad = scratch(&dy_columns, s.o * cols), *col = scratch(&col_buffer, s.ckk * cols);
    images_to_sides(dy + n0 * s.o * s.ohw, s.o, g, s.ohw, grad);
    split_over_threads(cols, [&](int64_t lo, int64_t size) {
      gemm('T', 'N', s.ckk, size, s.o, 1.f, weight, s.ckk, grad + lo, cols, 0.f, col + lo, cols);
    });
    const int64_t kk = s.k * s.k;
#pragma omp parallel for schedule(static) collapse(2)
    for (int64_t b = 0; b < g; ++b)
      for (int64_t ch = 0; ch < s.c; ++ch)
        for (int64_t tap = ch * kk; tap < (ch + 1) * kk; ++tap)
          col2im_tap(col + tap * cols + b * s.ohw, s, n0 + b, tap, dx);
  }
}

// c (m x n) = a (m x k) b^T (b is n x k) + beta c; the longer side of c split over the threads.
void gemm_nt(int64_t m, int64_t n, int64_t k, const float *a, const float *b, float beta, float *c) {
  if (n >= m) {
    split_over_threads(n, [&](int64_t lo, int64_t size) {
      gemm('N', 'T', m, size, k, 1.f, a, k, b + lo * k, k, beta, c + lo, n);
    });
  } else {
    split_over_threads(m, [&](int64_t lo, int64_t size) {
      gemm('N', 'T', size, n, k, 1.f, a + lo * k, k, b, k, beta, c + lo * n, n);
    });
  }
}

void grad_weight_im2col(const float *x, const float *dy, const Conv &s, float *dw) {
  const int64_t group = image_group(s);
  for (int64_t n0 = 0; n0 < s.n; n0 += group) {
    const int64_t g = std::min(group, s.n - n0), cols = g * s.ohw;
    float *col = scratch(&col_buffer, s.ckk * cols), *grad = scratch(&dy_columns, s.o * cols);
    im2col_images(x, s, n0, g, col);
    images_to_sides(dy + n0 * s.o * s.ohw, s.o, g, s.ohw, grad);
    gemm_nt(s.o, s.ckk, cols, grad, col, n0 == 0 ? 0.f : 1.f, dw);
  }
}

// The weight gradient of a layer with small weights (the large early maps), as conv_tiled runs its forward: per
// block of output rows, that block's im2col in a cache-sized buffer and dw += dy_block col^T into a partial sum.
// The whole-image im2col of grad_weight_im2col is tens of megabytes there and made it memory-bound. The (image,
// block) items are cut into one fixed run per thread, each summed in item order, and the runs added in run order:
// the same bits for the same thread count, whatever the threads' timing.
void grad_weight_tiled(const float *x, const float *dy, const Conv &s, float *dw) {
  const int64_t rows = std::max<int64_t>(1, std::min(s.oh, kTileFloats / (s.ckk * s.ow)));
  const int64_t blocks = (s.oh + rows - 1) / rows, items = s.n * blocks, size = s.o * s.ckk;
  const int64_t runs = std::max<int64_t>(1, std::min<int64_t>(omp_get_max_threads(), items));
  std::vector<float> sums(runs * size, 0.f);
#pragma omp parallel for schedule(static, 1)
  for (int64_t r = 0; r < runs; ++r) {
    for (int64_t item = r * items / runs; item < (r + 1) * items / runs; ++item) {
      const int64_t n = item / blocks, i0 = item % blocks * rows, i1 = std::min(s.oh, i0 + rows);
      const int64_t cols = (i1 - i0) * s.ow;
      float *col = scratch(&col_buffer, s.ckk * rows * s.ow);
      for (int64_t tap = 0; tap < s.ckk; ++tap) im2col_tap(x, s, n, tap, i0, i1, col + tap * cols);
      gemm('N', 'T', s.o, s.ckk, cols, 1.f, dy + n * s.o * s.ohw + i0 * s.ow, s.ohw, col, cols, 1.f,
                 sums.data() + r * size, s.ckk);
    }
  }
  for (int64_t i = 0; i < size; ++i) {
    float total = 0.f;
    for (int64_t r = 0; r < runs; ++r) total += sums[r * size + i];
    dw[i] = total;
  }
}

// Inputs x (n, c, h, w), weight (o, c, k, k) with k odd; output y (n, o, oh, ow).
int conv_forward(void **params, int64_t **shapes, int64_t stride) {
  conv_no_bias(static_cast<const float *>(params[0]), Conv(shapes[0], shapes[1], stride),
               static_cast<const float *>(params[1]), static_cast<float *>(params[2]));
  return 0;
}

// Inputs x (n, c, h, w) for its shape, dy (n, o, oh, ow), weight (o, c, k, k); output dx (n, c, h, w).
int conv_grad_input(void **params, int64_t **shapes, int64_t stride) {
  const Conv s(shapes[0], shapes[2], stride);
  const float *dy = static_cast<const float *>(params[1]), *weight = static_cast<const float *>(params[2]);
  float *dx = static_cast<float *>(params[3]);
  if (stride == 1) {
    grad_input_turned(dy, weight, s, dx);
  } else {
    grad_input_col2im(dy, weight, s, dx);
  }
  return 0;
}

// Inputs x (n, c, h, w), dy (n, o, oh, ow), weight (o, c, k, k) for its shape; output dw (o, c, k, k).
int conv_grad_weight(void **params, int64_t **shapes, int64_t stride) {
  const float *x = static_cast<const float *>(params[0]), *dy = static_cast<const float *>(params[1]);
  float *dw = static_cast<float *>(params[3]);
  const Conv s(shapes[0], shapes[2], stride);
  if (use_winograd(s)) {
    grad_weight_winograd(x, dy, s, dw);
  } else if (s.o * s.ckk <= kTiledWeights) {
    grad_weight_tiled(x, dy, s, dw);
  } else {
    grad_weight_im2col(x, dy, s, dw);
  }
  return 0;
}
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

#define YOLO_AOT(name) \
  extern "C" int name(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream, \
                      void *extra)

YOLO_AOT(ConvBias) { return conv_bias_act(params, shapes, false, 1); }
YOLO_AOT(ConvBiasLeaky) { return conv_bias_act(params, shapes, true, 1); }
YOLO_AOT(ConvBiasStride2) { return conv_bias_act(params, shapes, false, 2); }
YOLO_AOT(ConvBiasLeakyStride2) { return conv_bias_act(params, shapes, true, 2); }
YOLO_AOT(DepthwiseBias) { return conv_bias_act(params, shapes, false, 1, true); }
YOLO_AOT(DepthwiseBiasLeaky) { return conv_bias_act(params, shapes, true, 1, true); }
YOLO_AOT(DepthwiseBiasStride2) { return conv_bias_act(params, shapes, false, 2, true); }
YOLO_AOT(DepthwiseBiasLeakyStride2) { return conv_bias_act(params, shapes, true, 2, true); }
YOLO_AOT(ConvSame) { return conv_forward(params, shapes, 1); }
YOLO_AOT(ConvSameGradInput) { return conv_grad_input(params, shapes, 1); }
YOLO_AOT(ConvSameGradWeight) { return conv_grad_weight(params, shapes, 1); }
YOLO_AOT(ConvStride2) { return conv_forward(params, shapes, 2); }
YOLO_AOT(ConvStride2GradInput) { return conv_grad_input(params, shapes, 2); }
YOLO_AOT(ConvStride2GradWeight) { return conv_grad_weight(params, shapes, 2); }
YOLO_AOT(Depthwise) { return depthwise_forward(params, shapes, 1); }
YOLO_AOT(DepthwiseGradInput) { return depthwise_input_grad(params, shapes, 1); }
YOLO_AOT(DepthwiseGradWeight) { return depthwise_weight_grad(params, shapes, 1); }
YOLO_AOT(DepthwiseStride2) { return depthwise_forward(params, shapes, 2); }
YOLO_AOT(DepthwiseStride2GradInput) { return depthwise_input_grad(params, shapes, 2); }
YOLO_AOT(DepthwiseStride2GradWeight) { return depthwise_weight_grad(params, shapes, 2); }

// Training: batch normalisation with the batch's statistics over (n, h, w), then leaky ReLU with a given slope (1
// for none), forward in two passes (statistics, then the output) and backward in two (the sums, then dx). The
// activations are a training step's largest tensors, and MindSpore's BatchNorm, its gradient and the leaky ReLU as
// stock ops (0.1 x + 0.9 relu(x)) made about fifteen passes over them. settings = (eps, slope).
namespace {
constexpr int64_t kSumBlock = 1024;  // floats summed in float lanes before the block's total goes to double

struct Sums {
  double a = 0, b = 0;
};

// A channel's planes: n planes of hw floats, plane i at base + i * stride.
struct Channel {
  const float *base;
  int64_t n, hw, stride;
};

// Over a channel: sum of (x - pivot) and of (x - pivot)^2 (the pivot, its first value, keeps the float lanes exact
// enough when the mean is large against the spread).
Sums moments(const Channel &ch, float pivot) {
  Sums s;
  for (int64_t p = 0; p < ch.n; ++p) {
    const float *x = ch.base + p * ch.stride;
    for (int64_t b0 = 0; b0 < ch.hw; b0 += kSumBlock) {
      const int64_t b1 = std::min(ch.hw, b0 + kSumBlock);
      v8 s1 = {}, s2 = {};
      int64_t i = b0;
      for (; i + 8 <= b1; i += 8) {
        v8 v;
        std::memcpy(&v, x + i, sizeof v);
        v -= pivot;
        s1 += v;
        s2 += v * v;
      }
      double t1 = 0, t2 = 0;
      for (int l = 0; l < 8; ++l) t1 += s1[l], t2 += s2[l];
      for (; i < b1; ++i) t1 += x[i] - pivot, t2 += double(x[i] - pivot) * (x[i] - pivot);
      s.a += t1;
      s.b += t2;
    }
  }
  return s;
}

// Over a channel, with g = dy * ((x - mean) * scale + beta > 0 ? 1 : slope): sum of g and of g * (x - mean).
Sums grad_sums(const Channel &x_ch, const float *dy_base, float mean, float scale, float beta, float slope) {
  Sums s;
  const v8 one = {1, 1, 1, 1, 1, 1, 1, 1}, low = one * slope;
  for (int64_t p = 0; p < x_ch.n; ++p) {
    const float *x = x_ch.base + p * x_ch.stride, *dy = dy_base + p * x_ch.stride;
    for (int64_t b0 = 0; b0 < x_ch.hw; b0 += kSumBlock) {
      const int64_t b1 = std::min(x_ch.hw, b0 + kSumBlock);
      v8 s1 = {}, s2 = {};
      int64_t i = b0;
      for (; i + 8 <= b1; i += 8) {
        v8 v, d;
        std::memcpy(&v, x + i, sizeof v);
        std::memcpy(&d, dy + i, sizeof d);
        const v8 c = v - mean, g = d * (c * scale + beta > 0.f ? one : low);
        s1 += g;
        s2 += g * c;
      }
      double t1 = 0, t2 = 0;
      for (int l = 0; l < 8; ++l) t1 += s1[l], t2 += s2[l];
      for (; i < b1; ++i) {
        const float c = x[i] - mean, g = dy[i] * (c * scale + beta > 0.f ? 1.f : slope);
        t1 += g;
        t2 += double(g) * c;
      }
      s.a += t1;
      s.b += t2;
    }
  }
  return s;
}

// Inputs dy (n, c, h, w); output the sum of each channel (c): a bias's gradient.
int channel_sums(void **params, int64_t **shapes) {
  const float *dy = static_cast<const float *>(params[0]);
  float *sums = static_cast<float *>(params[1]);
  const int64_t n = shapes[0][0], c = shapes[0][1], hw = shapes[0][2] * shapes[0][3];
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t ch = 0; ch < c; ++ch)
    sums[ch] = static_cast<float>(moments(Channel{dy + ch * hw, n, hw, c * hw}, 0.f).a);
  return 0;
}

// Inputs x (n, c, h, w), gamma (c), beta (c), settings (2); outputs y (n, c, h, w), the batch mean (c) and biased
// variance (c).
int batchnorm_act(void **params, int64_t **shapes) {
  const float *x = static_cast<const float *>(params[0]), *gamma = static_cast<const float *>(params[1]);
  const float *beta = static_cast<const float *>(params[2]), *settings = static_cast<const float *>(params[3]);
  float *y = static_cast<float *>(params[4]), *mean = static_cast<float *>(params[5]);
  float *var = static_cast<float *>(params[6]);
  const int64_t n = shapes[0][0], c = shapes[0][1], hw = shapes[0][2] * shapes[0][3];
  const float eps = settings[0], slope = settings[1];
  const double count = static_cast<double>(n * hw);
  std::vector<float> scale(c);
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t ch = 0; ch < c; ++ch) {
    const float pivot = x[ch * hw];
    const Sums s = moments(Channel{x + ch * hw, n, hw, c * hw}, pivot);
    const double m = s.a / count, v = std::max(s.b / count - m * m, 0.0);
    mean[ch] = static_cast<float>(pivot + m);
    var[ch] = static_cast<float>(v);
    scale[ch] = static_cast<float>(gamma[ch] / std::sqrt(v + eps));
  }
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < n * c; ++p) {
    const float m = mean[p % c], k = scale[p % c], b = beta[p % c];
    const float *in = x + p * hw;
    float *out = y + p * hw;
    for (int64_t i = 0; i < hw; ++i) {
      const float z = (in[i] - m) * k + b;
      out[i] = z > 0.f ? z : slope * z;
    }
  }
  return 0;
}

// Inputs x, dy (n, c, h, w), gamma, beta, mean, var (c), settings (2); outputs dx (n, c, h, w), dgamma, dbeta (c).
int batchnorm_act_grad(void **params, int64_t **shapes) {
  const float *x = static_cast<const float *>(params[0]), *dy = static_cast<const float *>(params[1]);
  const float *gamma = static_cast<const float *>(params[2]), *beta = static_cast<const float *>(params[3]);
  const float *mean = static_cast<const float *>(params[4]), *var = static_cast<const float *>(params[5]);
  const float *settings = static_cast<const float *>(params[6]);
  float *dx = static_cast<float *>(params[7]), *dgamma = static_cast<float *>(params[8]);
  float *dbeta = static_cast<float *>(params[9]);
  const int64_t n = shapes[0][0], c = shapes[0][1], hw = shapes[0][2] * shapes[0][3];
  const float eps = settings[0], slope = settings[1];
  const double count = static_cast<double>(n * hw);
  std::vector<float> scale(c), k_x(c), k_0(c);
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t ch = 0; ch < c; ++ch) {
    const double invstd = 1.0 / std::sqrt(static_cast<double>(var[ch]) + eps), k = gamma[ch] * invstd;
    scale[ch] = static_cast<float>(k);
    const Sums s = grad_sums(Channel{x + ch * hw, n, hw, c * hw}, dy + ch * hw, mean[ch], scale[ch], beta[ch], slope);
    dbeta[ch] = static_cast<float>(s.a);
    dgamma[ch] = static_cast<float>(s.b * invstd);
    // dx = k (g - sum g / count - xhat * dgamma / count), xhat = (x - mean) invstd
    k_x[ch] = static_cast<float>(k * s.b * invstd * invstd / count);
    k_0[ch] = static_cast<float>(-k * s.a / count);
  }
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < n * c; ++p) {
    const int64_t ch = p % c;
    const float m = mean[ch], k = scale[ch], b = beta[ch], kx = k_x[ch], k0 = k_0[ch];
    const float *in = x + p * hw, *d = dy + p * hw;
    float *out = dx + p * hw;
    for (int64_t i = 0; i < hw; ++i) {
      const float centred = in[i] - m, g = d[i] * (centred * k + b > 0.f ? 1.f : slope);
      out[i] = k * g - kx * centred + k0;
    }
  }
  return 0;
}
}  // namespace

YOLO_AOT(BatchNormAct) { return batchnorm_act(params, shapes); }
YOLO_AOT(BatchNormActGrad) { return batchnorm_act_grad(params, shapes); }
YOLO_AOT(ChannelSums) { return channel_sums(params, shapes); }
