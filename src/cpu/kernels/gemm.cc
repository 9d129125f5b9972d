// The kernels' matrix product: oneDNN's row-major sgemm (it runs on the calling thread only), from a private copy
// of the libdnnl that MindSpore ships (YOLO_DNNL, set by src/cpu/cpu_kernels.py): src/cpu/onednn.py caps MindSpore's
// own instance at AVX2, and this copy keeps every instruction set the CPU has.
#include <dlfcn.h>

#include "kernels.h"

namespace yolo {
namespace {
typedef int (*SgemmFn)(char, char, int64_t, int64_t, int64_t, float, const float *, int64_t, const float *, int64_t,
                       float, float *, int64_t);

void *const dnnl_lib = dlopen(YOLO_DNNL, RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
const SgemmFn sgemm_fn = dnnl_lib ? reinterpret_cast<SgemmFn>(dlsym(dnnl_lib, "dnnl_sgemm")) : nullptr;
}  // namespace

void gemm(char transa, char transb, int64_t m, int64_t n, int64_t k, float alpha, const float *a, int64_t lda,
          const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
  sgemm_fn(transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

// 1 when the private libdnnl loaded and has its sgemm (checked by src/cpu/cpu_kernels.py before any op is made).
extern "C" int KernelsReady() { return sgemm_fn != nullptr; }

// The instruction set that the private libdnnl dispatches to (a dnnl_cpu_isa_t), 0 if it did not load.
extern "C" int KernelsIsa() {
  typedef int (*IsaFn)();
  const IsaFn isa = dnnl_lib ? reinterpret_cast<IsaFn>(dlsym(dnnl_lib, "dnnl_get_effective_cpu_isa")) : nullptr;
  return isa ? isa() : 0;
}

}  // namespace yolo
