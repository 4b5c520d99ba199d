// spark_simd.h: SPARK_SIMD_CLONES marks a hot float loop for GCC/Clang function multiversioning on x86-64: the
// compiler emits an AVX-512, an AVX2 and a baseline copy, and the loader picks the best one the CPU has. The addon is
// then built without -march=native (one build may serve every node that shares a home directory) and still runs its
// loops at full vector width. The clones compute identical values: elementwise IEEE operations only, no fused
// multiply-add (-ffp-contract=off), and every reduction's order is fixed in the source.
#pragma once

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(SPARK_NO_SIMD_CLONES)
#define SPARK_SIMD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SPARK_SIMD_CLONES
#endif
