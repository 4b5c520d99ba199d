// spark_torch: a small N-API addon that lets TensorFlow.js's `torch` backend (src/backend/torch/) run ATen
// operators. Tensors live as at::Tensor in a handle table (an int32 handle per tensor); operators are resolved once by
// schema name (`aten::conv2d` + overload) and called through PyTorch's boxed dispatcher, so the addon needs no
// per-operator C++ code and runs exactly the kernels PyTorch runs (oneDNN/MKL on the CPU, cuDNN/cuBLAS on CUDA).
//
// JavaScript interface (see src/backend/torch/addon.ts for the typed view):
//   init(meta: Int32Array)             shared buffer where calls describe their outputs (count, dtype, rank, dims)
//   resolve(name, overload) -> id      a missing schema throws "ATen operator aten::x.y not found (PyTorch V)"
//   call(id, sig, ...args) -> h | h[]  boxed call; `sig` has one letter per schema argument (below)
//   fromData(typedArray, shape, dtype) -> h      copy host data into a new tensor on the current device
//   toData(h) -> TypedArray            copy a tensor to the host (Float32Array, Int32Array or Uint8Array for bool)
//   free(h | h[]), describe(h) (writes meta), handles(), memory() -> bytes of live storages
//   setDevice('cpu'|'cuda'|'cuda:N'), device(), cudaDeviceCount(), synchronize()
//   setNumThreads(n), numThreads(), setTf32(conv, matmul), version()
//   cpuCache(limitBytes)               install the caching CPU allocator (spark_cpu_cache.h) with this cap; 0 empties
//   geluGradCpu(dy, x) -> h            the exact GELU's gradient on float32 CPU tensors (spark_gelu.h)
//   cpuCacheStats() -> [cached, peakCached, hits, misses, released], emptyCpuCache()
//
// Outputs: one handle per tensor output (tensor lists flattened); an undefined output is -1.
// A signature starting with '!' returns outputs unnormalised (kernel-internal handles only).
// Argument letters of `sig`: T tensor handle; t optional tensor (handle or -1 → None); L tensor list (array of
// handles); i int; I int list; d float; s scalar (number → Scalar double); z scalar int; b bool; B bool list;
// S string; n None (consumes no JS argument); D dtype code; V the current device (no JS argument).
// dtype codes: 0 float32, 1 int32, 2 bool. Outputs are normalised to those: int64 → int32, float64 → float32.
#include <node_api.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
// torch/version.h (on the API include path) has the version macros in every 2.x; newer ones forward to headeronly/
#include <torch/version.h>

#include "spark_cpu_cache.h"
#include "spark_fused_optim.h"
#include "spark_gelu.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

namespace {

std::vector<at::Tensor> g_table;
std::vector<int32_t> g_free;
std::vector<c10::OperatorHandle> g_ops;
c10::Device g_device(c10::kCPU);
int32_t* g_meta = nullptr;
size_t g_meta_len = 0;
napi_ref g_meta_ref = nullptr;

struct JsError {
  std::string msg;
};

#define NAPI_OK(call)                                               \
  do {                                                              \
    if ((call) != napi_ok) throw JsError{"N-API call failed: " #call}; \
  } while (0)

int32_t put(at::Tensor t) {
  if (!g_free.empty()) {
    int32_t h = g_free.back();
    g_free.pop_back();
    g_table[h] = std::move(t);
    return h;
  }
  g_table.push_back(std::move(t));
  return static_cast<int32_t>(g_table.size() - 1);
}

const at::Tensor& get(int32_t h) {
  if (h < 0 || static_cast<size_t>(h) >= g_table.size() || !g_table[h].defined())
    throw JsError{"spark_torch: invalid tensor handle " + std::to_string(h)};
  return g_table[h];
}

at::ScalarType dtypeOf(int code) {
  switch (code) {
    case 0: return at::kFloat;
    case 1: return at::kInt;
    case 2: return at::kBool;
    case 3: return at::kLong;
    case 4: return at::kByte;
    default: throw JsError{"spark_torch: unknown dtype code " + std::to_string(code)};
  }
}

int codeOf(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return 0;
    case at::kInt: return 1;
    case at::kBool: return 2;
    case at::kLong: return 3;
    default: return -1;
  }
}

// Bring an operator's output to a tfjs dtype (int64 → int32, float64/half → float32, uint8 → bool is NOT done:
// an uint8 result means a caller bug and is reported).
at::Tensor normalise(at::Tensor t) {
  switch (t.scalar_type()) {
    case at::kFloat:
    case at::kInt:
    case at::kBool: return t;
    case at::kLong:
    case at::kShort:
    case at::kChar: return t.to(at::kInt);
    case at::kDouble:
    case at::kHalf:
    case at::kBFloat16: return t.to(at::kFloat);
    default: throw JsError{std::string("spark_torch: an operator returned dtype ") + c10::toString(t.scalar_type())};
  }
}

size_t g_meta_pos = 0;
void metaReset() { g_meta_pos = 1; if (g_meta) g_meta[0] = 0; }
void metaPush(const at::Tensor& t) {
  if (!g_meta) return;
  size_t need = 2 + t.dim();
  if (g_meta_pos + need > g_meta_len) throw JsError{"spark_torch: meta buffer too small"};
  g_meta[0] += 1;
  g_meta[g_meta_pos++] = codeOf(t.scalar_type());
  g_meta[g_meta_pos++] = static_cast<int32_t>(t.dim());
  for (int64_t d : t.sizes()) g_meta[g_meta_pos++] = static_cast<int32_t>(d);
}

// ------------------------------------------------------------------------------------------------ N-API helpers

int64_t toInt(napi_env env, napi_value v) {
  int64_t x;
  if (napi_get_value_int64(env, v, &x) != napi_ok) throw JsError{"expected an integer"};
  return x;
}
double toDouble(napi_env env, napi_value v) {
  double x;
  if (napi_get_value_double(env, v, &x) != napi_ok) throw JsError{"expected a number"};
  return x;
}
bool toBool(napi_env env, napi_value v) {
  bool x;
  if (napi_get_value_bool(env, v, &x) != napi_ok) throw JsError{"expected a boolean"};
  return x;
}
std::string toString(napi_env env, napi_value v) {
  size_t n;
  if (napi_get_value_string_utf8(env, v, nullptr, 0, &n) != napi_ok) throw JsError{"expected a string"};
  std::string s(n, '\0');
  NAPI_OK(napi_get_value_string_utf8(env, v, s.data(), n + 1, &n));
  return s;
}
uint32_t arrayLen(napi_env env, napi_value v) {
  uint32_t n;
  if (napi_get_array_length(env, v, &n) != napi_ok) throw JsError{"expected an array"};
  return n;
}
napi_value element(napi_env env, napi_value arr, uint32_t i) {
  napi_value e;
  NAPI_OK(napi_get_element(env, arr, i, &e));
  return e;
}
std::vector<int64_t> toIntList(napi_env env, napi_value v) {
  uint32_t n = arrayLen(env, v);
  std::vector<int64_t> out(n);
  for (uint32_t i = 0; i < n; i++) out[i] = toInt(env, element(env, v, i));
  return out;
}
napi_value num(napi_env env, double x) {
  napi_value v;
  NAPI_OK(napi_create_double(env, x, &v));
  return v;
}
napi_value int32(napi_env env, int32_t x) {
  napi_value v;
  NAPI_OK(napi_create_int32(env, x, &v));
  return v;
}

// A JS array of tensor handles.
napi_value handleArray(napi_env env, const std::vector<int32_t>& hs) {
  napi_value arr;
  NAPI_OK(napi_create_array_with_length(env, hs.size(), &arr));
  for (size_t j = 0; j < hs.size(); j++) NAPI_OK(napi_set_element(env, arr, static_cast<uint32_t>(j), int32(env, hs[j])));
  return arr;
}
napi_value str(napi_env env, const std::string& s) {
  napi_value v;
  NAPI_OK(napi_create_string_utf8(env, s.data(), s.size(), &v));
  return v;
}
napi_value undef(napi_env env) {
  napi_value v;
  napi_get_undefined(env, &v);
  return v;
}

template <size_t N>
std::vector<napi_value> args(napi_env env, napi_callback_info info, size_t* argc) {
  std::vector<napi_value> a(N);
  *argc = N;
  NAPI_OK(napi_get_cb_info(env, info, argc, a.data(), nullptr, nullptr));
  return a;
}

// Every exported function runs inside this wrapper: C++ and c10 exceptions become JS errors.
// InferenceMode: no autograd bookkeeping (tfjs's tape does autodiff), the cheapest dispatch path.
template <typename F>
napi_value guard(napi_env env, F&& f) {
  try {
    c10::InferenceMode inference;
    return f();
  } catch (const JsError& e) {
    napi_throw_error(env, nullptr, e.msg.c_str());
  } catch (const c10::Error& e) {
    napi_throw_error(env, nullptr, e.what_without_backtrace());
  } catch (const std::exception& e) {
    napi_throw_error(env, nullptr, e.what());
  }
  return nullptr;
}

// ------------------------------------------------------------------------------------------------ exports

napi_value Init(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    size_t argc;
    auto a = args<1>(env, info, &argc);
    napi_typedarray_type type;
    size_t len;
    void* data;
    napi_value ab;
    size_t off;
    NAPI_OK(napi_get_typedarray_info(env, a[0], &type, &len, &data, &ab, &off));
    if (type != napi_int32_array) throw JsError{"init: expected an Int32Array"};
    if (g_meta_ref) napi_delete_reference(env, g_meta_ref);
    NAPI_OK(napi_create_reference(env, a[0], 1, &g_meta_ref));
    g_meta = static_cast<int32_t*>(data);
    g_meta_len = len;
    return undef(env);
  });
}

napi_value Resolve(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    size_t argc;
    auto a = args<2>(env, info, &argc);
    std::string name = toString(env, a[0]);
    std::string overload = argc > 1 ? toString(env, a[1]) : "";
    auto op = c10::Dispatcher::singleton().findSchema({name, overload});
    if (!op.has_value()) {
      throw JsError{"ATen operator " + name + (overload.empty() ? "" : "." + overload) + " not found in PyTorch " +
                    std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + "." +
                    std::to_string(TORCH_VERSION_PATCH)};
    }
    g_ops.push_back(*op);
    return int32(env, static_cast<int32_t>(g_ops.size() - 1));
  });
}

napi_value Schema(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    size_t argc;
    auto a = args<1>(env, info, &argc);
    int64_t id = toInt(env, a[0]);
    if (id < 0 || static_cast<size_t>(id) >= g_ops.size()) throw JsError{"schema: bad operator id"};
    std::ostringstream os;
    os << g_ops[id].schema();
    return str(env, os.str());
  });
}

napi_value Call(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    napi_value a[24];
    size_t argc = 24;
    NAPI_OK(napi_get_cb_info(env, info, &argc, a, nullptr, nullptr));
    if (argc < 2) throw JsError{"call(id, sig, ...args)"};
    int64_t id = toInt(env, a[0]);
    if (id < 0 || static_cast<size_t>(id) >= g_ops.size()) throw JsError{"call: bad operator id"};
    char sig[32];
    size_t siglen;
    NAPI_OK(napi_get_value_string_latin1(env, a[1], sig, sizeof(sig), &siglen));
    // A leading '!' keeps the outputs as ATen made them (e.g. int64 pooling indices fed back to a backward op).
    bool raw = siglen > 0 && sig[0] == '!';
    const c10::OperatorHandle& op = g_ops[id];
    torch::jit::Stack stack;
    stack.reserve(siglen);
    size_t k = 2;
    auto next = [&]() -> napi_value {
      if (k >= argc) throw JsError{"call " + op.schema().name() + ": too few arguments for signature " + std::string(sig, siglen)};
      return a[k++];
    };
    for (size_t i = raw ? 1 : 0; i < siglen; i++) {
      switch (sig[i]) {
        case 'T': stack.emplace_back(get(static_cast<int32_t>(toInt(env, next())))); break;
        case 't': {
          int64_t h = toInt(env, next());
          if (h < 0) stack.emplace_back(); else stack.emplace_back(get(static_cast<int32_t>(h)));
          break;
        }
        case 'L': {
          napi_value arr = next();
          uint32_t n = arrayLen(env, arr);
          c10::List<at::Tensor> l;
          l.reserve(n);
          for (uint32_t j = 0; j < n; j++) l.push_back(get(static_cast<int32_t>(toInt(env, element(env, arr, j)))));
          stack.emplace_back(std::move(l));
          break;
        }
        case 'i': stack.emplace_back(toInt(env, next())); break;
        case 'I': stack.emplace_back(toIntList(env, next())); break;
        case 'd': stack.emplace_back(toDouble(env, next())); break;
        case 's': stack.emplace_back(at::Scalar(toDouble(env, next()))); break;
        case 'z': stack.emplace_back(at::Scalar(toInt(env, next()))); break;
        case 'b': stack.emplace_back(toBool(env, next())); break;
        case 'B': {
          napi_value arr = next();
          uint32_t n = arrayLen(env, arr);
          c10::List<bool> l;
          for (uint32_t j = 0; j < n; j++) l.push_back(toBool(env, element(env, arr, j)));
          stack.emplace_back(std::move(l));
          break;
        }
        case 'S': stack.emplace_back(toString(env, next())); break;
        case 'n': stack.emplace_back(); break;
        case 'D': stack.emplace_back(static_cast<int64_t>(dtypeOf(static_cast<int>(toInt(env, next()))))); break;
        case 'V': stack.emplace_back(g_device); break;
        default: throw JsError{std::string("call: bad signature letter '") + sig[i] + "'"};
      }
    }
    op.callBoxed(&stack);
    metaReset();
    std::vector<int32_t> out;
    for (auto& v : stack) {
      if (v.isTensor() && !v.toTensor().defined()) {
        // an output not asked for (e.g. convolution_backward's output_mask): handle -1
        if (g_meta) { g_meta[0] += 1; g_meta[g_meta_pos++] = -1; g_meta[g_meta_pos++] = 0; }
        out.push_back(-1);
      } else if (v.isTensor()) {
        at::Tensor t = raw ? std::move(v).toTensor() : normalise(std::move(v).toTensor());
        metaPush(t);
        out.push_back(put(std::move(t)));
      } else if (v.isTensorList()) {
        for (const at::Tensor& t0 : v.toTensorVector()) {
          at::Tensor t = raw ? t0 : normalise(t0);
          metaPush(t);
          out.push_back(put(std::move(t)));
        }
      }
    }
    if (out.size() == 1) return int32(env, out[0]);
    return handleArray(env, out);
  });
}

napi_value FromData(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    size_t argc;
    auto a = args<3>(env, info, &argc);
    napi_typedarray_type type;
    size_t len;
    void* data;
    napi_value ab;
    size_t off;
    NAPI_OK(napi_get_typedarray_info(env, a[0], &type, &len, &data, &ab, &off));
    std::vector<int64_t> shape = toIntList(env, a[1]);
    at::ScalarType dt = dtypeOf(static_cast<int>(toInt(env, a[2])));
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    size_t elt = at::elementSize(dt);
    size_t bytes = 0;
    switch (type) {
      case napi_float32_array: bytes = len * 4; if (dt != at::kFloat) throw JsError{"fromData: Float32Array for a non-float32 tensor"}; break;
      case napi_int32_array: bytes = len * 4; if (dt != at::kInt) throw JsError{"fromData: Int32Array for a non-int32 tensor"}; break;
      case napi_uint8_array: bytes = len; if (dt != at::kBool && dt != at::kByte) throw JsError{"fromData: Uint8Array for a non-bool tensor"}; break;
      default: throw JsError{"fromData: unsupported typed array"};
    }
    if (bytes != static_cast<size_t>(n) * elt)
      throw JsError{"fromData: " + std::to_string(len) + " values for shape of " + std::to_string(n) + " elements"};
    if (!g_device.is_cpu() && n == 1) {
      // One value (scalars tfjs makes for JS numbers): a fill on the device, no host-to-device copy, no sync.
      at::Scalar v = dt == at::kFloat ? at::Scalar(static_cast<double>(*static_cast<float*>(data)))
                     : dt == at::kInt ? at::Scalar(static_cast<int64_t>(*static_cast<int32_t*>(data)))
                                      : at::Scalar(*static_cast<uint8_t*>(data) != 0);
      return int32(env, put(at::full(shape, v, at::TensorOptions().dtype(dt).device(g_device))));
    }
    auto hostOptions = at::TensorOptions().dtype(dt);
    bool pinned = false;
    at::Tensor t;
    if (!g_device.is_cpu()) {
      // Pinned staging memory lets the copy run asynchronously (a copy from pageable memory synchronises the
      // stream); the caching host allocator keeps the buffer until the copy is done.
      try {
        t = at::empty(shape, hostOptions.pinned_memory(true));
        pinned = true;
      } catch (const c10::Error&) {
        pinned = false;
      }
    }
    if (!pinned) t = at::empty(shape, hostOptions);
    if (bytes) std::memcpy(t.data_ptr(), data, bytes);
    if (dt == at::kBool) {
      // tfjs bool data may hold any non-zero byte for true; torch requires 0/1.
      auto* p = static_cast<uint8_t*>(t.data_ptr());
      for (int64_t i = 0; i < n; i++) p[i] = p[i] ? 1 : 0;
    }
    if (!g_device.is_cpu()) t = t.to(g_device, /*non_blocking=*/pinned);
    return int32(env, put(std::move(t)));
  });
}

napi_value ToData(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    size_t argc;
    auto a = args<1>(env, info, &argc);
    at::Tensor t = get(static_cast<int32_t>(toInt(env, a[0])));
    if (!t.device().is_cpu()) t = t.to(at::kCPU);
    t = t.contiguous();
    size_t n = static_cast<size_t>(t.numel());
    napi_typedarray_type type;
    size_t elt;
    switch (t.scalar_type()) {
      case at::kFloat: type = napi_float32_array; elt = 4; break;
      case at::kInt: type = napi_int32_array; elt = 4; break;
      case at::kBool: type = napi_uint8_array; elt = 1; break;
      default: throw JsError{"toData: unsupported dtype"};
    }
    void* buf;
    napi_value ab, arr;
    NAPI_OK(napi_create_arraybuffer(env, n * elt, &buf, &ab));
    if (n) std::memcpy(buf, t.data_ptr(), n * elt);
    NAPI_OK(napi_create_typedarray(env, type, n, ab, 0, &arr));
    return arr;
  });
}

void freeHandle(int32_t h) {
  get(h);
  g_table[h] = at::Tensor();
  g_free.push_back(h);
}

// free(h) or free([h, ...]) (handles < 0, the undefined outputs, are ignored in a list)
napi_value Free(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    size_t argc;
    auto a = args<1>(env, info, &argc);
    bool isArray = false;
    napi_is_array(env, a[0], &isArray);
    if (!isArray) {
      freeHandle(static_cast<int32_t>(toInt(env, a[0])));
      return undef(env);
    }
    uint32_t n = arrayLen(env, a[0]);
    for (uint32_t j = 0; j < n; j++) {
      int32_t h = static_cast<int32_t>(toInt(env, element(env, a[0], j)));
      if (h >= 0) freeHandle(h);
    }
    return undef(env);
  });
}

napi_value Describe(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    size_t argc;
    auto a = args<1>(env, info, &argc);
    metaReset();
    metaPush(get(static_cast<int32_t>(toInt(env, a[0]))));
    return undef(env);
  });
}

napi_value Handles(napi_env env, napi_callback_info) {
  return guard(env, [&] { return num(env, static_cast<double>(g_table.size() - g_free.size())); });
}

// Bytes of the distinct storages the live handles refer to (views share their base's storage).
napi_value Memory(napi_env env, napi_callback_info) {
  return guard(env, [&] {
    std::vector<const void*> seen;
    double bytes = 0;
    for (const auto& t : g_table) {
      if (!t.defined()) continue;
      const void* s = t.storage().unsafeGetStorageImpl();
      bool dup = false;
      for (const void* p : seen) if (p == s) { dup = true; break; }
      if (dup) continue;
      seen.push_back(s);
      bytes += static_cast<double>(t.storage().nbytes());
    }
    return num(env, bytes);
  });
}

napi_value SetDevice(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    size_t argc;
    auto a = args<1>(env, info, &argc);
    c10::Device d(toString(env, a[0]));
    if (d.is_cuda()) {
      if (!at::hasCUDA()) throw JsError{"this PyTorch build has no CUDA support, or no CUDA device is visible"};
      int n = at::detail::getCUDAHooks().deviceCount();
      int idx = d.has_index() ? d.index() : 0;
      if (idx >= n) throw JsError{"CUDA device " + std::to_string(idx) + " does not exist (" + std::to_string(n) + " visible)"};
      d = c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(idx));
    } else if (!d.is_cpu()) {
      throw JsError{"unsupported device " + d.str()};
    }
    if (g_table.size() != g_free.size()) throw JsError{"setDevice: tensors are still alive on " + g_device.str()};
    g_device = d;
    return undef(env);
  });
}

napi_value Device(napi_env env, napi_callback_info) {
  return guard(env, [&] { return str(env, g_device.str()); });
}

napi_value CudaDeviceCount(napi_env env, napi_callback_info) {
  return guard(env, [&] { return int32(env, at::hasCUDA() ? at::detail::getCUDAHooks().deviceCount() : 0); });
}

// Waits for the device's queued work (a tiny device-to-host copy synchronises the current stream).
napi_value Synchronize(napi_env env, napi_callback_info) {
  return guard(env, [&] {
    if (g_device.is_cuda()) at::empty({1}, at::TensorOptions().device(g_device)).to(at::kCPU);
    return undef(env);
  });
}

napi_value SetNumThreads(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    size_t argc;
    auto a = args<1>(env, info, &argc);
    at::set_num_threads(static_cast<int>(toInt(env, a[0])));
    return undef(env);
  });
}

napi_value NumThreads(napi_env env, napi_callback_info) {
  return guard(env, [&] { return int32(env, at::get_num_threads()); });
}

napi_value SetTf32(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    size_t argc;
    auto a = args<2>(env, info, &argc);
    at::globalContext().setAllowTF32CuDNN(toBool(env, a[0]));
    at::globalContext().setAllowTF32CuBLAS(toBool(env, a[1]));
    return undef(env);
  });
}

napi_value Version(napi_env env, napi_callback_info) {
  return guard(env, [&] {
    return str(env, std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + "." +
                        std::to_string(TORCH_VERSION_PATCH));
  });
}

// ----------------------------------------------------------------------------------- fused optimizer (CPU)
//
// LAMB / AdamW over a parameter group and the global gradient norm, as loops over the float32 CPU tensors
// (src/backend/torch/kernels/optim.ts uses them on the CPU, where ATen's _foreach_* operators are a loop of whole
// passes per operation; on CUDA those are fused multi-tensor kernels and stay in use). The arithmetic is the
// contract's (src/train/fused-optim.ts), operation by operation in the same order (built with -ffp-contract=off);
// norms accumulate in double, per chunk, chunks added in order (deterministic for any thread count).

using namespace spark_optim;  // SumSq, LambMomentsAndNorms, LambApply, AdamWStep (spark_fused_optim.h)

constexpr int64_t kChunk = 1 << 16;

// fn(begin, end, chunk) over [0, n) in chunks of kChunk, on ATen's intra-op threads.
template <typename F>
void Chunks(int64_t n, F fn) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  at::parallel_for(0, chunks, 1, [&](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; ++c) fn(c * kChunk, std::min(n, (c + 1) * kChunk), c);
  });
}

double ParallelSumSq(const float* x, int64_t n) {
  std::vector<double> part((n + kChunk - 1) / kChunk, 0.0);
  Chunks(n, [&](int64_t b, int64_t e, int64_t c) { part[c] = SumSq(x + b, e - b); });
  double s = 0;
  for (double v : part) s += v;
  return s;
}

// The tensor of handle h, which the addon's CPU loops accept only as float32 on the CPU.
const at::Tensor& CheckedCpuFloat(int32_t h) {
  const at::Tensor& t = get(h);
  if (!t.device().is_cpu() || t.scalar_type() != at::kFloat) throw JsError{"spark_torch: the CPU loops take float32 CPU tensors only"};
  return t;
}

at::Tensor CpuFloat(int32_t h) { return CheckedCpuFloat(h).contiguous(); }

// A float32 CPU tensor as it is stored when its memory is dense in any dimension order (a filter gradient is an
// [kh,kw,in,out] view of [out,kh,kw,in] memory, see kernels/conv.ts), else a contiguous copy.
at::Tensor CpuFloatDense(int32_t h) {
  const at::Tensor& t = CheckedCpuFloat(h);
  return t.is_non_overlapping_and_dense() ? t : t.contiguous();
}

// `t` stored in the memory order of `ref` (same sizes): itself when the strides agree, else a copy. The optimizer's
// flat loops need its four operands in one order; the gradient's is taken, so that a parameter loaded from a
// checkpoint (contiguous) and one updated in place before (the gradient's order) give the same sums, bit for bit.
at::Tensor LayoutLike(const at::Tensor& t, const at::Tensor& ref) {
  if (t.strides() == ref.strides()) return t;
  at::Tensor c = at::empty_like(ref);
  c.copy_(t);
  return c;
}

// optimCpu(kind 0 = LAMB | 1 = AdamW, handles [params…, grads…, m…, v…], clip, hyper[9], apply, adapt, trustClip)
//   -> [params'…, m'…, v'…] (new handles). hyper as in native/tf/spark_tf_ops.cc: LAMB lr, wd, beta1, 1-beta1,
//   beta2, 1-beta2, eps, bc1, sqrt(bc2); AdamW 1-lr*wd, hasDecay, beta1, 1-beta1, beta2, 1-beta2, eps, sqrt(bc2),
//   lr/bc1. apply false: copies of the inputs.
napi_value OptimCpu(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    size_t argc;
    auto a = args<7>(env, info, &argc);
    if (argc < 7) throw JsError{"optimCpu: 7 arguments expected"};
    const int kind = static_cast<int>(toInt(env, a[0]));
    const uint32_t total = arrayLen(env, a[1]);
    if (total % 4 != 0) throw JsError{"optimCpu: the handle list must hold 4 lists of equal length"};
    const uint32_t n = total / 4;
    const float clip = CpuFloat(static_cast<int32_t>(toInt(env, a[2]))).item<float>();
    std::vector<float> h(9);
    if (arrayLen(env, a[3]) != 9) throw JsError{"optimCpu: hyper must have 9 values"};
    for (uint32_t i = 0; i < 9; ++i) h[i] = static_cast<float>(toDouble(env, element(env, a[3], i)));
    const bool go = get(static_cast<int32_t>(toInt(env, a[4]))).item<bool>();
    const bool adapt = toBool(env, a[5]);
    const bool trustClip = toBool(env, a[6]);
    std::vector<int32_t> out(3 * n);
    for (uint32_t i = 0; i < n; ++i) {
      at::Tensor g = CpuFloatDense(static_cast<int32_t>(toInt(env, element(env, a[1], n + i))));
      at::Tensor p = CpuFloatDense(static_cast<int32_t>(toInt(env, element(env, a[1], i))));
      at::Tensor m = CpuFloatDense(static_cast<int32_t>(toInt(env, element(env, a[1], 2 * n + i))));
      at::Tensor v = CpuFloatDense(static_cast<int32_t>(toInt(env, element(env, a[1], 3 * n + i))));
      if (p.sizes() != g.sizes() || m.sizes() != g.sizes() || v.sizes() != g.sizes()) throw JsError{"optimCpu: a parameter's gradient or moments differ in shape"};
      p = LayoutLike(p, g);
      m = LayoutLike(m, g);
      v = LayoutLike(v, g);
      const int64_t len = p.numel();
      at::Tensor po = at::empty_like(p), mo = at::empty_like(m), vo = at::empty_like(v);
      const float *P = p.data_ptr<float>(), *G = g.data_ptr<float>(), *M = m.data_ptr<float>(), *V = v.data_ptr<float>();
      float *PO = po.data_ptr<float>(), *MO = mo.data_ptr<float>(), *VO = vo.data_ptr<float>();
      if (!go) {
        po.copy_(p);
        mo.copy_(m);
        vo.copy_(v);
      } else if (kind == 0) {
        const int64_t chunks = (len + kChunk - 1) / kChunk;
        std::vector<double> pp(chunks, 0.0), uu(chunks, 0.0);
        Chunks(len, [&](int64_t b, int64_t e, int64_t c) {
          LambMomentsAndNorms(P + b, G + b, M + b, V + b, MO + b, VO + b, e - b, clip, h[1], h[2], h[3], h[4], h[5], h[6], h[7], h[8], &pp[c], &uu[c]);
        });
        float trust = 1.f;
        if (adapt) {
          double sp = 0, su = 0;
          for (int64_t c = 0; c < chunks; ++c) sp += pp[c], su += uu[c];
          const float wn = static_cast<float>(std::sqrt(sp));
          const float un = static_cast<float>(std::sqrt(su));
          if (wn > 0.f && un > 0.f) trust = wn / un;
          if (trustClip) trust = std::min(trust, 1.f);
        }
        Chunks(len, [&](int64_t b, int64_t e, int64_t) { LambApply(P + b, MO + b, VO + b, PO + b, e - b, h[1], h[6], h[7], h[8], adapt, trust, h[0]); });
      } else {
        Chunks(len, [&](int64_t b, int64_t e, int64_t) { AdamWStep(P + b, G + b, M + b, V + b, PO + b, MO + b, VO + b, e - b, clip, h.data()); });
      }
      out[i] = put(po);
      out[n + i] = put(mo);
      out[2 * n + i] = put(vo);
    }
    return handleArray(env, out);
  });
}

// globalNormCpu([grad handles]) -> handle of a float32 scalar sqrt(sum of squares), accumulated in double
napi_value GlobalNormCpu(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    size_t argc;
    auto a = args<1>(env, info, &argc);
    double total = 0;
    const uint32_t n = arrayLen(env, a[0]);
    for (uint32_t i = 0; i < n; ++i) {
      at::Tensor g = CpuFloatDense(static_cast<int32_t>(toInt(env, element(env, a[0], i))));
      total += ParallelSumSq(g.data_ptr<float>(), g.numel());
    }
    return int32(env, put(at::scalar_tensor(static_cast<float>(std::sqrt(total)), at::TensorOptions().dtype(at::kFloat))));
  });
}

// out = loop(dy, x) over two float32 CPU tensors of one size (contiguous copies when they are not), in chunks on
// ATen's threads: a new handle. `loop(d, x, o, n)` is one of the element-wise loops below.
template <typename Loop>
napi_value GradLoopCpu(napi_env env, napi_value hdy, napi_value hx, const char* name, Loop loop) {
  at::Tensor dy = CpuFloat(static_cast<int32_t>(toInt(env, hdy)));
  at::Tensor x = CpuFloat(static_cast<int32_t>(toInt(env, hx)));
  if (dy.numel() != x.numel()) throw JsError{std::string(name) + ": dy and its input differ in size"};
  at::Tensor out = at::empty_like(dy);
  const float* DY = dy.data_ptr<float>();
  const float* X = x.data_ptr<float>();
  float* O = out.data_ptr<float>();
  Chunks(dy.numel(), [&](int64_t b, int64_t e, int64_t) { loop(DY + b, X + b, O + b, e - b); });
  return int32(env, put(out));
}

// dy where 0 < y < hi, else dy * 0. Bitwise & (no short-circuit branch), so that the loop vectorises; with `&&` it
// branched per element and ran ~4x slower.
SPARK_SIMD_CLONES void ActivationGradLoop(const float* __restrict d, const float* __restrict y, float* __restrict o, int64_t n, float hi) {
  for (int64_t j = 0; j < n; ++j) o[j] = d[j] * static_cast<float>((y[j] > 0.f) & (y[j] < hi));
}

// activationGradCpu(dy, y, six) -> dy where 0 < y (< 6 when six), else dy * 0 (so -0 for a negative dy, as the
// portable composite dy * sign(y) and TensorFlow's ReluGrad give), in one pass over float32 CPU tensors
// (ATen's threshold_backward / hardtanh_backward write +0; the multiply-by-condition chain takes four passes).
napi_value ActivationGradCpu(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    size_t argc;
    auto a = args<3>(env, info, &argc);
    const float hi = toBool(env, a[2]) ? 6.f : std::numeric_limits<float>::infinity();
    return GradLoopCpu(env, a[0], a[1], "activationGradCpu", [hi](const float* d, const float* y, float* o, int64_t n) { ActivationGradLoop(d, y, o, n, hi); });
  });
}

// geluGradCpu(dy, x): the exact GELU's gradient (spark_gelu.h, the loop spark's TensorFlow op runs); ATen's
// gelu_backward takes twice as long on ConvNeXt's activations.
napi_value GeluGradCpu(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    size_t argc;
    auto a = args<2>(env, info, &argc);
    return GradLoopCpu(env, a[0], a[1], "geluGradCpu", spark_gelu::GeluGradLoop);
  });
}

// ----------------------------------------------------------------------------------- caching CPU allocator

napi_value CpuCache(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    size_t argc;
    auto a = args<1>(env, info, &argc);
    double limit = toDouble(env, a[0]);
    if (!(limit >= 0)) throw JsError{"cpuCache: the limit must be a number of bytes >= 0"};
    spark_cache::CachingCpuAllocator::Instance().Install(static_cast<size_t>(limit));
    return undef(env);
  });
}

napi_value CpuCacheStats(napi_env env, napi_callback_info) {
  return guard(env, [&] {
    auto& a = spark_cache::CachingCpuAllocator::Instance();
    auto s = a.stats();
    napi_value arr;
    NAPI_OK(napi_create_array_with_length(env, 6, &arr));
    const double v[] = {static_cast<double>(s.cached), static_cast<double>(s.peakCached), static_cast<double>(s.hits),
                        static_cast<double>(s.misses), static_cast<double>(s.released), a.installed() ? 1.0 : 0.0};
    for (uint32_t i = 0; i < 6; ++i) NAPI_OK(napi_set_element(env, arr, i, num(env, v[i])));
    return arr;
  });
}

napi_value EmptyCpuCache(napi_env env, napi_callback_info) {
  return guard(env, [&] {
    spark_cache::CachingCpuAllocator::Instance().EmptyCache();
    return undef(env);
  });
}

napi_value ModuleInit(napi_env env, napi_value exports) {
  struct Fn {
    const char* name;
    napi_callback cb;
  };
  const Fn fns[] = {
      {"init", Init}, {"resolve", Resolve}, {"schema", Schema}, {"call", Call}, {"fromData", FromData},
      {"toData", ToData}, {"free", Free}, {"describe", Describe}, {"handles", Handles}, {"memory", Memory},
      {"setDevice", SetDevice}, {"device", Device}, {"cudaDeviceCount", CudaDeviceCount},
      {"synchronize", Synchronize}, {"setNumThreads", SetNumThreads}, {"numThreads", NumThreads},
      {"setTf32", SetTf32}, {"version", Version}, {"optimCpu", OptimCpu}, {"globalNormCpu", GlobalNormCpu},
      {"activationGradCpu", ActivationGradCpu}, {"cpuCache", CpuCache}, {"cpuCacheStats", CpuCacheStats},
      {"emptyCpuCache", EmptyCpuCache}, {"geluGradCpu", GeluGradCpu},
  };
  for (const auto& f : fns) {
    napi_value fn;
    napi_create_function(env, f.name, NAPI_AUTO_LENGTH, f.cb, nullptr, &fn);
    napi_set_named_property(env, exports, f.name, fn);
  }
  return exports;
}

}  // namespace

NAPI_MODULE(NODE_GYP_MODULE_NAME, ModuleInit)
