// Convolutions of one group, stride 1 or 2, padding k / 2: for inference with bias and activation, for training
// without bias and with both gradients.
#include "kernels.h"

namespace yolo {
namespace {
// Convolution + bias + activation in one op (MindSpore's Conv2D, BiasAdd and LeakyReLU were slow here and three
// passes over memory). Four paths, by shape (the fourth, Winograd for 3x3 layers with many channels, in winograd.cc):
// - few taps per output (c*k*k <= kDirectTaps, the layer on RGB): a direct convolution, 4 output channels x 16
//   columns in registers; im2col + sgemm is memory-bound there;
// - small weights (o*c*k*k <= kTiledWeights, the large early maps): blocks of output rows, each block's im2col
//   in a cache-sized buffer, one sgemm, bias and activation while it is in cache, blocks spread over threads;
// - large weights (the deep layers on small maps): im2col of several images side by side (one 13x13 map is
//   too few columns for sgemm to run at speed), one sgemm split over the threads, each piece finished as done.
constexpr int64_t kDirectTaps = 32;
constexpr int64_t kTiledWeights = 100000;
constexpr int64_t kTileFloats = 65536;  // one row block's im2col buffer, 256 KB
constexpr int64_t kColumns = 8192;      // images per sgemm on the large-weight path: about this many columns,
constexpr int64_t kColFloats = 1 << 22;  // and an im2col buffer of at most 16 MB
constexpr int64_t kOutBlock = 4, kColBlock = 16;

thread_local std::vector<float> pad_buffer, col_buffer, out_buffer;

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

void conv_hand(const float *x, const float *weight, const float *bias, bool act, const Conv &s, float *y) {
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

// Where oneDNN's convolution primitive (dnnl_conv.cc) runs a pass instead of the forms above: in bf16 only
// (docs/performance.md, "oneDNN's convolutions"; process CPU time, reorders in and out included). In fp32 the forms
// above were as fast or faster on every layer of the four networks (Winograd's 2.25x fewer products on the wide
// 3x3 layers). In bf16, where oneDNN runs the pass on AMX (its implementation says so), oneDNN runs it: its AMX
// kernels ran yolov3-tiny's bf16 forward 1.5x and its training step 1.3x as fast as the per-shape choice below on
// an Intel Xeon with AMX. Without AMX (AVX512-BF16, measured on an AMD EPYC) by layer shape: oneDNN won the narrow
// 3x3 layers (up to 32 input channels), the stride-2 layers and most input gradients, while Winograd (fewer
// products, each rounded to bf16 as well) kept the wide 3x3 stride-1 layers on larger maps. The RGB layer's
// forward stays the direct form in fp32 everywhere: as fast as oneDNN's, and the image is not rounded to bf16
// (with it rounded the converted yolov3-tiny's scores moved by up to 0.055 from fp32's, more than
// tests/test_precision.py allows).
bool onednn_runs(const Conv &s, ConvPass pass) {
  if (!bf16_products() || !onednn_ready()) return false;
  // the RGB layer's forward keeps the direct form: as fast, and exact in fp32 on the image's pixels
  if ((pass == kForward && s.st == 1 && s.ckk <= kDirectTaps) || !onednn_has(pass, s)) return false;
  if (onednn_on_amx(pass, s)) return true;
  const int64_t columns = s.n * s.hw;  // input positions of the call
  switch (pass) {
    case kForward:
      return s.k == 3 && (s.st == 2 || s.c <= 32);
    case kInputGrad:
      return s.k == 1 ? s.o <= 32 || s.hw <= 26 * 26 : s.st == 2 || s.c <= 64 || columns < 1000;
    case kWeightGrad:
      return s.k == 1 ? s.c <= 768 && columns >= 5000 : s.st == 1 && s.c <= 32;
  }
  return false;
}

void conv_any(const float *x, const float *weight, const float *bias, bool act, const Conv &s, float *y) {
  if (onednn_runs(s, kForward)) {
    onednn_conv(x, weight, bias, act, s, y);
  } else {
    conv_hand(x, weight, bias, act, s, y);
  }
}

// Inputs x (n, c, h, w), weight (o, c, k, k) with k odd, bias (o); output y (n, o, oh, ow) for padding k / 2 and
// the given stride.
int conv_bias_act(void **params, int64_t **shapes, bool act, int64_t stride) {
  const float *x = static_cast<const float *>(params[0]), *weight = static_cast<const float *>(params[1]);
  const float *bias = static_cast<const float *>(params[2]);
  const Conv s(shapes[0], shapes[1], stride);
  float *y = static_cast<float *>(params[3]);
  conv_any(x, weight, bias, act, s, y);
  return 0;
}

thread_local std::vector<float> chain_ping, chain_pong;

// A fused op's chain of convolutions: params x, then a weight and a bias per convolution; each convolution reads
// the previous one's output (the first x, at `first_stride`). Fills weights and biases, returns the convolutions.
std::vector<Conv> chain(void **params, int64_t **shapes, int count, int64_t first_stride, const float **weights,
                        const float **biases) {
  std::vector<Conv> convs{Conv(shapes[0], shapes[1], first_stride)};
  for (int i = 0; i < count; ++i) {
    weights[i] = static_cast<const float *>(params[1 + 2 * i]);
    biases[i] = static_cast<const float *>(params[2 + 2 * i]);
    if (i == 0) continue;
    const int64_t in[4] = {convs.back().n, convs.back().o, convs.back().oh, convs.back().ow};
    convs.emplace_back(in, shapes[1 + 2 * i]);
  }
  return convs;
}

bool all_on_onednn(const std::vector<Conv> &convs) {
  return std::all_of(convs.begin(), convs.end(), [](const Conv &s) { return onednn_runs(s, kForward); });
}

// Inference: a DarkNet-53 stage, its stride-2 3x3 convolution and then residual blocks y = y + conv2(conv1(y)) (1x1
// to half the channels, 3x3 back), every convolution with bias and leaky ReLU. Inputs x (n, c, h, w), the stride-2
// convolution's weight and bias, then each block's w1, b1, w2, b2; output y (n, 2c, h / 2, w / 2). Where oneDNN runs
// every forward of the stage, the stage stays in NHWC (dnnl_conv.cc); else the layers as conv_any runs them, one
// after the other, and the sums: the same bits as the ops apart.
int darknet_stage(int nparam, void **params, int64_t **shapes) {
  const int count = (nparam - 2) / 2;  // params: x, a weight and a bias per convolution, then y
  std::vector<const float *> weights(count), biases(count);
  const std::vector<Conv> convs = chain(params, shapes, count, 2, weights.data(), biases.data());
  const float *x = static_cast<const float *>(params[0]);
  float *y = static_cast<float *>(params[nparam - 1]);
  if (all_on_onednn(convs)) {
    onednn_stage(x, weights.data(), biases.data(), convs.data(), count, y);
    return 0;
  }
  conv_any(x, weights[0], biases[0], true, convs[0], y);
  const int64_t size = convs[0].n * convs[0].o * convs[0].ohw;
  for (int i = 1; i + 1 < count; i += 2) {
    float *t = scratch(&chain_ping, convs[i].n * convs[i].o * convs[i].ohw), *u = scratch(&chain_pong, size);
    conv_any(y, weights[i], biases[i], true, convs[i], t);
    conv_any(t, weights[i + 1], biases[i + 1], true, convs[i + 1], u);
#pragma omp parallel for schedule(static)
    for (int64_t k = 0; k < size; ++k) y[k] = y[k] + u[k];
  }
  return 0;
}

// Inference: a YOLO block: five convolutions with bias and leaky ReLU (1x1, 3x3, 1x1, 3x3, 1x1) to the route, then a
// 3x3 one with bias and leaky ReLU and the head's 1x1 with bias. Inputs x (n, c, h, w), then each convolution's
// weight and bias in that order; outputs the route and the head's map. Where oneDNN runs every forward of the
// block, it stays in NHWC between them (dnnl_conv.cc); else the layers as conv_any runs them: the same bits as the
// ops apart.
int yolo_block(void **params, int64_t **shapes) {
  constexpr int kConvs = 7;
  const float *weights[kConvs], *biases[kConvs];
  const std::vector<Conv> convs = chain(params, shapes, kConvs, 1, weights, biases);
  const float *x = static_cast<const float *>(params[0]);
  float *route = static_cast<float *>(params[1 + 2 * kConvs]), *out = static_cast<float *>(params[2 + 2 * kConvs]);
  if (all_on_onednn(convs)) {
    onednn_yolo_block(x, weights, biases, convs.data(), route, out);
    return 0;
  }
  int64_t most = 0;
  for (const Conv &s : convs) most = std::max(most, s.n * s.o * s.ohw);
  float *bufs[2] = {scratch(&chain_ping, most), scratch(&chain_pong, most)};
  const float *in = x;
  for (int i = 0; i < 4; ++i) {
    conv_any(in, weights[i], biases[i], true, convs[i], bufs[i % 2]);
    in = bufs[i % 2];
  }
  conv_any(in, weights[4], biases[4], true, convs[4], route);
  conv_any(route, weights[5], biases[5], true, convs[5], bufs[0]);
  conv_any(bufs[0], weights[6], biases[6], false, convs[6], out);
  return 0;
}

// Training: the convolution without bias, its input gradient and its weight gradient. Stride 1: the input
// gradient is the same convolution of dy with the weights transposed and turned by 180 degrees; stride 2: the
// columns W^T dy scattered back (col2im). The weight gradient is Winograd's where the forward is Winograd, else dy
// times the transposed im2col columns of x.
thread_local std::vector<float> zero_bias, turned_weights, dy_columns;

// The hand-written forms (also for the input gradient as a convolution: its own pass decides oneDNN or not).
void conv_no_bias(const float *x, const Conv &s, const float *weight, float *y) {
  float *bias = scratch(&zero_bias, s.o);
  std::fill(bias, bias + s.o, 0.f);
  conv_hand(x, weight, bias, false, s, y);
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
  const float *x = static_cast<const float *>(params[0]), *weight = static_cast<const float *>(params[1]);
  float *y = static_cast<float *>(params[2]);
  const Conv s(shapes[0], shapes[1], stride);
  if (onednn_runs(s, kForward)) {
    onednn_conv(x, weight, nullptr, false, s, y);
  } else {
    conv_no_bias(x, s, weight, y);
  }
  return 0;
}

// Inputs x (n, c, h, w) for its shape, dy (n, o, oh, ow), weight (o, c, k, k); output dx (n, c, h, w).
int conv_grad_input(void **params, int64_t **shapes, int64_t stride) {
  const Conv s(shapes[0], shapes[2], stride);
  const float *dy = static_cast<const float *>(params[1]), *weight = static_cast<const float *>(params[2]);
  float *dx = static_cast<float *>(params[3]);
  if (onednn_runs(s, kInputGrad)) {
    onednn_grad_input(dy, weight, s, dx);
  } else if (stride == 1) {
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
  if (onednn_runs(s, kWeightGrad)) {
    onednn_grad_weight(x, dy, s, dw);
  } else if (use_winograd(s)) {
    grad_weight_winograd(x, dy, s, dw);
  } else if (s.o * s.ckk <= kTiledWeights) {
    grad_weight_tiled(x, dy, s, dw);
  } else {
    grad_weight_im2col(x, dy, s, dw);
  }
  return 0;
}
}  // namespace

// Which form runs a pass (0 forward, 1 input gradient, 2 weight gradient) of a convolution of x (n, c, h, w) by
// o x c x k x k weights at a stride, in the current precision: 1 and oneDNN's implementation name in `name` (at most
// `size` bytes) when oneDNN's primitive does (it is made here if it was not yet), else 0 (the hand-written forms).
extern "C" int KernelsConvRoute(int pass, int64_t n, int64_t c, int64_t h, int64_t w, int64_t o, int64_t k,
                                int64_t stride, char *name, int size) {
  const int64_t x[4] = {n, c, h, w}, weight[4] = {o, c, k, k};
  const Conv s(x, weight, stride);
  const ConvPass kind = static_cast<ConvPass>(pass);
  if (!onednn_runs(s, kind)) return 0;
  std::snprintf(name, size, "%s", onednn_impl(kind, s, false, false));
  return 1;
}

YOLO_AOT(DarknetStage) { return darknet_stage(nparam, params, shapes); }
YOLO_AOT(YoloBlock) { return yolo_block(params, shapes); }
YOLO_AOT(ConvBias) { return conv_bias_act(params, shapes, false, 1); }
YOLO_AOT(ConvBiasLeaky) { return conv_bias_act(params, shapes, true, 1); }
YOLO_AOT(ConvBiasStride2) { return conv_bias_act(params, shapes, false, 2); }
YOLO_AOT(ConvBiasLeakyStride2) { return conv_bias_act(params, shapes, true, 2); }
YOLO_AOT(ConvSame) { return conv_forward(params, shapes, 1); }
YOLO_AOT(ConvSameGradInput) { return conv_grad_input(params, shapes, 1); }
YOLO_AOT(ConvSameGradWeight) { return conv_grad_weight(params, shapes, 1); }
YOLO_AOT(ConvStride2) { return conv_forward(params, shapes, 2); }
YOLO_AOT(ConvStride2GradInput) { return conv_grad_input(params, shapes, 2); }
YOLO_AOT(ConvStride2GradWeight) { return conv_grad_weight(params, shapes, 2); }

}  // namespace yolo
