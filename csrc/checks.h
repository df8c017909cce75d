// Input checks shared by the kernels of every backend. The Python wrappers validate first with
// friendlier errors; these guard direct torch.ops.hapruned.* calls against out-of-bounds access.
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

// Shapes of an LSTM call: x [G,B,I] (cell) or [T,G,B,I] (sequence), states [G,B,H].
struct LstmShape {
  int64_t T, G, B, I, H;
};

inline LstmShape check_lstm_inputs(const at::Tensor& x, const at::Tensor& h, const at::Tensor& c,
                                   const at::Tensor& w_ih, const at::Tensor& w_hh,
                                   const c10::optional<at::Tensor>& mask_ih,
                                   const c10::optional<at::Tensor>& mask_hh, bool sequence,
                                   bool bool_masks = false) {
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "x must be float32 or float64, got ", x.scalar_type());
  check_tensor(x, "x", sequence ? 4 : 3, x);
  check_tensor(h, "h", 3, x);
  check_tensor(c, "c", 3, x);
  check_tensor(w_ih, "w_ih", 3, x);
  check_tensor(w_hh, "w_hh", 3, x);
  LstmShape s;
  s.T = sequence ? x.size(0) : 1;
  s.G = x.size(-3);
  s.B = x.size(-2);
  s.I = x.size(-1);
  s.H = h.size(2);
  TORCH_CHECK(!sequence || s.T >= 1, "x must hold at least one time step");
  check_shape(h, "h", {s.G, s.B, s.H});
  check_shape(c, "c", {s.G, s.B, s.H});
  check_shape(w_ih, "w_ih", {s.G, 4 * s.H, s.I});
  check_shape(w_hh, "w_hh", {s.G, 4 * s.H, s.H});
  // Masks have the weights' dtype, or bool where the kernel reads bool masks (bool_masks).
  for (auto [mask, weight, name] : {std::tuple{&mask_ih, &w_ih, "mask_ih"}, {&mask_hh, &w_hh, "mask_hh"}}) {
    if (!*mask) continue;
    const at::Tensor& m = **mask;
    const bool is_bool = bool_masks && m.scalar_type() == at::kBool;
    check_tensor(m, name, 3, is_bool ? m : x);
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
