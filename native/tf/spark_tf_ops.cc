// spark's own TensorFlow ops for the 'tensorflow' backend (issue 12): the optimizer updates and exact GELU as single
// native kernels instead of chains of ~20 elementwise TensorFlow ops.
//
// This file is a Node addon (N-API) whose only job is to register ops and CPU kernels with the TensorFlow that
// tfjs-node has already loaded, through TensorFlow's stable C API (tensorflow/c/ops.h, tensorflow/c/kernels.h: plain
// C, no C++ ABI shared with the wheel). Once registered, tfjs-node's binding runs them like any TensorFlow op
// (`binding.executeOp('SparkTfLamb', ...)`); src/backend/tf-native-ops.ts does that.
//
// Ops (float32; hyper-parameters that change every step come in a small `hyper` tensor, not as attrs, so that
// TensorFlow's eager kernel cache does not grow by one kernel per step):
//   SparkTfLamb(params, grads, m, v: N*float, clip: float scalar, hyper[9], apply: bool) -> params', m', v' (N each)
//       clip = clipDiv (gradients are divided by it); hyper = lr, weightDecay, beta1, 1-beta1, beta2, 1-beta2, eps,
//       biasCorrection1, sqrt(biasCorrection2); attrs adapt, trust_clip (LAMB of timm 0.5.4, the contract in
//       src/train/fused-optim.ts)
//   SparkTfAdamW(params, grads, m, v, clip, hyper[9], apply) -> params', m', v'
//       clip = clipCoef (gradients are multiplied by it); hyper = decayFactor (1 - lr*wd), hasDecay (0/1), beta1,
//       1-beta1, beta2, 1-beta2, eps, sqrt(biasCorrection2), lr/biasCorrection1
//   SparkTfGlobalNorm(grads: N*float) -> sqrt(sum of squares) (accumulated in double)
//   SparkTfGelu(x) -> x * Phi(x);  SparkTfGeluGrad(dy, x) -> dy * (Phi(x) + x * phi(x))   (exact, erf)
//   SparkTfMaskedBatchNorm(x [..., C], gamma, beta, running_mean, running_var [C], mask [...] with one value per
//       position of x) -> y, mean, inv_std, new_running_mean, new_running_var; attrs epsilon, momentum. Training
//       BatchNorm with the statistics over the positions where mask = 1 only (y = 0 elsewhere); masked positions
//       are skipped, so the cost is that of the visible ones. Running statistics as PyTorch updates them.
//   SparkTfMaskedBatchNormGrad(dy, x, gamma, mean, inv_std, mask) -> dx (0 where masked), dgamma, dbeta
//   SparkTfLayerNorm(x [..., C], gamma, beta) -> y, mean [..., 1], inv_std [..., 1]; attr epsilon (over the last axis)
//   SparkTfLayerNormGrad(dy, x, gamma, mean, inv_std) -> dx, dgamma, dbeta
//
// Arithmetic follows the reference tf-op chains operation by operation (build with -ffp-contract=off so that no
// multiply-add is fused), so the updates agree with them to float32 rounding; only the norms are summed in double.
// `apply` false copies every input to its output unchanged (a non-finite loss skips the step on the device).
// Large loops are split over a few std::threads (SPARK_TF_OPS_THREADS, default: the hardware threads, at most 8).

#include <node_api.h>

#include <tensorflow/c/c_api.h>  // TF_Status, TF_Tensor, TF_DataType (the header closure tfjs-node builds with)

// The part of TensorFlow's C kernel and op API (tensorflow/c/kernels.h, tensorflow/c/ops.h) used here. Declared
// here rather than included: those headers pull in internal TensorFlow headers that the staged C API include folder
// does not have; the functions themselves are the stable C ABI exported by libtensorflow_framework.so.2.
extern "C" {
typedef struct TF_OpDefinitionBuilder TF_OpDefinitionBuilder;
typedef struct TF_KernelBuilder TF_KernelBuilder;
typedef struct TF_OpKernelConstruction TF_OpKernelConstruction;
typedef struct TF_OpKernelContext TF_OpKernelContext;
TF_OpDefinitionBuilder* TF_NewOpDefinitionBuilder(const char* op_name);
void TF_RegisterOpDefinition(TF_OpDefinitionBuilder* builder, TF_Status* status);
void TF_OpDefinitionBuilderAddAttr(TF_OpDefinitionBuilder* builder, const char* attr_spec);
void TF_OpDefinitionBuilderAddInput(TF_OpDefinitionBuilder* builder, const char* input_spec);
void TF_OpDefinitionBuilderAddOutput(TF_OpDefinitionBuilder* builder, const char* output_spec);
TF_KernelBuilder* TF_NewKernelBuilder(const char* op_name, const char* device_name, void* (*create_func)(TF_OpKernelConstruction*),
                                      void (*compute_func)(void*, TF_OpKernelContext*), void (*delete_func)(void*));
void TF_RegisterKernelBuilder(const char* kernel_name, TF_KernelBuilder* builder, TF_Status* status);
int TF_NumInputs(TF_OpKernelContext* ctx);
void TF_GetInput(TF_OpKernelContext* ctx, int i, TF_Tensor** tensor, TF_Status* status);
TF_Tensor* TF_AllocateOutput(TF_OpKernelContext* context, int index, TF_DataType dtype, const int64_t* dims, int num_dims,
                             size_t len, TF_Status* status);
void TF_OpKernelContext_Failure(TF_OpKernelContext* ctx, TF_Status* status);
bool TF_OpKernelConstruction_HasAttr(TF_OpKernelConstruction* ctx, const char* attr_name, TF_Status* status);
void TF_OpKernelConstruction_GetAttrBool(TF_OpKernelConstruction* ctx, const char* attr_name, TF_Bool* val, TF_Status* status);
void TF_OpKernelConstruction_GetAttrFloat(TF_OpKernelConstruction* ctx, const char* attr_name, float* val, TF_Status* status);
}

// the optimizer loops, shared with the torch addon (hashed into both builds' stamps)
#include "../torch/spark_fused_optim.h"
#include "../torch/spark_gelu.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

// ----------------------------------------------------------------------------------------------------- threading

int NumThreads() {
  static const int n = [] {
    const char* env = std::getenv("SPARK_TF_OPS_THREADS");
    int t = env ? std::atoi(env) : static_cast<int>(std::thread::hardware_concurrency());
    return std::max(1, std::min(t, 8));
  }();
  return n;
}

// fn(begin, end, part) over [0, n) in contiguous parts; parts >= 1 only when the work is large enough to pay for
// starting a thread (~20 us).
template <typename F>
void ParallelFor(int64_t n, F fn) {
  const int64_t kMinPerThread = 1 << 16;
  int parts = static_cast<int>(std::min<int64_t>(NumThreads(), std::max<int64_t>(1, n / kMinPerThread)));
  if (parts <= 1) {
    fn(int64_t{0}, n, 0);
    return;
  }
  std::vector<std::thread> threads;
  const int64_t chunk = (n + parts - 1) / parts;
  for (int p = 1; p < parts; ++p) {
    const int64_t b = p * chunk, e = std::min(n, b + chunk);
    threads.emplace_back([=, &fn] { fn(b, e, p); });
  }
  fn(int64_t{0}, std::min(n, chunk), 0);
  for (auto& t : threads) t.join();
}

// --------------------------------------------------------------------------------------------------- tensor access

struct Status {
  TF_Status* s = TF_NewStatus();
  ~Status() { TF_DeleteStatus(s); }
  bool ok() const { return TF_GetCode(s) == TF_OK; }
};

// An input tensor (released on scope exit).
struct In {
  TF_Tensor* t = nullptr;
  In(TF_OpKernelContext* ctx, int i, Status& st) { TF_GetInput(ctx, i, &t, st.s); }
  ~In() {
    if (t) TF_DeleteTensor(t);
  }
  int64_t size() const { return TF_TensorElementCount(t); }
  const float* f() const { return static_cast<const float*>(TF_TensorData(t)); }
  bool b0() const { return *static_cast<const bool*>(TF_TensorData(t)); }
};

// Output `i` with the shape of `like` (released on scope exit; TensorFlow keeps its own reference).
struct Out {
  TF_Tensor* t = nullptr;
  Out(TF_OpKernelContext* ctx, int i, const TF_Tensor* like, Status& st) {
    const int nd = TF_NumDims(like);
    std::vector<int64_t> dims(nd);
    for (int d = 0; d < nd; ++d) dims[d] = TF_Dim(like, d);
    t = TF_AllocateOutput(ctx, i, TF_FLOAT, dims.data(), nd, TF_TensorElementCount(like) * sizeof(float), st.s);
  }
  Out(TF_OpKernelContext* ctx, int i, Status& st) {  // a scalar
    t = TF_AllocateOutput(ctx, i, TF_FLOAT, nullptr, 0, sizeof(float), st.s);
  }
  ~Out() {
    if (t) TF_DeleteTensor(t);
  }
  float* f() { return static_cast<float*>(TF_TensorData(t)); }
};

void Fail(TF_OpKernelContext* ctx, const char* msg) {
  Status st;
  TF_SetStatus(st.s, TF_INVALID_ARGUMENT, msg);
  TF_OpKernelContext_Failure(ctx, st.s);
}

// ------------------------------------------------------------------------------------------------- the optimizers

// An optional attribute into `*v` (left at its default when the op has none).
void OptionalAttr(TF_OpKernelConstruction* c, const char* name, TF_Bool* v) {
  Status st;
  if (TF_OpKernelConstruction_HasAttr(c, name, st.s)) TF_OpKernelConstruction_GetAttrBool(c, name, v, st.s);
}
void OptionalAttr(TF_OpKernelConstruction* c, const char* name, float* v) {
  Status st;
  if (TF_OpKernelConstruction_HasAttr(c, name, st.s)) TF_OpKernelConstruction_GetAttrFloat(c, name, v, st.s);
}

struct OptAttrs {
  TF_Bool adapt = 0;
  TF_Bool trust_clip = 0;
};

void* CreateOpt(TF_OpKernelConstruction* c) {
  auto* a = new OptAttrs;
  OptionalAttr(c, "adapt", &a->adapt);
  OptionalAttr(c, "trust_clip", &a->trust_clip);
  return a;
}
void DeleteOpt(void* k) { delete static_cast<OptAttrs*>(k); }

using namespace spark_optim;  // LambMomentsAndNorms, LambApply, AdamWStep, SumSq (../torch/spark_fused_optim.h)

// Inputs are params[0..n), grads[n..2n), m[2n..3n), v[3n..4n), clip, hyper, apply; outputs params', m', v'.
template <bool kLamb>
void ComputeOpt(void* kernel, TF_OpKernelContext* ctx) {
  const OptAttrs& at = *static_cast<OptAttrs*>(kernel);
  const int n = (TF_NumInputs(ctx) - 3) / 4;
  Status st;
  In clip(ctx, 4 * n, st), hyper(ctx, 4 * n + 1, st), apply(ctx, 4 * n + 2, st);
  if (!st.ok() || hyper.size() != 9 || clip.size() != 1) return Fail(ctx, "SparkTfLamb/AdamW: clip must be a scalar and hyper have 9 values");
  const float* h = hyper.f();
  const float c = clip.f()[0];
  const bool go = apply.b0();
  for (int i = 0; i < n; ++i) {
    In p(ctx, i, st), g(ctx, n + i, st), m(ctx, 2 * n + i, st), v(ctx, 3 * n + i, st);
    Out po(ctx, i, p.t, st), mo(ctx, n + i, p.t, st), vo(ctx, 2 * n + i, p.t, st);
    if (!st.ok()) return TF_OpKernelContext_Failure(ctx, st.s);
    const int64_t len = p.size();
    if (g.size() != len || m.size() != len || v.size() != len) return Fail(ctx, "SparkTfLamb/AdamW: a parameter's gradient or moments differ in size");
    const float *P = p.f(), *G = g.f(), *M = m.f(), *V = v.f();
    float *PO = po.f(), *MO = mo.f(), *VO = vo.f();
    if (!go) {
      std::memcpy(PO, P, len * sizeof(float));
      std::memcpy(MO, M, len * sizeof(float));
      std::memcpy(VO, V, len * sizeof(float));
      continue;
    }
    if (kLamb) {
      const float clipDiv = c, lr = h[0], wd = h[1], b1 = h[2], omb1 = h[3], b2 = h[4], omb2 = h[5], eps = h[6], bc1 = h[7], sbc2 = h[8];
      std::vector<double> pp(NumThreads(), 0.0), uu(NumThreads(), 0.0);
      ParallelFor(len, [&](int64_t b, int64_t e, int part) {
        LambMomentsAndNorms(P + b, G + b, M + b, V + b, MO + b, VO + b, e - b, clipDiv, wd, b1, omb1, b2, omb2, eps, bc1, sbc2, &pp[part], &uu[part]);
      });
      float trust = 1.f;
      if (at.adapt) {
        double sp = 0, su = 0;
        for (int t = 0; t < NumThreads(); ++t) sp += pp[t], su += uu[t];
        const float wn = static_cast<float>(std::sqrt(sp)), un = static_cast<float>(std::sqrt(su));
        if (wn > 0.f && un > 0.f) trust = wn / un;
        if (at.trust_clip) trust = std::min(trust, 1.f);
      }
      ParallelFor(len, [&](int64_t b, int64_t e, int) { LambApply(P + b, MO + b, VO + b, PO + b, e - b, wd, eps, bc1, sbc2, at.adapt != 0, trust, lr); });
    } else {
      ParallelFor(len, [&](int64_t b, int64_t e, int) { AdamWStep(P + b, G + b, M + b, V + b, PO + b, MO + b, VO + b, e - b, c, h); });
    }
  }
}

void ComputeGlobalNorm(void*, TF_OpKernelContext* ctx) {
  const int n = TF_NumInputs(ctx);
  Status st;
  double total = 0;
  for (int i = 0; i < n; ++i) {
    In g(ctx, i, st);
    if (!st.ok()) return TF_OpKernelContext_Failure(ctx, st.s);
    const float* G = g.f();
    std::vector<double> part(NumThreads(), 0.0);
    ParallelFor(g.size(), [&](int64_t b, int64_t e, int p) { part[p] = SumSq(G + b, e - b); });
    for (double s : part) total += s;
  }
  Out out(ctx, 0, st);
  if (!st.ok()) return TF_OpKernelContext_Failure(ctx, st.s);
  *out.f() = static_cast<float>(std::sqrt(total));
}

// --------------------------------------------------------------------------------------------------------- GELU

using namespace spark_gelu;  // GeluLoop, GeluGradLoop (../torch/spark_gelu.h)

void ComputeGelu(void*, TF_OpKernelContext* ctx) {
  Status st;
  In x(ctx, 0, st);
  Out y(ctx, 0, x.t, st);
  if (!st.ok()) return TF_OpKernelContext_Failure(ctx, st.s);
  const float* X = x.f();
  float* Y = y.f();
  ParallelFor(x.size(), [&](int64_t b, int64_t e, int) { GeluLoop(X + b, Y + b, e - b); });
}

void ComputeGeluGrad(void*, TF_OpKernelContext* ctx) {
  Status st;
  In dy(ctx, 0, st), x(ctx, 1, st);
  Out dx(ctx, 0, x.t, st);
  if (!st.ok()) return TF_OpKernelContext_Failure(ctx, st.s);
  if (dy.size() != x.size()) return Fail(ctx, "SparkTfGeluGrad: dy and x differ in size");
  const float *DY = dy.f(), *X = x.f();
  float* DX = dx.f();
  ParallelFor(x.size(), [&](int64_t b, int64_t e, int) { GeluGradLoop(DY + b, X + b, DX + b, e - b); });
}

// ----------------------------------------------------------------------------------------- masked BatchNorm

// The attributes of the masked BatchNorm and LayerNorm ops (LayerNorm has no momentum: it keeps the default).
struct NormAttrs {
  float eps = 1e-5f;
  float momentum = 0.1f;
};

void* CreateNorm(TF_OpKernelConstruction* c) {
  auto* a = new NormAttrs;
  OptionalAttr(c, "epsilon", &a->eps);
  OptionalAttr(c, "momentum", &a->momentum);
  return a;
}
void DeleteNorm(void* k) { delete static_cast<NormAttrs*>(k); }

// acc[c] += x[c] (and the square of x[c] - mean[c] when `centered`), over one row of C values.
inline void AddRow(const float* __restrict x, double* __restrict acc, int64_t C) {
  for (int64_t c = 0; c < C; ++c) acc[c] += x[c];
}
inline void AddSqRow(const float* __restrict x, const float* __restrict mean, double* __restrict acc, int64_t C) {
  for (int64_t c = 0; c < C; ++c) {
    const float d = x[c] - mean[c];
    acc[c] += d * d;
  }
}

// Per-channel sums over the visible rows of [M, C], split over threads (per-thread accumulators, added in order).
template <typename RowFn>
std::vector<double> ChannelSums(int64_t M, int64_t C, const float* mask, RowFn row) {
  const int T = NumThreads();
  std::vector<double> part(static_cast<size_t>(T) * C, 0.0);
  ParallelFor(M, [&](int64_t b, int64_t e, int p) {
    double* acc = part.data() + static_cast<size_t>(p) * C;
    for (int64_t r = b; r < e; ++r)
      if (mask[r] != 0.f) row(r, acc);
  });
  std::vector<double> sum(C, 0.0);
  for (int t = 0; t < T; ++t)
    for (int64_t c = 0; c < C; ++c) sum[c] += part[static_cast<size_t>(t) * C + c];
  return sum;
}

void ComputeMaskedBn(void* kernel, TF_OpKernelContext* ctx) {
  const NormAttrs& at = *static_cast<NormAttrs*>(kernel);
  Status st;
  In x(ctx, 0, st), gamma(ctx, 1, st), beta(ctx, 2, st), rm(ctx, 3, st), rv(ctx, 4, st), mask(ctx, 5, st);
  if (!st.ok()) return TF_OpKernelContext_Failure(ctx, st.s);
  const int64_t C = gamma.size();
  if (C == 0 || x.size() % C != 0 || mask.size() != x.size() / C || beta.size() != C || rm.size() != C || rv.size() != C)
    return Fail(ctx, "SparkTfMaskedBatchNorm: x must be [..., C] with gamma/beta/running stats [C] and one mask value per position");
  const int64_t M = x.size() / C;
  Out y(ctx, 0, x.t, st), mean(ctx, 1, gamma.t, st), invStd(ctx, 2, gamma.t, st), nrm(ctx, 3, gamma.t, st), nrv(ctx, 4, gamma.t, st);
  if (!st.ok()) return TF_OpKernelContext_Failure(ctx, st.s);
  const float *X = x.f(), *MK = mask.f(), *G = gamma.f(), *B = beta.f();
  int64_t n = 0;
  for (int64_t r = 0; r < M; ++r) n += MK[r] != 0.f;
  const float cnt = static_cast<float>(n);
  float* MEAN = mean.f();
  float* IS = invStd.f();
  const std::vector<double> sum = ChannelSums(M, C, MK, [&](int64_t r, double* acc) { AddRow(X + r * C, acc, C); });
  for (int64_t c = 0; c < C; ++c) MEAN[c] = static_cast<float>(sum[c]) / cnt;
  const std::vector<double> sq = ChannelSums(M, C, MK, [&](int64_t r, double* acc) { AddSqRow(X + r * C, MEAN, acc, C); });
  std::vector<float> scale(C);
  for (int64_t c = 0; c < C; ++c) {
    const float var = static_cast<float>(sq[c]) / cnt;
    IS[c] = 1.f / std::sqrt(var + at.eps);
    scale[c] = IS[c] * G[c];
    const float varU = var * (cnt / std::max(cnt - 1.f, 1.f));
    nrm.f()[c] = rm.f()[c] * (1.f - at.momentum) + MEAN[c] * at.momentum;
    nrv.f()[c] = rv.f()[c] * (1.f - at.momentum) + varU * at.momentum;
  }
  float* Y = y.f();
  const float* S = scale.data();
  ParallelFor(M, [&](int64_t b, int64_t e, int) {
    for (int64_t r = b; r < e; ++r) {
      float* __restrict yr = Y + r * C;
      const float* __restrict xr = X + r * C;
      if (MK[r] == 0.f) {
        std::memset(yr, 0, C * sizeof(float));
        continue;
      }
      for (int64_t c = 0; c < C; ++c) yr[c] = (xr[c] - MEAN[c]) * S[c] + B[c];
    }
  });
}

void ComputeMaskedBnGrad(void*, TF_OpKernelContext* ctx) {
  Status st;
  In dy(ctx, 0, st), x(ctx, 1, st), gamma(ctx, 2, st), mean(ctx, 3, st), invStd(ctx, 4, st), mask(ctx, 5, st);
  if (!st.ok()) return TF_OpKernelContext_Failure(ctx, st.s);
  const int64_t C = gamma.size();
  if (C == 0 || x.size() % C != 0 || dy.size() != x.size() || mask.size() != x.size() / C || mean.size() != C || invStd.size() != C)
    return Fail(ctx, "SparkTfMaskedBatchNormGrad: dy and x must be [..., C] with one mask value per position");
  const int64_t M = x.size() / C;
  Out dx(ctx, 0, x.t, st), dgamma(ctx, 1, gamma.t, st), dbeta(ctx, 2, gamma.t, st);
  if (!st.ok()) return TF_OpKernelContext_Failure(ctx, st.s);
  const float *DY = dy.f(), *X = x.f(), *MK = mask.f(), *G = gamma.f(), *MEAN = mean.f(), *IS = invStd.f();
  int64_t n = 0;
  for (int64_t r = 0; r < M; ++r) n += MK[r] != 0.f;
  const float cnt = static_cast<float>(n);
  // dbeta = sum dy, dgamma = sum dy * xhat over the visible rows (one pass: 2C accumulators per thread)
  const std::vector<double> sums = ChannelSums(M, 2 * C, MK, [&](int64_t r, double* acc) {
    const float* __restrict d = DY + r * C;
    const float* __restrict xr = X + r * C;
    double* __restrict a0 = acc;
    double* __restrict a1 = acc + C;
    for (int64_t c = 0; c < C; ++c) {
      a0[c] += d[c];
      a1[c] += d[c] * ((xr[c] - MEAN[c]) * IS[c]);
    }
  });
  float* DB = dbeta.f();
  float* DG = dgamma.f();
  std::vector<float> k(C);
  for (int64_t c = 0; c < C; ++c) {
    DB[c] = static_cast<float>(sums[c]);
    DG[c] = static_cast<float>(sums[C + c]);
    k[c] = (G[c] * IS[c]) / cnt;
  }
  // dx = ((n*dy - dbeta) - xhat*dgamma) * (gamma*invStd/n), 0 where masked
  float* DX = dx.f();
  const float* K = k.data();
  ParallelFor(M, [&](int64_t b, int64_t e, int) {
    for (int64_t r = b; r < e; ++r) {
      float* __restrict o = DX + r * C;
      if (MK[r] == 0.f) {
        std::memset(o, 0, C * sizeof(float));
        continue;
      }
      const float* __restrict d = DY + r * C;
      const float* __restrict xr = X + r * C;
      for (int64_t c = 0; c < C; ++c) {
        const float xhat = (xr[c] - MEAN[c]) * IS[c];
        o[c] = ((d[c] * cnt - DB[c]) - xhat * DG[c]) * K[c];
      }
    }
  });
}

// -------------------------------------------------------------------------------------------------- LayerNorm

// Sum of a row of C floats: 8 float lanes (vectorised), then the lanes in a fixed order.
inline float RowSum(const float* __restrict x, int64_t C) {
  float lane[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  int64_t c = 0;
  for (; c + 8 <= C; c += 8)
    for (int l = 0; l < 8; ++l) lane[l] += x[c + l];
  float tail = 0.f;
  for (; c < C; ++c) tail += x[c];
  return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7])) + tail;
}

void ComputeLayerNorm(void* kernel, TF_OpKernelContext* ctx) {
  const float eps = static_cast<NormAttrs*>(kernel)->eps;
  Status st;
  In x(ctx, 0, st), gamma(ctx, 1, st), beta(ctx, 2, st);
  if (!st.ok()) return TF_OpKernelContext_Failure(ctx, st.s);
  const int64_t C = gamma.size();
  if (C == 0 || x.size() % C != 0 || beta.size() != C) return Fail(ctx, "SparkTfLayerNorm: x must be [..., C] with gamma and beta [C]");
  const int64_t M = x.size() / C;
  const int nd = TF_NumDims(x.t);
  std::vector<int64_t> sdims(nd);
  for (int d = 0; d < nd; ++d) sdims[d] = d == nd - 1 ? 1 : TF_Dim(x.t, d);
  Out y(ctx, 0, x.t, st);
  TF_Tensor* mt = TF_AllocateOutput(ctx, 1, TF_FLOAT, sdims.data(), nd, M * sizeof(float), st.s);
  TF_Tensor* it = TF_AllocateOutput(ctx, 2, TF_FLOAT, sdims.data(), nd, M * sizeof(float), st.s);
  if (!st.ok()) {
    if (mt) TF_DeleteTensor(mt);
    if (it) TF_DeleteTensor(it);
    return TF_OpKernelContext_Failure(ctx, st.s);
  }
  float* MEAN = static_cast<float*>(TF_TensorData(mt));
  float* IS = static_cast<float*>(TF_TensorData(it));
  const float *X = x.f(), *G = gamma.f(), *B = beta.f();
  float* Y = y.f();
  const float invC = 1.f / static_cast<float>(C);
  ParallelFor(M, [&](int64_t b, int64_t e, int) {
    std::vector<float> d(C);
    float* __restrict dd = d.data();
    for (int64_t r = b; r < e; ++r) {
      const float* __restrict xr = X + r * C;
      float* __restrict yr = Y + r * C;
      const float mean = RowSum(xr, C) * invC;
      for (int64_t c = 0; c < C; ++c) dd[c] = (xr[c] - mean) * (xr[c] - mean);
      const float inv = 1.f / std::sqrt(RowSum(dd, C) * invC + eps);
      for (int64_t c = 0; c < C; ++c) yr[c] = ((xr[c] - mean) * inv) * G[c] + B[c];
      MEAN[r] = mean;
      IS[r] = inv;
    }
  });
  TF_DeleteTensor(mt);
  TF_DeleteTensor(it);
}

void ComputeLayerNormGrad(void*, TF_OpKernelContext* ctx) {
  Status st;
  In dy(ctx, 0, st), x(ctx, 1, st), gamma(ctx, 2, st), mean(ctx, 3, st), invStd(ctx, 4, st);
  if (!st.ok()) return TF_OpKernelContext_Failure(ctx, st.s);
  const int64_t C = gamma.size();
  if (C == 0 || x.size() % C != 0 || dy.size() != x.size() || mean.size() != x.size() / C || invStd.size() != mean.size())
    return Fail(ctx, "SparkTfLayerNormGrad: dy and x must be [..., C] with one mean and inv_std per position");
  const int64_t M = x.size() / C;
  Out dx(ctx, 0, x.t, st), dgamma(ctx, 1, gamma.t, st), dbeta(ctx, 2, gamma.t, st);
  if (!st.ok()) return TF_OpKernelContext_Failure(ctx, st.s);
  const float *DY = dy.f(), *X = x.f(), *G = gamma.f(), *MEAN = mean.f(), *IS = invStd.f();
  float* DX = dx.f();
  const float invC = 1.f / static_cast<float>(C);
  const int T = NumThreads();
  std::vector<double> part(static_cast<size_t>(T) * 2 * C, 0.0);
  ParallelFor(M, [&](int64_t b, int64_t e, int p) {
    std::vector<float> buf(2 * C);
    float* __restrict xh = buf.data();
    float* __restrict g = buf.data() + C;
    double* __restrict dgAcc = part.data() + static_cast<size_t>(p) * 2 * C;
    double* __restrict dbAcc = dgAcc + C;
    for (int64_t r = b; r < e; ++r) {
      const float* __restrict d = DY + r * C;
      const float* __restrict xr = X + r * C;
      float* __restrict o = DX + r * C;
      const float m = MEAN[r], inv = IS[r];
      for (int64_t c = 0; c < C; ++c) {
        xh[c] = (xr[c] - m) * inv;
        g[c] = d[c] * G[c];
        dgAcc[c] += d[c] * xh[c];
        dbAcc[c] += d[c];
      }
      const float a = RowSum(g, C) * invC;
      for (int64_t c = 0; c < C; ++c) o[c] = g[c] * xh[c];  // (o as scratch for g * xhat)
      const float bb = RowSum(o, C) * invC;
      for (int64_t c = 0; c < C; ++c) o[c] = ((g[c] - a) - xh[c] * bb) * inv;
    }
  });
  float* DG = dgamma.f();
  float* DB = dbeta.f();
  for (int64_t c = 0; c < C; ++c) {
    double sg = 0, sb = 0;
    for (int t = 0; t < T; ++t) sg += part[static_cast<size_t>(t) * 2 * C + c], sb += part[static_cast<size_t>(t) * 2 * C + C + c];
    DG[c] = static_cast<float>(sg);
    DB[c] = static_cast<float>(sb);
  }
}

// ------------------------------------------------------------------------------------------------- registration

bool Register(const char* op, const std::vector<const char*>& attrs, const std::vector<const char*>& inputs,
              const std::vector<const char*>& outputs, void* (*create)(TF_OpKernelConstruction*),
              void (*compute)(void*, TF_OpKernelContext*), void (*del)(void*), std::string* error) {
  Status st;
  TF_OpDefinitionBuilder* b = TF_NewOpDefinitionBuilder(op);
  for (const char* a : attrs) TF_OpDefinitionBuilderAddAttr(b, a);
  for (const char* i : inputs) TF_OpDefinitionBuilderAddInput(b, i);
  for (const char* o : outputs) TF_OpDefinitionBuilderAddOutput(b, o);
  TF_RegisterOpDefinition(b, st.s);  // takes ownership of the builder
  if (!st.ok()) {
    *error = std::string(op) + ": " + TF_Message(st.s);
    return false;
  }
  TF_KernelBuilder* kb = TF_NewKernelBuilder(op, "CPU", create, compute, del);
  TF_RegisterKernelBuilder((std::string(op) + "_CPU").c_str(), kb, st.s);
  if (!st.ok()) {
    *error = std::string(op) + " kernel: " + TF_Message(st.s);
    return false;
  }
  return true;
}

std::string RegisterAll() {
  std::string err;
  const std::vector<const char*> optIn = {"params: N * float", "grads: N * float", "m: N * float", "v: N * float", "clip: float", "hyper: float", "apply: bool"};
  const std::vector<const char*> optOut = {"new_params: N * float", "new_m: N * float", "new_v: N * float"};
  if (!Register("SparkTfLamb", {"N: int >= 1", "adapt: bool = false", "trust_clip: bool = false"}, optIn, optOut, CreateOpt, ComputeOpt<true>, DeleteOpt, &err)) return err;
  if (!Register("SparkTfAdamW", {"N: int >= 1"}, optIn, optOut, CreateOpt, ComputeOpt<false>, DeleteOpt, &err)) return err;
  if (!Register("SparkTfGlobalNorm", {"N: int >= 1"}, {"grads: N * float"}, {"norm: float"}, nullptr, ComputeGlobalNorm, nullptr, &err)) return err;
  if (!Register("SparkTfGelu", {}, {"x: float"}, {"y: float"}, nullptr, ComputeGelu, nullptr, &err)) return err;
  if (!Register("SparkTfGeluGrad", {}, {"dy: float", "x: float"}, {"dx: float"}, nullptr, ComputeGeluGrad, nullptr, &err)) return err;
  if (!Register("SparkTfMaskedBatchNorm", {"epsilon: float", "momentum: float"},
                {"x: float", "gamma: float", "beta: float", "running_mean: float", "running_var: float", "mask: float"},
                {"y: float", "mean: float", "inv_std: float", "new_running_mean: float", "new_running_var: float"}, CreateNorm, ComputeMaskedBn, DeleteNorm, &err))
    return err;
  if (!Register("SparkTfLayerNorm", {"epsilon: float"}, {"x: float", "gamma: float", "beta: float"}, {"y: float", "mean: float", "inv_std: float"},
                CreateNorm, ComputeLayerNorm, DeleteNorm, &err))
    return err;
  if (!Register("SparkTfLayerNormGrad", {}, {"dy: float", "x: float", "gamma: float", "mean: float", "inv_std: float"}, {"dx: float", "dgamma: float", "dbeta: float"},
                nullptr, ComputeLayerNormGrad, nullptr, &err))
    return err;
  if (!Register("SparkTfMaskedBatchNormGrad", {}, {"dy: float", "x: float", "gamma: float", "mean: float", "inv_std: float", "mask: float"},
                {"dx: float", "dgamma: float", "dbeta: float"}, nullptr, ComputeMaskedBnGrad, nullptr, &err))
    return err;
  return "";
}

// -------------------------------------------------------------------------------------------------- the addon

// exports.ops: the registered op names; exports.error: why registration failed ('' when it did not).
napi_value Init(napi_env env, napi_value exports) {
  static const std::string error = RegisterAll();  // once per process (TensorFlow's registries are global)
  const char* names[] = {"SparkTfLamb", "SparkTfAdamW", "SparkTfGlobalNorm", "SparkTfGelu", "SparkTfGeluGrad", "SparkTfMaskedBatchNorm", "SparkTfMaskedBatchNormGrad", "SparkTfLayerNorm", "SparkTfLayerNormGrad"};
  napi_value arr, s, e, threads;
  napi_create_array(env, &arr);
  if (error.empty()) {
    for (uint32_t i = 0; i < sizeof(names) / sizeof(names[0]); ++i) {
      napi_create_string_utf8(env, names[i], NAPI_AUTO_LENGTH, &s);
      napi_set_element(env, arr, i, s);
    }
  }
  napi_create_string_utf8(env, error.c_str(), NAPI_AUTO_LENGTH, &e);
  napi_create_int32(env, NumThreads(), &threads);
  napi_set_named_property(env, exports, "ops", arr);
  napi_set_named_property(env, exports, "error", e);
  napi_set_named_property(env, exports, "threads", threads);
  return exports;
}

}  // namespace

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
