// The fused optimizer's per-element loops (LAMB and AdamW of timm 0.5.4, the contract in src/train/fused-optim.ts),
// shared by the torch addon (spark_torch.cc, CPU tensors) and spark's TensorFlow ops (native/tf/spark_tf_ops.cc).
// Header-only and free of both libraries' types: plain float arrays on restrict pointers, so that the compiler
// vectorises the loops. The arithmetic follows the reference op chains operation by operation; build with
// -ffp-contract=off so that no multiply-add is fused. Sums of squares accumulate in double.
//
// `h` (AdamW) and the LAMB scalars are the `hyper` layouts of src/backend/fused-optim-scalars.ts.
#ifndef SPARK_FUSED_OPTIM_H_
#define SPARK_FUSED_OPTIM_H_

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "spark_simd.h"

namespace spark_optim {

// LAMB moments and the update direction u = (m'/bc1) / (sqrt(v')/sqrt(bc2) + eps) (+ wd*p), in the reference's order.
inline void LambMoments(const float* __restrict P, const float* __restrict G, const float* __restrict M, const float* __restrict V,
                 float* __restrict MO, float* __restrict VO, float* __restrict U, int64_t n, float clipDiv, float wd,
                 float b1, float omb1, float b2, float omb2, float eps, float bc1, float sbc2) {
  for (int64_t j = 0; j < n; ++j) {
    const float g = G[j] / clipDiv;
    const float m = M[j] * b1 + g * omb1;
    const float v = V[j] * b2 + (g * g) * omb2;
    MO[j] = m;
    VO[j] = v;
    const float u = (m / bc1) / (std::sqrt(v) / sbc2 + eps);
    U[j] = wd != 0.f ? u + P[j] * wd : u;
  }
}

// p' = p - (u*trust)*lr with u recomputed from m', v' and p exactly as LambMoments computes it (the trust ratio
// applied only when adapting, as the reference does).
SPARK_SIMD_CLONES inline void LambApply(const float* __restrict P, const float* __restrict MO, const float* __restrict VO, float* __restrict PO, int64_t n,
               float wd, float eps, float bc1, float sbc2, bool adapt, float trust, float lr) {
  for (int64_t j = 0; j < n; ++j) {
    float u = (MO[j] / bc1) / (std::sqrt(VO[j]) / sbc2 + eps);
    if (wd != 0.f) u = u + P[j] * wd;
    PO[j] = adapt ? P[j] - (u * trust) * lr : P[j] - u * lr;
  }
}

// Sum of squares in double: float partial sums over blocks of 256 values (8 lanes of 32, vectorised), blocks added
// in double (relative error ~1e-7 for any length).
SPARK_SIMD_CLONES inline double SumSq(const float* __restrict x, int64_t n) {
  double total = 0;
  int64_t j = 0;
  for (; j + 256 <= n; j += 256) {
    float lane[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    for (int k = 0; k < 256; k += 8)
      for (int l = 0; l < 8; ++l) lane[l] += x[j + k + l] * x[j + k + l];
    total += static_cast<double>((lane[0] + lane[1]) + (lane[2] + lane[3])) + static_cast<double>((lane[4] + lane[5]) + (lane[6] + lane[7]));
  }
  for (; j < n; ++j) total += static_cast<double>(x[j]) * x[j];
  return total;
}

// LambMoments over [0, n) in blocks whose direction u stays in a small buffer (in cache), with the sums of squares
// of p and u of the range (both in double; blocks added in order).
SPARK_SIMD_CLONES inline void LambMomentsAndNorms(const float* P, const float* G, const float* M, const float* V, float* MO, float* VO, int64_t n,
                         float clipDiv, float wd, float b1, float omb1, float b2, float omb2, float eps, float bc1, float sbc2,
                         double* pp, double* uu) {
  constexpr int64_t kBlock = 4096;
  float u[kBlock];
  double sp = 0, su = 0;
  for (int64_t o = 0; o < n; o += kBlock) {
    const int64_t len = std::min(kBlock, n - o);
    LambMoments(P + o, G + o, M + o, V + o, MO + o, VO + o, u, len, clipDiv, wd, b1, omb1, b2, omb2, eps, bc1, sbc2);
    sp += SumSq(P + o, len);
    su += SumSq(u, len);
  }
  *pp = sp;
  *uu = su;
}

// AdamW: p' = decayed - (m'/(sqrt(v')/sqrt(bc2) + eps)) * (lr/bc1), decayed = p*(1 - lr*wd) when decaying.
SPARK_SIMD_CLONES inline void AdamWStep(const float* __restrict P, const float* __restrict G, const float* __restrict M, const float* __restrict V,
               float* __restrict PO, float* __restrict MO, float* __restrict VO, int64_t n, float coef, const float* h) {
  const float decay = h[0], hasDecay = h[1], b1 = h[2], omb1 = h[3], b2 = h[4], omb2 = h[5], eps = h[6], sbc2 = h[7], step = h[8];
  const bool dec = hasDecay != 0.f;
  for (int64_t j = 0; j < n; ++j) {
    const float g = G[j] * coef;
    const float m = M[j] * b1 + g * omb1;
    const float v = V[j] * b2 + (g * g) * omb2;
    MO[j] = m;
    VO[j] = v;
    const float decayed = dec ? P[j] * decay : P[j];
    PO[j] = decayed - (m / (std::sqrt(v) / sbc2 + eps)) * step;
  }
}

}  // namespace spark_optim

#endif  // SPARK_FUSED_OPTIM_H_
