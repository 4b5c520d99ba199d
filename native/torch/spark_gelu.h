// spark_gelu.h: exact GELU, x * Phi(x), and its gradient as plain float32 loops the compiler vectorises (libm's
// erff/expf are a call per element). Shared by spark's TensorFlow ops (native/tf/spark_tf_ops.cc) and the torch
// addon's CPU path (spark_torch.cc), so both backends compute the same values.
#pragma once

#include <algorithm>
#include <cstdint>

#include "spark_simd.h"

namespace spark_gelu {

// erf in float32 by a rational approximation on [-4, 4] (erf is +-1 in float32 beyond), the one Eigen and XLA use for
// float: x * P(x^2) / Q(x^2). Written as plain arithmetic so that the compiler vectorises the loops.
inline float ErfF(float x) {
  x = std::min(4.f, std::max(-4.f, x));
  const float x2 = x * x;
  float p = -2.72614225801306e-10f;
  p = p * x2 + 2.77068142495902e-08f;
  p = p * x2 + -2.10102402082508e-06f;
  p = p * x2 + -5.69250639462346e-05f;
  p = p * x2 + -7.34990630326855e-04f;
  p = p * x2 + -2.95459980854025e-03f;
  p = p * x2 + -1.60960333262415e-02f;
  p = p * x;
  float q = -1.45660718464996e-05f;
  q = q * x2 + -2.13374055278905e-04f;
  q = q * x2 + -1.68282697438203e-03f;
  q = q * x2 + -7.37332916720468e-03f;
  q = q * x2 + -1.42647390514189e-02f;
  return p / q;
}

// exp(a) for a <= 0 in float32 (clamped at -87, below which it is under the smallest normal float): 2^n * exp(r)
// with r = a - n*ln2 (ln2 split in two parts) and a degree-7 Taylor polynomial on |r| <= ln2/2 (relative error
// below 2e-8 there). Plain arithmetic, so that the compiler vectorises it (libm's expf is a call per element).
inline float ExpNonPositiveF(float a) {
  a = std::max(a, -87.f);
  // n = a/ln2 rounded to the nearest integer (adding and subtracting 1.5*2^23 rounds in float32)
  const float n = (a * 1.44269504088896341f + 12582912.f) - 12582912.f;
  float r = a - n * 0.693145751953125f;
  r = r - n * 1.428606765330187045e-06f;
  float p = 1.f / 5040.f;
  p = p * r + 1.f / 720.f;
  p = p * r + 1.f / 120.f;
  p = p * r + 1.f / 24.f;
  p = p * r + 1.f / 6.f;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  return p * __builtin_bit_cast(float, bits);
}

constexpr float kSqrtHalf = 0.70710678118654752f;
constexpr float kInvSqrt2Pi = 0.39894228040143268f;

SPARK_SIMD_CLONES inline void GeluLoop(const float* __restrict X, float* __restrict Y, int64_t n) {
  for (int64_t j = 0; j < n; ++j) Y[j] = (X[j] * 0.5f) * (ErfF(X[j] * kSqrtHalf) + 1.f);
}

// dy * (Phi(x) + x * phi(x)), Phi(x) = (erf(x/sqrt2) + 1) * 0.5, phi(x) = exp(-x^2/2) / sqrt(2 pi)
SPARK_SIMD_CLONES inline void GeluGradLoop(const float* __restrict DY, const float* __restrict X, float* __restrict DX, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const float x = X[j];
    const float cdf = (ErfF(x * kSqrtHalf) + 1.f) * 0.5f;
    const float pdf = ExpNonPositiveF((x * x) * -0.5f) * kInvSqrt2Pi;
    DX[j] = DY[j] * (cdf + x * pdf);
  }
}

}  // namespace spark_gelu
