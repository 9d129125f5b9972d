// The CPU kernels' common header. The kernels are MindSpore aot custom ops on float32, NCHW, contiguous tensors,
// built into one library by src/cpu/cpu_kernels.py: pool.cc (2x2 max-pools), conv.cc (convolutions: direct, row
// blocks of im2col, whole-image im2col, and their gradients), winograd.cc (Winograd F(2x2, 3x3), forward and weight
// gradient), depthwise.cc (MobileNetV2's 3x3 depthwise convolutions), batchnorm.cc (batch normalisation with the
// batch's statistics and leaky ReLU), gemm.cc (the matrix product they all use) and dnnl_conv.cc (oneDNN's own
// convolution primitives, which conv.cc picks in bf16 where they measured faster; dnnl_api.h declares the C API).
#pragma once

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

// The one way to declare an exported kernel: MindSpore's aot signature; params holds the inputs, then the output.
#define YOLO_AOT(name)                                                                                            \
  extern "C" int name(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream, \
                      void *extra)

namespace yolo {

typedef float v8 __attribute__((vector_size(32)));  // eight floats, one AVX register
typedef int32_t v8i __attribute__((vector_size(32)));  // eight ints: v8 comparisons, lane masks and patterns

// Every matrix product of the kernels (gemm.cc): dnnl_sgemm's arguments, row-major, on the calling thread only.
void gemm(char transa, char transb, int64_t m, int64_t n, int64_t k, float alpha, const float *a, int64_t lda,
          const float *b, int64_t ldb, float beta, float *c, int64_t ldc);

// The kernels' private libdnnl (dlopen handle, null if it did not load), and whether the matrix products and
// oneDNN's convolutions run in bf16 (KernelsSetPrecision).
void *dnnl_library();
bool bf16_products();

// A convolution with padding k / 2 and stride st: input n x c x h x w, output n x o x oh x ow.
struct Conv {
  int64_t n, c, h, w, o, k, hw, ckk, pad, st, oh, ow, ohw;
  Conv(const int64_t *x, const int64_t *weight, int64_t stride = 1)
      : n(x[0]), c(x[1]), h(x[2]), w(x[3]), o(weight[0]), k(weight[2]), hw(x[2] * x[3]),
        ckk(weight[1] * weight[2] * weight[3]), pad(weight[2] / 2), st(stride),
        oh((x[2] + 2 * pad - k) / stride + 1), ow((x[3] + 2 * pad - k) / stride + 1), ohw(oh * ow) {}
};

// Buffers kept between calls (per thread): allocating megabytes per call costs page faults every time.
inline float *scratch(std::vector<float> *v, int64_t size) {
  if (static_cast<int64_t>(v->size()) < size) v->resize(size);
  return v->data();
}

inline float leaky(float v) { return v > 0.f ? v : 0.1f * v; }

// piece(lo, size) for pieces of [0, len), one per thread (multiples of 16), run in parallel: oneDNN's sgemm
// runs on the calling thread only.
template <class Piece>
void split_over_threads(int64_t len, Piece piece) {
  const int64_t pieces = std::max<int64_t>(1, std::min<int64_t>(omp_get_max_threads(), len / 64));
  const int64_t step = ((len + pieces - 1) / pieces + 15) / 16 * 16;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t lo = 0; lo < len; lo += step) piece(lo, std::min(step, len - lo));
}

// Winograd F(2x2, 3x3) (winograd.cc): where it runs, the forward with bias and activation, the weight gradient.
bool use_winograd(const Conv &s);
void conv_winograd(const float *x, const float *weight, const float *bias, bool act, const Conv &s, float *y);
void grad_weight_winograd(const float *x, const float *dy, const Conv &s, float *dw);

// The passes of a convolution in training.
enum ConvPass { kForward = 0, kInputGrad = 1, kWeightGrad = 2 };

// oneDNN's convolution primitives (dnnl_conv.cc) on the kernels' fp32 NCHW tensors, in the precision of
// bf16_products(): the forward (bias and leaky ReLU optional), the input gradient and the weight gradient.
bool onednn_ready();
bool onednn_has(ConvPass pass, const Conv &s);  // oneDNN implements the pass in the current precision (made here)
bool onednn_on_amx(ConvPass pass, const Conv &s);  // and runs it on AMX (its implementation's name says so)
void onednn_conv(const float *x, const float *weight, const float *bias, bool act, const Conv &s, float *y);
void onednn_grad_input(const float *dy, const float *weight, const Conv &s, float *dx);
void onednn_grad_weight(const float *x, const float *dy, const Conv &s, float *dw);
// A DarkNet-53 stage in inference (its stride-2 convolution, then residual blocks), in bf16 on NHWC throughout
// (conv.cc's DarknetStage calls it where oneDNN runs every forward of the stage).
void onednn_stage(const float *x, const float *const *weights, const float *const *biases, const Conv *convs,
                  int count, float *y);
// A YOLO block in inference (five convolutions to the route, then the 3x3 and the head's 1x1), in bf16 on NHWC
// between them (conv.cc's YoloBlock calls it where oneDNN runs every forward of the block).
void onednn_yolo_block(const float *x, const float *const *weights, const float *const *biases, const Conv *convs,
                       float *route, float *out);
// The implementation oneDNN picked for a pass's primitive.
const char *onednn_impl(ConvPass pass, const Conv &s, bool bias, bool act);

}  // namespace yolo
