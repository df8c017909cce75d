// Input checks shared by the kernels of every backend. The Python wrappers validate first with
// friendlier errors; these guard direct torch.ops.hapruned.* calls against out-of-bounds access:
// every tensor a kernel reads through a raw pointer is checked here (shape, dtype, device,
// contiguity) or made contiguous by the kernel first.
#pragma once
#include <ATen/ATen.h>

#include <tuple>

namespace hapruned {

inline void check_tensor(const at::Tensor& t, const char* name, int64_t ndim, const at::Tensor& like) {
  TORCH_CHECK(t.dim() == ndim, name, " must be a ", ndim, "-D tensor, got shape ", t.sizes());
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), name, " must have dtype ", like.scalar_type(), ", got ",
              t.scalar_type());
  TORCH_CHECK(t.device() == like.device(), name, " must be on ", like.device(), ", got ", t.device());
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

inline void check_shape(const at::Tensor& t, const char* name, at::IntArrayRef shape) {
  TORCH_CHECK(t.sizes() == shape, name, " must have shape ", shape, ", got ", t.sizes());
}

// check_tensor for a tensor of the given shape, then its shape.
inline void check_like(const at::Tensor& t, const char* name, const at::Tensor& like, at::IntArrayRef shape) {
  check_tensor(t, name, static_cast<int64_t>(shape.size()), like);
  check_shape(t, name, shape);
}

// Shapes of an LSTM call: x [G,B,I] (cell) or [T,G,B,I] (sequence), states [G,B,H].
struct LstmShape {
  int64_t T, G, B, I, H;
};

inline LstmShape check_lstm_inputs(const at::Tensor& x, const at::Tensor& h, const at::Tensor& c,
                                   const at::Tensor& w_ih, const at::Tensor& w_hh,
                                   const c10::optional<at::Tensor>& mask_ih,
                                   const c10::optional<at::Tensor>& mask_hh, bool sequence) {
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "x must be float32 or float64, got ", x.scalar_type());
  check_tensor(x, "x", sequence ? 4 : 3, x);
  const char* h_name = sequence ? "h0" : "h";  // the schema's names
  const char* c_name = sequence ? "c0" : "c";
  check_tensor(h, h_name, 3, x);
  check_tensor(c, c_name, 3, x);
  check_tensor(w_ih, "w_ih", 3, x);
  check_tensor(w_hh, "w_hh", 3, x);
  LstmShape s;
  s.T = sequence ? x.size(0) : 1;
  s.G = x.size(-3);
  s.B = x.size(-2);
  s.I = x.size(-1);
  s.H = h.size(2);
  TORCH_CHECK(!sequence || s.T >= 1, "x must hold at least one time step");
  check_shape(h, h_name, {s.G, s.B, s.H});
  check_shape(c, c_name, {s.G, s.B, s.H});
  check_shape(w_ih, "w_ih", {s.G, 4 * s.H, s.I});
  check_shape(w_hh, "w_hh", {s.G, 4 * s.H, s.H});
  // Masks are bool or have the weights' dtype; both multiply the weights.
  for (auto [mask, weight, name] : {std::tuple{&mask_ih, &w_ih, "mask_ih"}, {&mask_hh, &w_hh, "mask_hh"}}) {
    if (!*mask) continue;
    const at::Tensor& m = **mask;
    TORCH_CHECK(m.scalar_type() == at::kBool || m.scalar_type() == x.scalar_type(), name, " must be bool or ",
                x.scalar_type(), ", got ", m.scalar_type());
    check_tensor(m, name, 3, m.scalar_type() == at::kBool ? m : x);
    TORCH_CHECK(m.device() == x.device(), name, " must be on ", x.device(), ", got ", m.device());
    check_shape(m, name, weight->sizes());
  }
  return s;
}

inline void check_bias(const at::Tensor& bias, const at::Tensor& x, const LstmShape& s) {
  check_tensor(bias, "bias", 2, x);
  check_shape(bias, "bias", {s.G, 4 * s.H});
}

inline void check_prune_inputs(const at::Tensor& weight, const at::Tensor& n_prune) {
  TORCH_CHECK(weight.dim() == 2, "weight must be a 2-D tensor [groups, size], got shape ", weight.sizes());
  TORCH_CHECK(weight.scalar_type() == at::kFloat || weight.scalar_type() == at::kDouble,
              "weight must be float32 or float64, got ", weight.scalar_type());
  TORCH_CHECK(weight.is_contiguous(), "weight must be contiguous");
  TORCH_CHECK(n_prune.scalar_type() == at::kLong, "n_prune must be int64, got ", n_prune.scalar_type());
  TORCH_CHECK(n_prune.device() == weight.device(), "n_prune must be on ", weight.device(), ", got ",
              n_prune.device());
  TORCH_CHECK(n_prune.dim() == 1 && n_prune.size(0) == weight.size(0), "n_prune must have shape [",
              weight.size(0), "], got ", n_prune.sizes());
}

}  // namespace hapruned
