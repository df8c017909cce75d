// The compressed layout of a grouped sparse weight [G, R, K], as hapruned.ops.sparse_layout builds
// it from a keep-mask: one int32 tensor
//
//   [row_ptr (G*R + 1) | col_ptr (G*K + 1) | col_idx (nnz) | row_idx (nnz)]
//
// holding the kept entries twice, by rows (row_ptr, col_idx: group g's row r spans entries
// row_ptr[g*R + r] .. row_ptr[g*R + r + 1]) and by columns (col_ptr, row_idx), entries counted from
// the first group's. The products read a row (an output of the forward) or a column (an output of
// the backward) as a gather over its own entries; the values are read from the dense weight at the
// entries, so a weight outside the pattern is never read and gets no gradient.
#pragma once
#include <ATen/ATen.h>

#include <algorithm>
#include <limits>

#include "sparse.h"

namespace hapruned {

struct SparseLayout {
  int64_t G, R, K, nnz;
  const int32_t* row_ptr;  // [G*R + 1]
  const int32_t* col_ptr;  // [G*K + 1]
  const int32_t* col_idx;  // [nnz], in row order
  const int32_t* row_idx;  // [nnz], in column order

  // Group g's rows (val: values in row order) and columns (val: values in column order).
  template <typename T>
  CompressedRows<T> rows(int64_t g, const T* val) const {
    return {row_ptr + g * R, col_idx, val, R};
  }
  template <typename T>
  CompressedRows<T> columns(int64_t g, const T* val) const {
    return {col_ptr + g * K, row_idx, val, K};
  }

  // The values of group g's entries read from its dense weight w [R, K], in row and in column order.
  template <typename T>
  void gather_row_values(int64_t g, const T* w, T* val) const {
    for (int64_t r = 0; r < R; ++r)
      for (int64_t e = row_ptr[g * R + r]; e < row_ptr[g * R + r + 1]; ++e) val[e] = w[r * K + col_idx[e]];
  }
  template <typename T>
  void gather_column_values(int64_t g, const T* w, T* val) const {
    for (int64_t k = 0; k < K; ++k)
      for (int64_t e = col_ptr[g * K + k]; e < col_ptr[g * K + k + 1]; ++e) val[e] = w[row_idx[e] * K + k];
  }

  // grad [R, K] += the gradients of group g's entries (in row order) at their places.
  template <typename T>
  void scatter_row_values(int64_t g, const T* val, T* grad) const {
    for (int64_t r = 0; r < R; ++r)
      for (int64_t e = row_ptr[g * R + r]; e < row_ptr[g * R + r + 1]; ++e) grad[r * K + col_idx[e]] += val[e];
  }
};

namespace detail {
// Whether ptr[0 .. n] runs from 0 to nnz without decreasing (plain reductions, which vectorise).
inline bool valid_pointers(const int32_t* ptr, int64_t n, int64_t nnz) {
  bool sorted = true;
  for (int64_t i = 0; i < n; ++i) sorted &= ptr[i] <= ptr[i + 1];
  return sorted && ptr[0] == 0 && ptr[n] == nnz;
}
inline bool indices_below(const int32_t* idx, int64_t n, int64_t bound) {
  int32_t lo = 0, hi = 0;
  for (int64_t i = 0; i < n; ++i) {
    lo = std::min(lo, idx[i]);
    hi = std::max(hi, idx[i]);
  }
  return lo >= 0 && (n == 0 || hi < bound);
}
}  // namespace detail

// The layout of a weight [G, R, K], checked so that no product reads or writes out of bounds: sizes,
// pointers from 0 to nnz without decreasing, the same entries per group by rows and by columns,
// indices in range. (That the two orders hold the same entries is the builder's guarantee.)
inline SparseLayout check_layout(const at::Tensor& layout, const char* name, const at::Tensor& like, int64_t G,
                                 int64_t R, int64_t K) {
  TORCH_CHECK(layout.scalar_type() == at::kInt, name, " must be int32, got ", layout.scalar_type());
  TORCH_CHECK(layout.dim() == 1, name, " must be a 1-D tensor, got shape ", layout.sizes());
  TORCH_CHECK(layout.is_contiguous(), name, " must be contiguous");
  TORCH_CHECK(layout.device() == like.device(), name, " must be on ", like.device(), ", got ", layout.device());
  const int64_t pointers = G * R + 1 + G * K + 1, extra = layout.numel() - pointers;
  TORCH_CHECK(extra >= 0 && extra % 2 == 0 && extra / 2 <= std::numeric_limits<int32_t>::max(), name,
              " must hold G*R + 1 + G*K + 1 pointers (", pointers, " for a [", G, ", ", R, ", ", K,
              "] weight) and two indices per entry, got ", layout.numel(), " elements");
  const int32_t* data = layout.const_data_ptr<int32_t>();
  SparseLayout s{G, R, K, extra / 2, data, data + G * R + 1, data + pointers, data + pointers + extra / 2};
  TORCH_CHECK(detail::valid_pointers(s.row_ptr, G * R, s.nnz) && detail::valid_pointers(s.col_ptr, G * K, s.nnz),
              name, ": row and column pointers must run from 0 to nnz = ", s.nnz, " without decreasing");
  for (int64_t g = 1; g < G; ++g)
    TORCH_CHECK(s.row_ptr[g * R] == s.col_ptr[g * K], name, ": group ", g,
                " starts at a different entry by rows and by columns");
  TORCH_CHECK(detail::indices_below(s.col_idx, s.nnz, K), name, ": column indices must lie in [0, ", K, ")");
  TORCH_CHECK(detail::indices_below(s.row_idx, s.nnz, R), name, ": row indices must lie in [0, ", R, ")");
  return s;
}

}  // namespace hapruned
