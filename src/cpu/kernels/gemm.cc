// The kernels' matrix product: oneDNN's row-major gemm (it runs on the calling thread only), from a private copy of
// the libdnnl that MindSpore ships (YOLO_DNNL, set by src/cpu/cpu_kernels.py): src/cpu/onednn.py caps MindSpore's own
// instance at AVX2, and this copy keeps every instruction set the CPU has.
//
// Precision (KernelsSetPrecision, from src/cpu/precision.py): fp32 sgemm, or bf16 operands (rounded to nearest even)
// with fp32 accumulation and result through dnnl_gemm_bf16bf16f32 (AMX or AVX512-BF16 where the CPU has them).
// Process-wide: a setting of the run, not of a layer.
#include <dlfcn.h>

#include "kernels.h"

namespace yolo {
namespace {
typedef int (*SgemmFn)(char, char, int64_t, int64_t, int64_t, float, const float *, int64_t, const float *, int64_t,
                       float, float *, int64_t);
typedef int (*GemmBf16Fn)(char, char, int64_t, int64_t, int64_t, float, const uint16_t *, int64_t, const uint16_t *,
                          int64_t, float, float *, int64_t);

void *const dnnl_lib = dlopen(YOLO_DNNL, RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
const SgemmFn sgemm_fn = dnnl_lib ? reinterpret_cast<SgemmFn>(dlsym(dnnl_lib, "dnnl_sgemm")) : nullptr;
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
}  // namespace

void *dnnl_library() { return dnnl_lib; }
bool bf16_products() { return use_bf16 != 0; }

void gemm(char transa, char transb, int64_t m, int64_t n, int64_t k, float alpha, const float *a, int64_t lda,
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

// 1 when the private libdnnl loaded and has its sgemm (checked by src/cpu/cpu_kernels.py before any op is made).
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

}  // namespace yolo
