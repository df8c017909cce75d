// CPU sparse LSTM step: one step of one layer of a pruned actor, for inference.
//
// The layer's two weight matrices are one CSR matrix W = [W_ih | W_hh] ([4H, I + H]): row_ptr int32
// [4H + 1], col_idx uint8 / int16 / int32 [nnz], values float32 / float16 [nnz] (float16 widened on
// load, computed in float32). Each row's product with [x | h] is a short gather loop over its
// nonzeros (~5% of I + H at 95% sparsity), then the gates run in the same call with the dense
// kernels' gate loop. Work this small runs on the calling thread.
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "../checks.h"
#include "gates.h"

namespace hapruned {
namespace {

// Batch rows that share one pass over the nonzeros: one 8-lane accumulator (an AVX register).
constexpr int64_t kBatchTile = 8;

template <typename V>
HAPRUNED_INLINE float widen(V value) {
  if constexpr (std::is_same_v<V, at::Half>) {
#ifdef __FLT16_MAX__  // the compiler has _Float16 (GCC >= 12, clang >= 15 on x86-64; aarch64)
    // one F16C instruction in the AVX2 clone, where c10::Half converts by bit twiddling
    _Float16 half;
    std::memcpy(&half, &value, sizeof(half));
    return static_cast<float>(half);
#else
    return static_cast<float>(value);
#endif
  } else {
    return value;
  }
}

// pre[b * 4H + r] = W[r] . z_b for every row r and batch row b. Batch 1: z = [x | h] ([I + H]);
// otherwise z is [I + H][padded] (each input's batch values side by side, zero past B) and the
// rows are swept once per tile of kBatchTile batch rows.
template <typename V, typename C>
HAPRUNED_SIMD_CLONES void sparse_products(const int32_t* row_ptr, const C* col, const V* val, const float* z,
                                          int64_t padded, int64_t rows, int64_t B, float* pre) {
  if (B == 1) {
    for (int64_t r = 0; r < rows; ++r) {
      // four accumulators, so consecutive products do not wait on one another's additions
      float acc[4] = {};
      int32_t k = row_ptr[r];
      const int32_t end = row_ptr[r + 1];
      for (; k + 4 <= end; k += 4)
        for (int32_t u = 0; u < 4; ++u) acc[u] += widen(val[k + u]) * z[col[k + u]];
      for (; k < end; ++k) acc[0] += widen(val[k]) * z[col[k]];
      pre[r] = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    }
    return;
  }
  for (int64_t b0 = 0; b0 < B; b0 += kBatchTile) {
    const int64_t tile = std::min(kBatchTile, B - b0);
    for (int64_t r = 0; r < rows; ++r) {
      float acc[kBatchTile] = {};
      for (int32_t k = row_ptr[r]; k < row_ptr[r + 1]; ++k) {
        const float w = widen(val[k]);
        const float* zk = z + static_cast<int64_t>(col[k]) * padded + b0;
#pragma omp simd
        for (int64_t b = 0; b < kBatchTile; ++b) acc[b] += w * zk[b];
      }
      for (int64_t b = 0; b < tile; ++b) pre[(b0 + b) * rows + r] = acc[b];
    }
  }
}

HAPRUNED_SIMD_CLONES void gates(float* pre, const float* bias, const float* c, float* c_new, float* h_new, int64_t B,
                                int64_t H) {
  for (int64_t b = 0; b < B; ++b) gates_forward_row(pre + b * 4 * H, bias, c + b * H, c_new + b * H, h_new + b * H, H);
}

// The CSR arrays must describe a [rows, cols] matrix: indices in range, row pointers non-decreasing
// from 0 to nnz. Checked on every call (a pass over nnz index bytes, small beside the products).
template <typename C>
void check_csr(const int32_t* row_ptr, const C* col, int64_t rows, int64_t cols, int64_t nnz) {
  TORCH_CHECK(row_ptr[0] == 0 && row_ptr[rows] == nnz, "row_ptr must run from 0 to nnz = ", nnz, ", got ",
              row_ptr[0], " .. ", row_ptr[rows]);
  bool sorted = true;
  for (int64_t r = 0; r < rows; ++r) sorted &= row_ptr[r] <= row_ptr[r + 1];
  TORCH_CHECK(sorted, "row_ptr must be non-decreasing");
  C lo = 0, hi = 0;  // a plain reduction, which vectorises
  for (int64_t k = 0; k < nnz; ++k) {
    lo = std::min(lo, col[k]);
    hi = std::max(hi, col[k]);
  }
  TORCH_CHECK(lo >= 0 && hi < cols, "col_idx must lie in [0, input + hidden = ", cols, "), got ", int64_t(lo), " .. ",
              int64_t(hi));
}

std::tuple<at::Tensor, at::Tensor> sparse_lstm_step_cpu(const at::Tensor& x, const at::Tensor& h, const at::Tensor& c,
                                                         const at::Tensor& row_ptr, const at::Tensor& col_idx,
                                                         const at::Tensor& values, const at::Tensor& bias) {
  TORCH_CHECK(x.scalar_type() == at::kFloat, "x must be float32, got ", x.scalar_type());
  check_tensor(x, "x", 2, x);
  check_tensor(h, "h", 2, x);
  check_tensor(c, "c", 2, x);
  check_tensor(bias, "bias", 1, x);
  const int64_t B = x.size(0), I = x.size(1), H = h.size(1), rows = 4 * H, cols = I + H;
  check_shape(h, "h", {B, H});
  check_shape(c, "c", {B, H});
  check_shape(bias, "bias", {rows});
  TORCH_CHECK(row_ptr.scalar_type() == at::kInt, "row_ptr must be int32, got ", row_ptr.scalar_type());
  check_tensor(row_ptr, "row_ptr", 1, row_ptr);
  check_shape(row_ptr, "row_ptr", {rows + 1});
  const auto index_type = col_idx.scalar_type();
  TORCH_CHECK(index_type == at::kByte || index_type == at::kShort || index_type == at::kInt,
              "col_idx must be uint8, int16 or int32, got ", index_type);
  check_tensor(col_idx, "col_idx", 1, col_idx);
  TORCH_CHECK(values.scalar_type() == at::kFloat || values.scalar_type() == at::kHalf,
              "values must be float32 or float16, got ", values.scalar_type());
  check_tensor(values, "values", 1, values);
  const int64_t nnz = col_idx.size(0);
  check_shape(values, "values", {nnz});
  for (const at::Tensor* t : {&row_ptr, &col_idx, &values})
    TORCH_CHECK(t->device() == x.device(), "the CSR arrays must be on ", x.device(), ", got ", t->device());

  at::Tensor h_new = at::empty_like(h), c_new = at::empty_like(c);
  if (B == 0 || H == 0) return {h_new, c_new};
  // Batch 1 reads [x | h] as it is; larger batches transpose it into zero-padded tiles.
  const int64_t padded = B == 1 ? 1 : (B + kBatchTile - 1) / kBatchTile * kBatchTile;
  // scratch reused across calls (no allocation per step); thread_local, as calls may come from any thread
  thread_local std::vector<float> z, pre;
  z.assign(cols * padded, 0.f);
  pre.resize(B * rows);
  const float *xp = x.data_ptr<float>(), *hp = h.data_ptr<float>();
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t i = 0; i < I; ++i) z[i * padded + b] = xp[b * I + i];
    for (int64_t j = 0; j < H; ++j) z[(I + j) * padded + b] = hp[b * H + j];
  }
  const int32_t* rp = row_ptr.data_ptr<int32_t>();
  auto run = [&](const auto* col) {
    check_csr(rp, col, rows, cols, nnz);
    if (values.scalar_type() == at::kHalf)
      sparse_products(rp, col, values.data_ptr<at::Half>(), z.data(), padded, rows, B, pre.data());
    else
      sparse_products(rp, col, values.data_ptr<float>(), z.data(), padded, rows, B, pre.data());
  };
  if (index_type == at::kByte)
    run(col_idx.data_ptr<uint8_t>());
  else if (index_type == at::kShort)
    run(col_idx.data_ptr<int16_t>());
  else
    run(col_idx.data_ptr<int32_t>());
  gates(pre.data(), bias.data_ptr<float>(), c.data_ptr<float>(), c_new.data_ptr<float>(), h_new.data_ptr<float>(), B,
        H);
  return {h_new, c_new};
}

}  // namespace

TORCH_LIBRARY_IMPL(hapruned, CPU, m) { m.impl("sparse_lstm_step", &sparse_lstm_step_cpu); }

}  // namespace hapruned
