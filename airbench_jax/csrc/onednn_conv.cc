// oneDNN convolutions as XLA:CPU custom calls (the XLA FFI), built and loaded by airbench_jax/onednn.py.
//
// Three handlers, one per pass of a stride-1 2-D convolution, float32, activations NHWC and kernels
// HWIO (the layouts of airbench_jax's arrays, so no activation is ever reordered):
//   AirbenchConvFwd(x, w) -> y            AirbenchConvBwdData(g, w) -> dx
//   AirbenchConvBwdWeights(x, g) -> dw    attributes: pad_top, pad_bottom, pad_left, pad_right
// oneDNN picks the kernel weights' layout ('any'); the small kernels are reordered per call.
// Primitives are built once per shape and kept (building one JIT-compiles its kernel).
//
// Lifetime: every object shared between calls (the engine, the primitive cache, the mutexes) is
// created on the heap on first use and never destroyed. XLA runs these handlers on its own
// threads, which keep running after the Python interpreter has finished: JAX dispatches
// asynchronously, so a script that ends right after `infer(...)` still has custom calls in flight
// while exit() runs the static destructors. Function-local statics held by value were destroyed
// under them (the primitive cache's destructor unmapped the JIT-compiled kernels that an OpenMP
// thread was executing; the engine was freed under dnnl_stream_create): SIGSEGV at exit. Objects
// that live as long as the process need no destructor; the OS reclaims them. oneDNN's own globals
// (its primitive cache, whose lock is gone once destroyed) are destroyed by exit() all the same,
// so airbench_jax/onednn.py calls airbench_onednn_shutdown() from a Python atexit hook, which
// runs before any C++ static destructor: it waits for the call in progress to finish, and every
// later call returns an error at once without touching oneDNN (its result is never read: the
// process is ending; an error rather than blocking, so that a thread pool joined during the
// interpreter's teardown is never waited on forever).
#include <array>
#include <functional>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using tag = memory::format_tag;

namespace {

using Key = std::array<int64_t, 11>;  // n h w c kh kw oc pt pb pl pr

struct Conv {
  memory::desc x, w, y;  // user layouts: NHWC, HWIO, NHWC
  dnnl::convolution_forward::primitive_desc fwd_pd;
  dnnl::convolution_backward_data::primitive_desc bwd_data_pd;
  dnnl::convolution_backward_weights::primitive_desc bwd_weights_pd;
  dnnl::convolution_forward fwd;
  dnnl::convolution_backward_data bwd_data;
  dnnl::convolution_backward_weights bwd_weights;
};

dnnl::engine& engine() {
  static dnnl::engine* eng = new dnnl::engine(dnnl::engine::kind::cpu, 0);  // never destroyed
  return *eng;
}

std::shared_ptr<Conv> get_conv(const Key& k) {
  static std::mutex* mu = new std::mutex;  // never destroyed (see Lifetime above)
  static auto* cache = new std::map<Key, std::shared_ptr<Conv>>;
  std::lock_guard<std::mutex> lock(*mu);
  auto it = cache->find(k);
  if (it != cache->end()) return it->second;
  const int64_t n = k[0], h = k[1], w = k[2], c = k[3], kh = k[4], kw = k[5], oc = k[6];
  const int64_t pt = k[7], pb = k[8], pl = k[9], pr = k[10];
  const int64_t oh = h + pt + pb - kh + 1, ow = w + pl + pr - kw + 1;
  auto f32 = memory::data_type::f32;
  auto conv = std::make_shared<Conv>();
  conv->x = memory::desc({n, c, h, w}, f32, tag::nhwc);
  conv->w = memory::desc({oc, c, kh, kw}, f32, tag::hwio);
  conv->y = memory::desc({n, oc, oh, ow}, f32, tag::nhwc);
  memory::desc w_any({oc, c, kh, kw}, f32, tag::any);
  memory::dims strides{1, 1}, pad_l{pt, pl}, pad_r{pb, pr};
  // a scratchpad per execution (see run()), so that one primitive may run on two threads
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  auto& eng = engine();
  conv->fwd_pd = dnnl::convolution_forward::primitive_desc(
      eng, dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, conv->x,
      w_any, conv->y, strides, pad_l, pad_r, attr);
  conv->bwd_data_pd = dnnl::convolution_backward_data::primitive_desc(
      eng, dnnl::algorithm::convolution_direct, conv->x, w_any, conv->y, strides, pad_l, pad_r,
      conv->fwd_pd, attr);
  conv->bwd_weights_pd = dnnl::convolution_backward_weights::primitive_desc(
      eng, dnnl::algorithm::convolution_direct, conv->x, w_any, conv->y, strides, pad_l, pad_r,
      conv->fwd_pd, attr);
  conv->fwd = dnnl::convolution_forward(conv->fwd_pd);
  conv->bwd_data = dnnl::convolution_backward_data(conv->bwd_data_pd);
  conv->bwd_weights = dnnl::convolution_backward_weights(conv->bwd_weights_pd);
  cache->emplace(k, conv);
  return conv;
}

// the user's memory if the primitive takes its layout as it is, else a reordered copy
memory as_layout(memory user, const memory::desc& want, dnnl::stream& s) {
  if (user.get_desc() == want) return user;
  memory m(want, engine());
  dnnl::reorder(user, m).execute(s, user, m);
  return m;
}

// Runs one primitive with a scratchpad of its own (oneDNN's library-managed one belongs to the
// primitive, which two threads may share).
void run(const dnnl::primitive& p, const memory::desc& scratch_desc,
         std::unordered_map<int, memory> args, dnnl::stream& s) {
  memory scratch(scratch_desc, engine());
  args.insert({DNNL_ARG_SCRATCHPAD, scratch});
  p.execute(s, args);
  s.wait();
}

template <typename B>
Key make_key(const B& x, const B& w, int64_t pt, int64_t pb, int64_t pl, int64_t pr) {
  auto xd = x.dimensions();
  auto wd = w.dimensions();
  return Key{xd[0], xd[1], xd[2], xd[3], wd[0], wd[1], wd[3], pt, pb, pl, pr};
}

// Every handler's body: one at a time, oneDNN errors as XLA errors. XLA may start independent
// custom calls on two threads at once (TTA's plain and mirrored passes, two layers of one shape):
// running them side by side let two executions of one primitive (and of the weight reorders,
// which oneDNN caches and shares) race on shared state, which gave wrong TTA logits; and each
// call already uses every core through oneDNN's OpenMP threads, so it would gain nothing.
std::mutex& call_mutex() {
  static std::mutex* mu = new std::mutex;  // never destroyed (see Lifetime above)
  return *mu;
}

bool closed = false;  // set by airbench_onednn_shutdown(), under call_mutex()

ffi::Error wrap(const std::function<void()>& body) {
  std::lock_guard<std::mutex> lock(call_mutex());
  if (closed)
    return ffi::Error(ffi::ErrorCode::kUnavailable,
                      "airbench_jax oneDNN convolutions: the process is exiting");
  try {
    body();
  } catch (const dnnl::error& e) {
    return ffi::Error(ffi::ErrorCode::kInternal, std::string("oneDNN: ") + e.what());
  }
  return ffi::Error::Success();
}

using F32 = ffi::Buffer<ffi::F32>;

ffi::Error fwd_impl(F32 x, F32 w, ffi::ResultBuffer<ffi::F32> y, int64_t pt, int64_t pb,
                    int64_t pl, int64_t pr) {
  return wrap([&] {
    auto conv = get_conv(make_key(x, w, pt, pb, pl, pr));
    auto& eng = engine();
    dnnl::stream s(eng);
    memory xm(conv->x, eng, x.typed_data()), wm(conv->w, eng, w.typed_data());
    memory ym(conv->y, eng, y->typed_data());
    memory wk = as_layout(wm, conv->fwd_pd.weights_desc(), s);
    run(conv->fwd, conv->fwd_pd.scratchpad_desc(),
        {{DNNL_ARG_SRC, xm}, {DNNL_ARG_WEIGHTS, wk}, {DNNL_ARG_DST, ym}}, s);
  });
}

ffi::Error bwd_data_impl(F32 g, F32 w, ffi::ResultBuffer<ffi::F32> dx, int64_t pt, int64_t pb,
                         int64_t pl, int64_t pr) {
  return wrap([&] {
    auto conv = get_conv(make_key(*dx, w, pt, pb, pl, pr));
    auto& eng = engine();
    dnnl::stream s(eng);
    memory gm(conv->y, eng, g.typed_data()), wm(conv->w, eng, w.typed_data());
    memory dxm(conv->x, eng, dx->typed_data());
    memory wk = as_layout(wm, conv->bwd_data_pd.weights_desc(), s);
    run(conv->bwd_data, conv->bwd_data_pd.scratchpad_desc(),
        {{DNNL_ARG_DIFF_DST, gm}, {DNNL_ARG_WEIGHTS, wk}, {DNNL_ARG_DIFF_SRC, dxm}}, s);
  });
}

ffi::Error bwd_weights_impl(F32 x, F32 g, ffi::ResultBuffer<ffi::F32> dw, int64_t pt,
                            int64_t pb, int64_t pl, int64_t pr) {
  return wrap([&] {
    auto conv = get_conv(make_key(x, *dw, pt, pb, pl, pr));
    auto& eng = engine();
    dnnl::stream s(eng);
    memory xm(conv->x, eng, x.typed_data()), gm(conv->y, eng, g.typed_data());
    memory dwm(conv->w, eng, dw->typed_data());
    auto want = conv->bwd_weights_pd.diff_weights_desc();
    memory dwk = want == conv->w ? dwm : memory(want, eng);
    run(conv->bwd_weights, conv->bwd_weights_pd.scratchpad_desc(),
        {{DNNL_ARG_SRC, xm}, {DNNL_ARG_DIFF_DST, gm}, {DNNL_ARG_DIFF_WEIGHTS, dwk}}, s);
    if (want != conv->w) dnnl::reorder(dwk, dwm).execute(s, dwk, dwm);
    s.wait();
  });
}

}  // namespace

#define PADS .Attr<int64_t>("pad_top").Attr<int64_t>("pad_bottom") \
             .Attr<int64_t>("pad_left").Attr<int64_t>("pad_right")

XLA_FFI_DEFINE_HANDLER_SYMBOL(AirbenchConvFwd, fwd_impl,
                              ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Ret<F32>() PADS);
XLA_FFI_DEFINE_HANDLER_SYMBOL(AirbenchConvBwdData, bwd_data_impl,
                              ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Ret<F32>() PADS);
XLA_FFI_DEFINE_HANDLER_SYMBOL(AirbenchConvBwdWeights, bwd_weights_impl,
                              ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Ret<F32>() PADS);

// the kernels oneDNN chose for one shape (fwd | bwd data | bwd weights), e.g. "brgconv:avx512_core"
extern "C" const char* airbench_onednn_impls(int64_t n, int64_t h, int64_t w, int64_t c,
                                             int64_t kh, int64_t kw, int64_t oc, int64_t pt,
                                             int64_t pb, int64_t pl, int64_t pr) {
  static thread_local std::string out;
  try {
    auto conv = get_conv(Key{n, h, w, c, kh, kw, oc, pt, pb, pl, pr});
    out = std::string(conv->fwd_pd.impl_info_str()) + " | " + conv->bwd_data_pd.impl_info_str() + " | " +
          conv->bwd_weights_pd.impl_info_str();
  } catch (const dnnl::error& e) {
    out = std::string("error: ") + e.what();
  }
  return out.c_str();
}

extern "C" const char* airbench_onednn_version() {
  static std::string* out = new std::string;  // never destroyed (see Lifetime above)
  const dnnl_version_t* v = dnnl_version();
  *out = std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch) +
        " (" + v->hash + ")";
  return out->c_str();
}

// Called once at interpreter exit (onednn.py's atexit hook), before the C++ static destructors:
// waits for the custom call in progress, then makes every later call fail fast (see Lifetime).
extern "C" void airbench_onednn_shutdown() {
  std::lock_guard<std::mutex> lock(call_mutex());
  closed = true;
}
