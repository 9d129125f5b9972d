// Convolutions through oneDNN's convolution primitives (forward with bias and leaky ReLU as a post-op, backward
// data, backward weights), fp32 or bf16 (the process-wide precision of gemm.cc), from the kernels' private libdnnl.
//
// The tensors MindSpore hands the kernels are fp32 NCHW; each primitive is created with `any` layouts, so oneDNN
// picks its own (blocked, bf16 where asked), and reorders into and out of it run around the primitive. In
// inference, the fused ops (a DarkNet-53 stage, a YOLO block: onednn_stage, onednn_yolo_block) keep bf16 NHWC, the
// layout oneDNN's AMX convolutions pick, between their convolutions, and reorder only at their edges. Primitives
// and reorders are created once per shape and kept (a map under a mutex), and run one at a time.
// Every primitive has oneDNN's deterministic attribute (fixed-order reductions: the weight gradient) and a user
// scratchpad. The threads are the kernels' OpenMP threads, lent to oneDNN through its threadpool interface.
#include <dlfcn.h>

#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <type_traits>

#include "dnnl_api.h"
#include "kernels.h"

namespace dnnl {

const Api &api() {
  static const Api loaded = [] {
    Api a;
    void *lib = yolo::dnnl_library();
    if (lib == nullptr) return a;
    bool all = true;
    auto get = [&](auto *fn, const char *name) {
      void *sym = dlsym(lib, name);
      all = all && sym != nullptr;
      *fn = reinterpret_cast<std::remove_pointer_t<decltype(fn)>>(sym);
    };
    get(&a.engine_create, "dnnl_engine_create");
    get(&a.threadpool_interop_stream_create, "dnnl_threadpool_interop_stream_create");
    get(&a.threadpool_interop_set_max_concurrency, "dnnl_threadpool_interop_set_max_concurrency");
    get(&a.memory_desc_create_with_strides, "dnnl_memory_desc_create_with_strides");
    get(&a.memory_desc_create_with_tag, "dnnl_memory_desc_create_with_tag");
    get(&a.memory_desc_destroy, "dnnl_memory_desc_destroy");
    get(&a.memory_desc_equal, "dnnl_memory_desc_equal");
    get(&a.memory_desc_get_size, "dnnl_memory_desc_get_size");
    get(&a.memory_create, "dnnl_memory_create");
    get(&a.memory_destroy, "dnnl_memory_destroy");
    get(&a.primitive_attr_create, "dnnl_primitive_attr_create");
    get(&a.primitive_attr_destroy, "dnnl_primitive_attr_destroy");
    get(&a.primitive_attr_set_scratchpad_mode, "dnnl_primitive_attr_set_scratchpad_mode");
    get(&a.primitive_attr_set_deterministic, "dnnl_primitive_attr_set_deterministic");
    get(&a.primitive_attr_set_post_ops, "dnnl_primitive_attr_set_post_ops");
    get(&a.post_ops_create, "dnnl_post_ops_create");
    get(&a.post_ops_destroy, "dnnl_post_ops_destroy");
    get(&a.post_ops_append_eltwise, "dnnl_post_ops_append_eltwise");
    get(&a.post_ops_append_sum, "dnnl_post_ops_append_sum");
    get(&a.convolution_forward_primitive_desc_create, "dnnl_convolution_forward_primitive_desc_create");
    get(&a.convolution_backward_data_primitive_desc_create, "dnnl_convolution_backward_data_primitive_desc_create");
    get(&a.convolution_backward_weights_primitive_desc_create,
        "dnnl_convolution_backward_weights_primitive_desc_create");
    get(&a.reorder_primitive_desc_create, "dnnl_reorder_primitive_desc_create");
    get(&a.primitive_desc_query_md, "dnnl_primitive_desc_query_md");
    get(&a.primitive_desc_query, "dnnl_primitive_desc_query");
    get(&a.primitive_desc_destroy, "dnnl_primitive_desc_destroy");
    get(&a.primitive_create, "dnnl_primitive_create");
    get(&a.primitive_execute, "dnnl_primitive_execute");
    a.ready = all;
    return a;
  }();
  return loaded;
}

}  // namespace dnnl

namespace yolo {
namespace {
using dnnl::handle;

// The kernels' OpenMP threads as oneDNN's threadpool: parallel_for(n, fn) runs fn(i, n) for i < n, statically
// split (oneDNN partitions its work by i itself, so the split decides no bits).
struct OmpPool : dnnl::ThreadpoolIface {
  int get_num_threads() const override { return omp_get_max_threads(); }
  bool get_in_parallel() const override { return omp_in_parallel(); }
  void parallel_for(int n, const std::function<void(int, int)> &fn) override {
    if (n == 1) {
      fn(0, 1);
      return;
    }
#pragma omp parallel for schedule(static) num_threads(n)
    for (int i = 0; i < n; ++i) fn(i, n);
  }
  uint64_t get_flags() const override { return 0; }
};

void check(dnnl::status s, const char *what) {
  if (s != 0) {
    std::fprintf(stderr, "oneDNN: %s failed (status %d)\n", what, s);
    std::abort();
  }
}

handle engine() {
  static handle e = [] {
    handle made = nullptr;
    check(dnnl::api().threadpool_interop_set_max_concurrency(omp_get_max_threads()), "set_max_concurrency");
    check(dnnl::api().engine_create(&made, dnnl::kEngineCpu, 0), "engine_create");
    return made;
  }();
  return e;
}

handle stream() {
  static OmpPool pool;
  thread_local handle s = [] {
    handle made = nullptr;
    check(dnnl::api().threadpool_interop_stream_create(&made, engine(), &pool), "stream_create");
    return made;
  }();
  return s;
}

// Memory descriptors are owned by these handles.
struct Md {
  handle md = nullptr;
  Md() = default;
  explicit Md(handle h) : md(h) {}
  Md(const Md &) = delete;
  Md &operator=(const Md &) = delete;
  ~Md() {
    if (md) dnnl::api().memory_desc_destroy(md);
  }
};

// A plain (row-major) 4-d or 1-d fp32 tensor as the kernels get it.
handle plain(std::initializer_list<int64_t> shape, int data_type = dnnl::kF32) {
  dnnl::dims d = {}, strides = {};
  int nd = 0;
  for (int64_t v : shape) d[nd++] = v;
  int64_t step = 1;
  for (int i = nd - 1; i >= 0; --i) strides[i] = step, step *= d[i];
  handle md = nullptr;
  check(dnnl::api().memory_desc_create_with_strides(&md, nd, d, data_type, strides), "memory_desc (plain)");
  return md;
}

// An NHWC 4-d tensor (n, c, h, w) of a data type: the layout oneDNN's AMX convolutions pick for themselves.
handle nhwc(const int64_t (&shape)[4], int data_type) {
  dnnl::dims d = {shape[0], shape[1], shape[2], shape[3]};
  dnnl::dims strides = {shape[1] * shape[2] * shape[3], 1, shape[3] * shape[1], shape[1]};
  handle md = nullptr;
  check(dnnl::api().memory_desc_create_with_strides(&md, 4, d, data_type, strides), "memory_desc (nhwc)");
  return md;
}

handle any(std::initializer_list<int64_t> shape, int data_type) {
  dnnl::dims d = {};
  int nd = 0;
  for (int64_t v : shape) d[nd++] = v;
  handle md = nullptr;
  check(dnnl::api().memory_desc_create_with_tag(&md, nd, d, data_type, dnnl::kAnyTag), "memory_desc (any)");
  return md;
}

// One tensor argument of a primitive: where it is in the op's pointers, and the reorder between the op's plain
// fp32 tensor and the primitive's layout (none when they are the same).
struct Operand {
  int arg, index;
  bool output;
  handle inner = nullptr, user = nullptr, reorder = nullptr;  // inner is owned by the primitive descriptor
  size_t bytes = 0;
};

struct Primitive {
  handle pd = nullptr, primitive = nullptr;
  std::vector<Operand> operands;
  size_t scratch_bytes = 0;
  std::string impl;
};

// 64-byte aligned buffers, kept per operand slot.
struct Buffer {
  void *data = nullptr;
  size_t size = 0;
  void *reserve(size_t bytes) {
    if (bytes > size) {
      std::free(data);
      size = (bytes + 4095) / 4096 * 4096;
      data = std::aligned_alloc(64, size);
    }
    return data;
  }
  ~Buffer() { std::free(data); }
};

// sum: the result is added to what the output holds (after the activation), as a residual block's shortcut.
handle attributes(bool act, bool sum = false) {
  handle attr = nullptr;
  check(dnnl::api().primitive_attr_create(&attr), "attr_create");
  check(dnnl::api().primitive_attr_set_scratchpad_mode(attr, dnnl::kScratchpadUser), "scratchpad_mode");
  check(dnnl::api().primitive_attr_set_deterministic(attr, 1), "deterministic");
  if (act || sum) {
    handle ops = nullptr;
    check(dnnl::api().post_ops_create(&ops), "post_ops_create");
    if (act) check(dnnl::api().post_ops_append_eltwise(ops, dnnl::kEltwiseRelu, 0.1f, 0.f), "append_eltwise");
    if (sum) check(dnnl::api().post_ops_append_sum(ops, 1.f, 0, dnnl::kDataTypeUndef), "append_sum");
    check(dnnl::api().primitive_attr_set_post_ops(attr, ops), "set_post_ops");
    dnnl::api().post_ops_destroy(ops);
  }
  return attr;
}

// The primitive for pd: its operands (arg, index of the op's pointer, the op's plain md, output or not) get
// reorders where the primitive's layout differs.
void finish(Primitive *p, std::vector<std::tuple<int, int, handle, bool>> operands) {
  const dnnl::Api &a = dnnl::api();
  check(a.primitive_create(&p->primitive, p->pd), "primitive_create");
  const char *impl = nullptr;
  if (a.primitive_desc_query(p->pd, dnnl::kImplInfoStr, 0, &impl) == 0 && impl) p->impl = impl;
  handle scratch = a.primitive_desc_query_md(p->pd, dnnl::kScratchpadMd, 0);
  p->scratch_bytes = scratch ? a.memory_desc_get_size(scratch) : 0;
  for (auto &[arg, index, user, output] : operands) {
    Operand op{arg, index, output};
    op.user = user;
    op.inner = a.primitive_desc_query_md(p->pd, dnnl::kExecArgMd, arg);
    op.bytes = a.memory_desc_get_size(op.inner);
    if (!a.memory_desc_equal(op.inner, user)) {
      handle rpd = nullptr, attr = nullptr;
      check(a.primitive_attr_create(&attr), "attr_create");
      const handle from = output ? op.inner : user, to = output ? user : op.inner;
      check(a.reorder_primitive_desc_create(&rpd, from, engine(), to, engine(), attr), "reorder_pd");
      check(a.primitive_create(&op.reorder, rpd), "reorder_create");
      a.primitive_desc_destroy(rpd);
      a.primitive_attr_destroy(attr);
    }
    p->operands.push_back(op);
  }
}

handle memory(handle md, void *data) {
  handle m = nullptr;
  check(dnnl::api().memory_create(&m, md, engine(), data), "memory_create");
  return m;
}

void reorder(handle primitive, handle from, handle to) {
  const dnnl::ExecArg args[2] = {{dnnl::kArgFrom, from}, {dnnl::kArgTo, to}};
  check(dnnl::api().primitive_execute(primitive, stream(), 2, args), "reorder");
}

// Run p on the op's pointers: inputs reordered into buffers, the primitive, outputs reordered back. One primitive
// at a time: each already runs on every core, and MindSpore may call two kernels at once (a layer's two
// gradients), whose thread teams then took turns on the cores at every one of oneDNN's many parallel sections.
void run(const Primitive &p, void *const *pointers) {
  static std::mutex one_at_a_time;
  std::lock_guard<std::mutex> lock(one_at_a_time);
  static Buffer buffers[4], scratchpad;
  std::vector<dnnl::ExecArg> args;
  std::vector<handle> made;
  for (size_t i = 0; i < p.operands.size(); ++i) {
    const Operand &op = p.operands[i];
    void *data = pointers[op.index];
    if (op.reorder) {
      const handle user = memory(op.user, data);
      made.push_back(user);
      data = buffers[i].reserve(op.bytes);
      const handle inner = memory(op.inner, data);
      made.push_back(inner);
      if (!op.output) reorder(op.reorder, user, inner);
      args.push_back({op.arg, inner});
    } else {
      const handle m = memory(op.inner, data);
      made.push_back(m);
      args.push_back({op.arg, m});
    }
  }
  if (p.scratch_bytes) {
    handle scratch_md = dnnl::api().primitive_desc_query_md(p.pd, dnnl::kScratchpadMd, 0);
    const handle m = memory(scratch_md, scratchpad.reserve(p.scratch_bytes));
    made.push_back(m);
    args.push_back({dnnl::kArgScratchpad, m});
  }
  check(dnnl::api().primitive_execute(p.primitive, stream(), static_cast<int>(args.size()), args.data()),
        "convolution");
  for (size_t i = 0, k = 0; i < p.operands.size(); ++i) {
    const Operand &op = p.operands[i];
    if (op.reorder) {
      if (op.output) reorder(op.reorder, made[k + 1], made[k]);
      k += 2;
    } else {
      k += 1;
    }
  }
  for (handle m : made) dnnl::api().memory_destroy(m);
}

// Where a forward primitive's activations come from and go to. {kFromPlain, kToPlain}: the op's fp32 NCHW tensors,
// in oneDNN's own layouts inside (reordered around the primitive). The fused ops (a DarkNet-53 stage, a YOLO block)
// keep bf16 NHWC between their layers, every convolution reading bf16 NHWC: from fp32 NCHW or fp32 NHWC
// (reordered into it) or bf16 NHWC as it is; to bf16 NHWC, fp32 NHWC, or fp32 NHWC added to what it holds (a
// residual shortcut, as a sum post-op after the activation), or the plain fp32 NCHW.
enum Source { kFromPlain = 0, kFromNhwcF32 = 1, kFromNhwcBf16 = 2 };
enum Target { kToPlain = 0, kToNhwcBf16 = 1, kToNhwcF32 = 2, kAddToNhwcF32 = 3 };
struct Layout {
  Source in;
  Target out;
};
constexpr Layout kPlainLayout{kFromPlain, kToPlain};

// What a primitive is made for: kind (0 forward, 1 backward data, 2 backward weights), the shape, precision,
// activation, bias and layout.
typedef std::tuple<int, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int, int, int, int, int> Key;

struct Descs {
  Md src, weights, bias, dst, user_src, user_weights, user_bias, user_dst;
  dnnl::dims strides, dilates = {}, pad_l, pad_r;
  Descs(const Conv &s, bool bf16, bool bias_too) {
    const int low = bf16 ? dnnl::kBf16 : dnnl::kF32;
    src.md = any({s.n, s.c, s.h, s.w}, low);
    weights.md = any({s.o, s.c, s.k, s.k}, low);
    dst.md = any({s.n, s.o, s.oh, s.ow}, dnnl::kF32);
    if (bias_too) bias.md = plain({s.o}), user_bias.md = plain({s.o});
    user_src.md = plain({s.n, s.c, s.h, s.w});
    user_weights.md = plain({s.o, s.c, s.k, s.k});
    user_dst.md = plain({s.n, s.o, s.oh, s.ow});
    strides[0] = strides[1] = s.st;
    pad_l[0] = pad_l[1] = s.pad;
    // bottom/right padding so that the output has oh x ow (darknet's k / 2 on the top/left)
    pad_r[0] = (s.oh - 1) * s.st + s.k - s.h - s.pad;
    pad_r[1] = (s.ow - 1) * s.st + s.k - s.w - s.pad;
  }
  // null where oneDNN has no implementation (e.g. bf16 on a CPU without it)
  handle forward_pd(handle attr, int prop, handle dst_md) const {
    handle pd = nullptr;
    const dnnl::status made = dnnl::api().convolution_forward_primitive_desc_create(
        &pd, engine(), prop, dnnl::kConvolutionDirect, src.md, weights.md, bias.md, dst_md, strides, dilates, pad_l,
        pad_r, attr);
    return made == 0 ? pd : nullptr;
  }
};

std::mutex cache_mutex;
std::map<Key, std::unique_ptr<Primitive>> cache;

// The primitive for a pass, made on first use; null where oneDNN has no implementation for it.
std::unique_ptr<Primitive> make_primitive(int kind, const Conv &s, bool bf16, bool bias_too, bool act,
                                          Layout layout) {
  auto p = std::make_unique<Primitive>();
  Descs d(s, bf16, bias_too);
  const dnnl::Api &a = dnnl::api();
  handle attr = attributes(act, layout.out == kAddToNhwcF32);
  if (layout.in != kFromPlain || layout.out != kToPlain) {  // a fused op's forms (its own buffers)
    const int64_t in[4] = {s.n, s.c, s.h, s.w}, out[4] = {s.n, s.o, s.oh, s.ow};
    Md src(nhwc(in, dnnl::kBf16));
    std::swap(d.src.md, src.md);
    if (layout.in != kFromPlain) {
      a.memory_desc_destroy(d.user_src.md);
      d.user_src.md = nhwc(in, layout.in == kFromNhwcF32 ? dnnl::kF32 : dnnl::kBf16);
    }
    if (layout.out != kToPlain) {
      const int out_type = layout.out == kToNhwcBf16 ? dnnl::kBf16 : dnnl::kF32;
      Md dst(nhwc(out, out_type));
      std::swap(d.dst.md, dst.md);
      a.memory_desc_destroy(d.user_dst.md);
      d.user_dst.md = nhwc(out, out_type);
    }
  }
  if (kind == 0) {
    p->pd = d.forward_pd(attr, dnnl::kForwardInference, d.dst.md);  // no workspace: training needs nothing more
    if (p->pd == nullptr) {
      a.primitive_attr_destroy(attr);
      return nullptr;
    }
    std::vector<std::tuple<int, int, handle, bool>> ops = {{dnnl::kArgSrc, 0, d.user_src.md, false},
                                                           {dnnl::kArgWeights, 1, d.user_weights.md, false}};
    if (bias_too) ops.push_back({dnnl::kArgBias, 2, d.user_bias.md, false});
    ops.push_back({dnnl::kArgDst, bias_too ? 3 : 2, d.user_dst.md, true});
    finish(p.get(), ops);
    d.user_src.md = d.user_weights.md = d.user_bias.md = d.user_dst.md = nullptr;  // now the operands'
  } else {
    handle hint_attr = attributes(false);
    Md diff_dst(any({s.n, s.o, s.oh, s.ow}, bf16 ? dnnl::kBf16 : dnnl::kF32));
    Md diff(any(kind == 1 ? std::initializer_list<int64_t>{s.n, s.c, s.h, s.w}
                          : std::initializer_list<int64_t>{s.o, s.c, s.k, s.k},
                dnnl::kF32));
    handle hint = d.forward_pd(hint_attr, dnnl::kForwardTraining, diff_dst.md);
    dnnl::status made = hint == nullptr ? 1 : 0;
    if (made == 0 && kind == 1) {
      made = a.convolution_backward_data_primitive_desc_create(&p->pd, engine(), dnnl::kConvolutionDirect, diff.md,
                                                               d.weights.md, diff_dst.md, d.strides, d.dilates,
                                                               d.pad_l, d.pad_r, hint, attr);
    } else if (made == 0) {
      made = a.convolution_backward_weights_primitive_desc_create(&p->pd, engine(), dnnl::kConvolutionDirect,
                                                                  d.src.md, diff.md, nullptr, diff_dst.md, d.strides,
                                                                  d.dilates, d.pad_l, d.pad_r, hint, attr);
    }
    if (hint) a.primitive_desc_destroy(hint);
    a.primitive_attr_destroy(hint_attr);
    if (made != 0) {
      a.primitive_attr_destroy(attr);
      return nullptr;
    }
    if (kind == 1) {  // op pointers: x (for its shape), dy, weight, dx
      finish(p.get(), {{dnnl::kArgDiffDst, 1, d.user_dst.md, false},
                       {dnnl::kArgWeights, 2, d.user_weights.md, false},
                       {dnnl::kArgDiffSrc, 3, d.user_src.md, true}});
    } else {  // op pointers: x, dy, weight (for its shape), dw
      finish(p.get(), {{dnnl::kArgSrc, 0, d.user_src.md, false},
                       {dnnl::kArgDiffDst, 1, d.user_dst.md, false},
                       {dnnl::kArgDiffWeights, 3, d.user_weights.md, true}});
    }
    d.user_src.md = d.user_weights.md = d.user_dst.md = nullptr;
  }
  a.primitive_attr_destroy(attr);
  return p;
}

const Primitive *primitive(int kind, const Conv &s, bool bias_too, bool act, Layout layout = kPlainLayout) {
  const bool bf16 = bf16_products();
  const Key key{kind, s.n, s.c, s.h, s.w, s.o, s.k, s.st, bf16, act, bias_too, layout.in, layout.out};
  std::lock_guard<std::mutex> lock(cache_mutex);
  auto found = cache.find(key);
  if (found == cache.end()) found = cache.emplace(key, make_primitive(kind, s, bf16, bias_too, act, layout)).first;
  return found->second.get();
}

const Primitive &made(const Primitive *p) {
  if (p == nullptr) {
    std::fprintf(stderr, "oneDNN: no convolution implementation for a pass that had one\n");
    std::abort();
  }
  return *p;
}
}  // namespace

bool onednn_ready() { return dnnl::api().ready; }

void onednn_conv(const float *x, const float *weight, const float *bias, bool act, const Conv &s, float *y) {
  void *pointers[4] = {const_cast<float *>(x), const_cast<float *>(weight), const_cast<float *>(bias), y};
  if (bias == nullptr) pointers[2] = y;
  run(made(primitive(0, s, bias != nullptr, act)), pointers);
}

void onednn_grad_input(const float *dy, const float *weight, const Conv &s, float *dx) {
  void *pointers[4] = {nullptr, const_cast<float *>(dy), const_cast<float *>(weight), dx};
  run(made(primitive(1, s, false, false)), pointers);
}

void onednn_grad_weight(const float *x, const float *dy, const Conv &s, float *dw) {
  void *pointers[4] = {const_cast<float *>(x), const_cast<float *>(dy), nullptr, dw};
  run(made(primitive(2, s, false, false)), pointers);
}

namespace {
// A fused op's forward: src in the layout's source form, dst in its target form.
void forward(const Conv &s, Layout layout, bool act, const void *src, const float *weight, const float *bias,
             void *dst) {
  void *pointers[4] = {const_cast<void *>(src), const_cast<float *>(weight), const_cast<float *>(bias), dst};
  run(made(primitive(0, s, true, act, layout)), pointers);
}

// y (n, c, hw) = v (n, hw, c): NHWC to NCHW, in blocks of 16 channels by 64 positions.
void nhwc_to_nchw(const float *v, int64_t n, int64_t c, int64_t hw, float *y) {
#pragma omp parallel for schedule(static) collapse(2)
  for (int64_t b = 0; b < n; ++b) {
    for (int64_t c0 = 0; c0 < c; c0 += 16) {
      for (int64_t p0 = 0; p0 < hw; p0 += 64) {
        const int64_t p_end = std::min(hw, p0 + 64);
        for (int64_t ch = c0; ch < std::min(c, c0 + 16); ++ch) {
          float *plane = y + (b * c + ch) * hw;
          for (int64_t p = p0; p < p_end; ++p) plane[p] = v[(b * hw + p) * c + ch];
        }
      }
    }
  }
}

std::mutex fused_mutex;  // the fused ops' buffers
Buffer running, ping, pong;
}  // namespace

// A DarkNet-53 stage in inference, in bf16: the stride-2 convolution, then residual blocks y = y + conv2(conv1(y)),
// each convolution with bias and leaky ReLU (convs: the stride-2 one, then each block's two; weights and biases in
// that order). x is reordered once into bf16 NHWC; the stage's running output y stays fp32 NHWC, each block's 1x1
// reads it reordered into bf16 and writes bf16 NHWC, its 3x3 adds its result into y (a sum post-op), and one
// transpose writes y's NCHW at the end. Layer by layer, each convolution's input was reordered from fp32 NCHW into
// bf16 NHWC and its output back, and each sum was a pass of its own: the same bits (the same rounding of the same
// fp32 values to bf16, to nearest even; the post-ops on fp32 before it; one fp32 addition per shortcut).
void onednn_stage(const float *x, const float *const *weights, const float *const *biases, const Conv *convs,
                  int count, float *y) {
  std::lock_guard<std::mutex> lock(fused_mutex);
  const Conv &down = convs[0];
  void *r = running.reserve(down.n * down.o * down.ohw * sizeof(float));
  forward(down, {kFromPlain, kToNhwcF32}, true, x, weights[0], biases[0], r);
  for (int i = 1; i + 1 < count; i += 2) {
    void *t = ping.reserve(convs[i].n * convs[i].o * convs[i].ohw * 2);
    forward(convs[i], {kFromNhwcF32, kToNhwcBf16}, true, r, weights[i], biases[i], t);
    forward(convs[i + 1], {kFromNhwcBf16, kAddToNhwcF32}, true, t, weights[i + 1], biases[i + 1], r);
  }
  nhwc_to_nchw(static_cast<const float *>(r), down.n, down.o, down.ohw, y);
}

// A YOLO block in inference, in bf16: five convolutions (1x1, 3x3, 1x1, 3x3, 1x1) to the route, then the 3x3 and
// the head's linear 1x1 (convs and their weights and biases in that order). bf16 NHWC between them; the route is
// written fp32 NCHW for the lateral convolution and read on as fp32 NHWC, the head's output fp32 NCHW. The same
// bits as layer by layer (as onednn_stage).
void onednn_yolo_block(const float *x, const float *const *weights, const float *const *biases, const Conv *convs,
                       float *route, float *out) {
  std::lock_guard<std::mutex> lock(fused_mutex);
  // bf16 NHWC outputs in turns in ping and pong (a buffer is reserved anew only once its content was read)
  void *bufs[2] = {ping.reserve(convs[0].n * convs[0].o * convs[0].ohw * 2), nullptr};
  forward(convs[0], {kFromPlain, kToNhwcBf16}, true, x, weights[0], biases[0], bufs[0]);
  for (int i = 1; i < 4; ++i) {
    bufs[i % 2] = (i % 2 ? pong : ping).reserve(convs[i].n * convs[i].o * convs[i].ohw * 2);
    forward(convs[i], {kFromNhwcBf16, kToNhwcBf16}, true, bufs[(i + 1) % 2], weights[i], biases[i], bufs[i % 2]);
  }
  const Conv &last = convs[4];
  void *r = running.reserve(last.n * last.o * last.ohw * sizeof(float));
  forward(last, {kFromNhwcBf16, kToNhwcF32}, true, bufs[1], weights[4], biases[4], r);
  nhwc_to_nchw(static_cast<const float *>(r), last.n, last.o, last.ohw, route);
  void *t = ping.reserve(convs[5].n * convs[5].o * convs[5].ohw * 2);
  forward(convs[5], {kFromNhwcF32, kToNhwcBf16}, true, r, weights[5], biases[5], t);
  forward(convs[6], {kFromNhwcBf16, kToPlain}, false, t, weights[6], biases[6], out);
}

bool onednn_has(ConvPass pass, const Conv &s) { return primitive(pass, s, false, false) != nullptr; }

// oneDNN names the instruction set in its implementations' names (e.g. "brg_conv_fwd:avx512_core_amx").
bool onednn_on_amx(ConvPass pass, const Conv &s) {
  const Primitive *p = primitive(pass, s, false, false);
  return p != nullptr && p->impl.find("amx") != std::string::npos;
}

const char *onednn_impl(ConvPass pass, const Conv &s, bool bias, bool act) {
  return made(primitive(pass, s, bias, act)).impl.c_str();
}

}  // namespace yolo
