// Winograd F(2x2, 3x3) for 3x3 stride-1 layers with many channels: the forward with bias and activation, and the
// weight gradient through the same transforms.
#include "kernels.h"

namespace yolo {
namespace {
// Winograd F(2x2, 3x3) (Lavin and Gray, 2016) for 3x3 layers with many channels: each 2x2 output tile comes
// from a 4x4 input tile through 16 products of transformed weights and inputs, 16 sgemms of (o x c) by
// (c x tiles) instead of one (o x 9c) by (9c x 4 tiles): 2.25x fewer multiply-adds. The transforms only add,
// subtract and halve, so the results differ from im2col's in rounding only. Tiles run in chunks of at most
// kWinogradFloats of transformed inputs and products.
constexpr int64_t kWinogradChannels = 32;  // fewer input channels: the transforms cost more than they save
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
}  // namespace

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

}  // namespace yolo
