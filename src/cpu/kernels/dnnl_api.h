// The part of oneDNN's C API (3.x) that the kernels use, declared here from its documentation (no oneDNN header is
// installed with MindSpore): types, the enumeration values the kernels pass, and the functions, which are looked up
// by name in the kernels' private libdnnl (dnnl_library() in gemm.cc). MindSpore's libdnnl is built with the
// threadpool runtime, so a primitive runs on several threads only through a stream made with a threadpool object
// (ThreadpoolIface: the documented dnnl::threadpool_interop::threadpool_iface, virtual functions in its order).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>

namespace dnnl {

typedef int64_t dim;
typedef dim dims[12];  // DNNL_MAX_NDIMS
typedef int status;    // dnnl_status_t: dnnl_success = 0
typedef struct opaque *handle;  // engine, stream, memory descriptor, primitive descriptor, primitive, attributes...

enum DataType { kDataTypeUndef = 0, kF32 = 3, kBf16 = 2 };  // dnnl_data_type_t
enum FormatTag { kAnyTag = 1 };                                      // dnnl_format_tag_any
enum PropKind { kForwardTraining = 64, kForwardInference = 96 };
enum AlgKind { kConvolutionDirect = 0x1, kEltwiseRelu = 0x20 };
enum Query { kImplInfoStr = 8, kScratchpadMd = 136, kExecArgMd = 255 };  // dnnl_query_t (impl_info_str, *_md)
enum Arg {                                                                  // DNNL_ARG_*
  kArgSrc = 1, kArgDst = 17, kArgWeights = 33, kArgBias = 41, kArgScratchpad = 80, kArgDiffSrc = 129,
  kArgDiffDst = 145, kArgDiffWeights = 161, kArgFrom = 1, kArgTo = 17
};
enum { kScratchpadUser = 1, kEngineCpu = 1 };  // dnnl_scratchpad_mode_user, dnnl_cpu

struct ExecArg {  // dnnl_exec_arg_t
  int arg;
  handle memory;
};

struct ThreadpoolIface {
  virtual int get_num_threads() const = 0;
  virtual bool get_in_parallel() const = 0;
  virtual void parallel_for(int n, const std::function<void(int, int)> &fn) = 0;
  virtual uint64_t get_flags() const = 0;
  virtual ~ThreadpoolIface() {}
};

// The functions, resolved once (all or none: ready() says which).
struct Api {
  status (*engine_create)(handle *, int kind, size_t index);
  status (*threadpool_interop_stream_create)(handle *, handle engine, void *threadpool);
  status (*threadpool_interop_set_max_concurrency)(int);
  status (*memory_desc_create_with_strides)(handle *, int ndims, const dims, int data_type, const dims strides);
  status (*memory_desc_create_with_tag)(handle *, int ndims, const dims, int data_type, int tag);
  status (*memory_desc_destroy)(handle);
  int (*memory_desc_equal)(handle, handle);
  size_t (*memory_desc_get_size)(handle);
  status (*memory_create)(handle *, handle md, handle engine, void *data);
  status (*memory_destroy)(handle);
  status (*primitive_attr_create)(handle *);
  status (*primitive_attr_destroy)(handle);
  status (*primitive_attr_set_scratchpad_mode)(handle, int);
  status (*primitive_attr_set_deterministic)(handle, int);
  status (*primitive_attr_set_post_ops)(handle, handle);
  status (*post_ops_create)(handle *);
  status (*post_ops_destroy)(handle);
  status (*post_ops_append_eltwise)(handle, int alg, float alpha, float beta);
  status (*post_ops_append_sum)(handle, float scale, int32_t zero_point, int data_type);
  status (*convolution_forward_primitive_desc_create)(handle *, handle engine, int prop, int alg, handle src,
                                                       handle weights, handle bias, handle dst, const dims strides,
                                                       const dims dilates, const dims pad_l, const dims pad_r,
                                                       handle attr);
  status (*convolution_backward_data_primitive_desc_create)(handle *, handle engine, int alg, handle diff_src,
                                                             handle weights, handle diff_dst, const dims strides,
                                                             const dims dilates, const dims pad_l,
                                                             const dims pad_r, handle hint, handle attr);
  status (*convolution_backward_weights_primitive_desc_create)(handle *, handle engine, int alg, handle src,
                                                                handle diff_weights, handle diff_bias,
                                                                handle diff_dst, const dims strides,
                                                                const dims dilates, const dims pad_l,
                                                                const dims pad_r, handle hint, handle attr);
  status (*reorder_primitive_desc_create)(handle *, handle src_md, handle src_engine, handle dst_md,
                                          handle dst_engine, handle attr);
  handle (*primitive_desc_query_md)(handle pd, int what, int index);
  status (*primitive_desc_query)(handle pd, int what, int index, void *result);
  status (*primitive_desc_destroy)(handle);
  status (*primitive_create)(handle *, handle pd);
  status (*primitive_execute)(handle primitive, handle stream, int nargs, const ExecArg *args);
  bool ready = false;
};

// The private libdnnl's functions (ready is false without them).
const Api &api();

}  // namespace dnnl
