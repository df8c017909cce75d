// CPU sparse grouped linear layer (an actor's head), forward and backward: out[l, g, b] =
// W[g] x[l, g, b] + bias[g], the dense weight read only at its layout's entries (sparse_layout.h), so
// a masked weight is never read and gets no gradient. The rows stay batch-major, as the module's
// tensors are: a head has few outputs and entries per row, so each output is a short gather over its
// row's entries; each group runs on one thread.
#include <torch/library.h>

#include <algorithm>
#include <tuple>

#include "../checks.h"
#include "isa.h"
#include "parallel.h"
#include "sparse_layout.h"

namespace hapruned {
namespace {

struct LinearShape {
  int64_t L, G, B, K, R;  // leading rows, groups, batch, inputs, outputs
};

template <typename T>
struct LinearCall {
  LinearShape s;
  SparseLayout w;
  const T *x, *weight, *bias, *grad_out;
  T *out, *grad_x, *grad_weight, *grad_bias;
  T *val, *entry;  // the entries' values and gradients, in row order
};

template <class Isa, typename T>
HAPRUNED_INLINE void linear_forward_group(const LinearCall<T>& a, int64_t g) {
  const auto [L, G, B, K, R] = a.s;
  a.w.gather_row_values(g, a.weight + g * R * K, a.val);
  const CompressedRows<T> w = a.w.rows(g, a.val);
  const T* bias = a.bias + g * R;
  for (int64_t l = 0; l < L; ++l)
    for (int64_t b = 0; b < B; ++b) {
      const int64_t row = (l * G + g) * B + b;
      const T* x = a.x + row * K;
      T* out = a.out + row * R;
      for (int64_t r = 0; r < R; ++r) {
        T even = bias[r], odd = 0;
        int64_t e = w.ptr[r];
        for (; e + 2 <= w.ptr[r + 1]; e += 2) {
          even += w.val[e] * x[w.idx[e]];
          odd += w.val[e + 1] * x[w.idx[e + 1]];
        }
        if (e < w.ptr[r + 1]) even += w.val[e] * x[w.idx[e]];
        out[r] = even + odd;
      }
    }
}

template <class Isa, typename T>
HAPRUNED_INLINE void linear_backward_group(const LinearCall<T>& a, int64_t g) {
  const auto [L, G, B, K, R] = a.s;
  a.w.gather_row_values(g, a.weight + g * R * K, a.val);
  const CompressedRows<T> w = a.w.rows(g, a.val);
  T* entry = a.entry;
  for (int64_t e = w.ptr[0]; e < w.ptr[R]; ++e) entry[e] = 0;
  T* grad_bias = a.grad_bias + g * R;
  for (int64_t l = 0; l < L; ++l)
    for (int64_t b = 0; b < B; ++b) {
      const int64_t row = (l * G + g) * B + b;
      const T *x = a.x + row * K, *grad_out = a.grad_out + row * R;
      T* grad_x = a.grad_x + row * K;
      std::fill(grad_x, grad_x + K, T(0));
      for (int64_t r = 0; r < R; ++r) {
        const T go = grad_out[r];
        grad_bias[r] += go;
        for (int64_t e = w.ptr[r]; e < w.ptr[r + 1]; ++e) {
          entry[e] += go * x[w.idx[e]];
          grad_x[w.idx[e]] += go * w.val[e];
        }
      }
    }
  a.w.scatter_row_values(g, entry, a.grad_weight + g * R * K);
}

LinearShape check_linear(const at::Tensor& x, const at::Tensor& weight, const char* x_name) {
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, x_name,
              " must be float32 or float64, got ", x.scalar_type());
  check_tensor(x, x_name, 4, x);
  TORCH_CHECK(x.device().is_cpu(), x_name, " must be a CPU tensor, got ", x.device());
  check_tensor(weight, "weight", 3, x);
  return {x.size(0), x.size(1), x.size(2), weight.size(2), weight.size(1)};
}

at::Tensor sparse_linear_cpu(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                             const at::Tensor& layout) {
  const LinearShape s = check_linear(x, weight, "x");
  check_shape(x, "x", {s.L, s.G, s.B, s.K});
  check_shape(weight, "weight", {s.G, s.R, s.K});
  check_like(bias, "bias", x, {s.G, s.R});
  const SparseLayout w = check_layout(layout, "layout", x, s.G, s.R, s.K);
  at::Tensor out = at::empty({s.L, s.G, s.B, s.R}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sparse_linear_cpu", [&] {
    at::Tensor val = at::empty({w.nnz}, x.options());
    const LinearCall<scalar_t> call{s, w, x.const_data_ptr<scalar_t>(), weight.const_data_ptr<scalar_t>(),
                                    bias.const_data_ptr<scalar_t>(), nullptr, out.data_ptr<scalar_t>(),
                                    nullptr, nullptr, nullptr, val.data_ptr<scalar_t>(), nullptr};
    parallel_for(0, s.G, grain_for(s.L * s.B * (w.nnz / std::max<int64_t>(s.G, 1) + s.R)), [&](int64_t begin, int64_t end) {
      with_isa([&](auto isa) HAPRUNED_ISA_BODY {
        for (int64_t g = begin; g < end; ++g) linear_forward_group<decltype(isa)>(call, g);
      });
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> sparse_linear_backward_cpu(const at::Tensor& grad_out,
                                                                          const at::Tensor& x,
                                                                          const at::Tensor& weight,
                                                                          const at::Tensor& layout) {
  const LinearShape s = check_linear(x, weight, "x");
  check_shape(weight, "weight", {s.G, s.R, s.K});
  check_like(grad_out, "grad_out", x, {s.L, s.G, s.B, s.R});
  const SparseLayout w = check_layout(layout, "layout", x, s.G, s.R, s.K);
  at::Tensor grad_x = at::empty_like(x), grad_weight = at::zeros_like(weight);
  at::Tensor grad_bias = at::zeros({s.G, s.R}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sparse_linear_backward_cpu", [&] {
    at::Tensor val = at::empty({w.nnz}, x.options()), entry = at::empty({w.nnz}, x.options());
    const LinearCall<scalar_t> call{s, w, x.const_data_ptr<scalar_t>(), weight.const_data_ptr<scalar_t>(),
                                    nullptr, grad_out.const_data_ptr<scalar_t>(), nullptr,
                                    grad_x.data_ptr<scalar_t>(), grad_weight.data_ptr<scalar_t>(),
                                    grad_bias.data_ptr<scalar_t>(), val.data_ptr<scalar_t>(),
                                    entry.data_ptr<scalar_t>()};
    parallel_for(0, s.G, grain_for(s.L * s.B * (2 * w.nnz / std::max<int64_t>(s.G, 1) + s.K)),
                 [&](int64_t begin, int64_t end) {
                   with_isa([&](auto isa) HAPRUNED_ISA_BODY {
                     for (int64_t g = begin; g < end; ++g) linear_backward_group<decltype(isa)>(call, g);
                   });
                 });
  });
  return {grad_x, grad_weight, grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(hapruned, CPU, m) {
  m.impl("sparse_linear", &sparse_linear_cpu);
  m.impl("sparse_linear_backward", &sparse_linear_backward_cpu);
}

}  // namespace hapruned
