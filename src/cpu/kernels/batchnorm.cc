// Batch normalisation with the batch's statistics, then leaky ReLU, forward and backward (training).
#include "kernels.h"

namespace yolo {
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

}  // namespace yolo
