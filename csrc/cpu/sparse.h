// The products of the sparse CPU kernels: one group's compressed sparse matrix with dense
// feature-major arrays (row i holds feature i for consecutive batch columns, which are the vector
// lanes), in the gather form: each output row is a sum over its own entries, so the products need no
// atomics and keep their accumulators in registers. Every function is always inlined, into the
// kernels' instruction-set functions (isa.h).
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "simd.h"

namespace hapruned {

// The rows of one group's compressed matrix: row r's entries are [ptr[r], ptr[r + 1]), with the
// column index idx[e] and value val[e] of entry e (entry offsets count from the first group's, so
// every group indexes the same arrays).
template <typename T>
struct CompressedRows {
  const int32_t* ptr;  // [rows + 1]
  const int32_t* idx;
  const T* val;
  int64_t rows;
};

// What a product's output rows start from: zero, one value per row, or a matrix.
enum class Start { kZero, kRowValue, kMatrix };

// A dense feature-major operand: row i at data + i * ld.
template <typename T>
struct Rows {
  T* data;
  int64_t ld;
};

// A compressed matrix and the dense rows its column indices select.
template <typename T>
struct SparseOperand {
  CompressedRows<T> m;
  Rows<const T> in;
};

// The vectors of a tile: Bytes wide, or plain scalars for a single column.
template <typename T, int64_t Bytes, bool kScalar = Bytes == sizeof(T)>
struct TileVecOf {
  typedef typename VecNOf<T, Bytes>::type type;
};
template <typename T, int64_t Bytes>
struct TileVecOf<T, Bytes, true> {
  typedef T type;
};
template <typename T, int64_t Bytes>
using TileVec = typename TileVecOf<T, Bytes>::type;

// out[r][c0 + c] = start(r, c) + sum over the operands of sum over row r's entries of
// val[e] * in[idx[e]][c0 + c], for c in [0, NV * lanes): NV vectors of Bytes per row, in kChains
// accumulators (entries taken round robin), so that consecutive additions do not wait on each other.
template <typename T, int64_t Bytes, int64_t NV, Start kStart, int64_t kOperands>
HAPRUNED_INLINE void gather_tile(const SparseOperand<T> (&ops)[kOperands], Rows<const T> start, Rows<T> out,
                                 int64_t c0) {
  using V = TileVec<T, Bytes>;
  constexpr int64_t L = Bytes / sizeof(T), kChains = NV == 1 ? 4 : 2;
  for (int64_t r = 0; r < ops[0].m.rows; ++r) {
    V acc[kChains][NV] = {};
    for (int64_t i = 0; i < NV; ++i) {
      if constexpr (kStart == Start::kMatrix)
        acc[0][i] = load_vec<V>(start.data + r * start.ld + c0 + i * L);
      else if constexpr (kStart == Start::kRowValue)
        acc[0][i] += start.data[r];
    }
    for (const SparseOperand<T>& op : ops) {
      const int32_t *idx = op.m.idx;
      const T* val = op.m.val;
      const T* in = op.in.data + c0;
      int64_t e = op.m.ptr[r];
      const int64_t end = op.m.ptr[r + 1];
      for (; e + kChains <= end; e += kChains)
        for (int64_t k = 0; k < kChains; ++k) {
          const T* x = in + idx[e + k] * op.in.ld;
          for (int64_t i = 0; i < NV; ++i) acc[k][i] += val[e + k] * load_vec<V>(x + i * L);
        }
      for (; e < end; ++e) {
        const T* x = in + idx[e] * op.in.ld;
        for (int64_t i = 0; i < NV; ++i) acc[0][i] += val[e] * load_vec<V>(x + i * L);
      }
    }
    for (int64_t i = 0; i < NV; ++i) {
      V sum = acc[0][i];
      for (int64_t k = 1; k < kChains; ++k) sum += acc[k][i];
      store_vec(out.data + r * out.ld + c0 + i * L, sum);
    }
  }
}

// gather_tile over the columns [c0, c1): tiles of 128 bytes, single vectors, then ever narrower
// vectors down to single elements for the tail.
template <typename T, int64_t Bytes, Start kStart, int64_t kOperands>
HAPRUNED_INLINE void gather_columns(const SparseOperand<T> (&ops)[kOperands], Rows<const T> start, Rows<T> out,
                                    int64_t c0, int64_t c1) {
  constexpr int64_t L = Bytes / sizeof(T);
  constexpr int64_t NV = Bytes >= 32 ? 128 / Bytes : 1;
  if constexpr (NV > 1)
    for (; c0 + NV * L <= c1; c0 += NV * L) gather_tile<T, Bytes, NV, kStart>(ops, start, out, c0);
  for (; c0 + L <= c1; c0 += L) gather_tile<T, Bytes, 1, kStart>(ops, start, out, c0);
  if constexpr (Bytes > static_cast<int64_t>(sizeof(T)))
    if (c0 < c1) gather_columns<T, Bytes / 2, kStart>(ops, start, out, c0, c1);
}

// out[r][c] = start(r, c) + sum over the operands of sum_e val[e] * in[idx[e]][c], for every row r
// of the operands' matrices (all of one row count) and c < cols.
template <class Isa, Start kStart, typename T, int64_t kOperands>
HAPRUNED_INLINE void sparse_times_dense(const SparseOperand<T> (&ops)[kOperands], Rows<const T> start, Rows<T> out,
                                        int64_t cols) {
  gather_columns<T, Isa::kBytes, kStart>(ops, start, out, 0, cols);
}

template <typename T, int64_t Bytes>
HAPRUNED_INLINE T lane_sum(VecN<T, Bytes> v) {
  constexpr int64_t L = Bytes / sizeof(T);
  T sum = 0;
  for (int64_t lane = 0; lane < L; ++lane) sum += v[lane];
  return sum;
}

// The sampled product, accumulated lane-wise: acc[e] += a[r][c..] * b[idx[e]][c..] summed over the
// vectors of columns c < cols, for every entry e of every row r (acc[e]: one vector of lanes per
// entry, kAccBytes apart), so that a weight's gradient at its entries sums over panels of columns
// without reducing lanes per panel (sampled_sums reduces them at the end). cols is a multiple of the
// vector lanes. Entries are taken four at a time, so each row of a is read once for four.
constexpr int64_t kAccBytes = 64;

template <class Isa, typename T>
HAPRUNED_INLINE void add_sampled_products(const int32_t* ptr, const int32_t* idx, int64_t rows, Rows<const T> a,
                                          Rows<const T> b, int64_t cols, T* acc) {
  using V = VecN<T, Isa::kBytes>;
  constexpr int64_t L = Isa::kBytes / sizeof(T), kStride = kAccBytes / sizeof(T);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t end = ptr[r + 1];
    const T* ar = a.data + r * a.ld;
    for (int64_t e0 = ptr[r]; e0 < end; e0 += 4) {
      const int64_t n = std::min<int64_t>(4, end - e0);
      const T* bj[4];
      for (int64_t j = 0; j < 4; ++j) bj[j] = b.data + idx[e0 + std::min(j, n - 1)] * b.ld;
      V sum[4] = {};
      for (int64_t c = 0; c < cols; c += L) {
        const V x = load_vec<V>(ar + c);
        for (int64_t j = 0; j < 4; ++j) sum[j] += x * load_vec<V>(bj[j] + c);
      }
      for (int64_t j = 0; j < n; ++j) {
        T* lanes = acc + (e0 + j) * kStride;
        store_vec(lanes, load_vec<V>(lanes) + sum[j]);
      }
    }
  }
}

// g[e] = the sum of acc[e]'s lanes for entries [begin, end), the lanes of Isa's vectors.
template <class Isa, typename T>
HAPRUNED_INLINE void sampled_sums(const T* acc, int64_t begin, int64_t end, T* g) {
  using V = VecN<T, Isa::kBytes>;
  constexpr int64_t kStride = kAccBytes / sizeof(T);
  for (int64_t e = begin; e < end; ++e) g[e] = lane_sum<T, Isa::kBytes>(load_vec<V>(acc + e * kStride));
}

// sums[r] += sum over columns c of a[r][c], for `rows` rows of `cols` columns (a multiple of the lanes).
template <class Isa, typename T>
HAPRUNED_INLINE void add_row_sums(Rows<const T> a, int64_t rows, int64_t cols, T* sums) {
  using V = VecN<T, Isa::kBytes>;
  constexpr int64_t L = Isa::kBytes / sizeof(T);
  for (int64_t r = 0; r < rows; ++r) {
    V acc = {};
    for (int64_t c = 0; c < cols; c += L) acc += load_vec<V>(a.data + r * a.ld + c);
    sums[r] += lane_sum<T, Isa::kBytes>(acc);
  }
}

// dst[j][i] = src[i][j] for i < rows, j < cols (rows of src and dst ld_src and ld_dst apart): float
// in 8 x 8 blocks transposed in registers, the edges and double element by element.
template <typename T>
HAPRUNED_INLINE void transpose_into(const T* src, int64_t ld_src, T* dst, int64_t ld_dst, int64_t rows, int64_t cols) {
  constexpr int64_t kBlock = 8;
  for (int64_t i0 = 0; i0 < rows; i0 += kBlock)
    for (int64_t j0 = 0; j0 < cols; j0 += kBlock) {
      const int64_t i1 = std::min(rows, i0 + kBlock), j1 = std::min(cols, j0 + kBlock);
      if constexpr (std::is_same_v<T, float>) {
        if (i1 - i0 == kBlock && j1 - j0 == kBlock) {
          Vec<float> r[8];
          for (int64_t i = 0; i < 8; ++i) r[i] = load_vec<Vec<float>>(src + (i0 + i) * ld_src + j0);
          transpose8(r);
          for (int64_t j = 0; j < 8; ++j) store_vec(dst + (j0 + j) * ld_dst + i0, r[j]);
          continue;
        }
      }
      for (int64_t j = j0; j < j1; ++j)
        for (int64_t i = i0; i < i1; ++i) dst[j * ld_dst + i] = src[i * ld_src + j];
    }
}

// dst[i][j] = src[i][j] for i < rows, j < cols: whole vectors, then elements (rows are short: a
// library memcpy per row would cost more than the copy).
template <class Isa, typename T>
HAPRUNED_INLINE void copy_rows(const T* src, int64_t ld_src, T* dst, int64_t ld_dst, int64_t rows, int64_t cols) {
  using V = VecN<T, Isa::kBytes>;
  constexpr int64_t L = Isa::kBytes / sizeof(T);
  for (int64_t i = 0; i < rows; ++i) {
    const T* s = src + i * ld_src;
    T* d = dst + i * ld_dst;
    int64_t j = 0;
    for (; j + L <= cols; j += L) store_vec(d + j, load_vec<V>(s + j));
    for (; j < cols; ++j) d[j] = s[j];
  }
}

}  // namespace hapruned
