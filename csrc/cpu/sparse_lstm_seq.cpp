// CPU sparse LSTM layer for training: T steps of G groups whose weights are dense parameters read
// only at the entries of a compressed layout (sparse_layout.h), forward and backward, so the cost
// follows the kept weights. A masked weight is never read and gets no gradient (docs/design.md §3).
//
// Each group runs on one thread, all its steps, in feature-major arrays (a feature's batch values
// side by side, the vector lanes):
// - the input projection of all T*B columns, panel by panel: a panel puts several steps side by side
//   (about 128 columns), so that a small batch still fills the vectors;
// - each step's recurrent product (B columns) starting from the projection's columns, then the gates
//   of the step's H*B units in one vectorised loop (gates.h);
// - the backward: each step's gate gradients and the recurrent gradient through the columns of
//   W_hh; at each panel's first step, the panel's share of the weight gradients at the entries only
//   (sampled products of the gate gradients with the saved input and hidden panels), of the bias
//   gradient and of the input gradient through the columns of W_ih.
// The forward saves the input and hidden panels, the activated gates and the cell states for the
// backward, in these layouts (inference skips them: save = false).
#include <torch/library.h>

#include <algorithm>
#include <tuple>

#include "../checks.h"
#include "gates.h"
#include "isa.h"
#include "parallel.h"
#include "sparse_layout.h"

namespace hapruned {
namespace {

// The panels of T steps of B columns: `steps` steps side by side per panel, about kPanelColumns
// columns (one step when B is larger), `panels` panels, rows `padded` elements apart: a multiple of
// 16, and an odd multiple of it, so that the rows of a panel do not all fall into a few cache sets.
// The fake kernels of hapruned/ops/library.py compute the same.
struct PanelShape {
  int64_t batch, steps, padded, panels;

  // Where step t's columns start in a panel array of `rows` rows.
  int64_t step_offset(int64_t rows, int64_t t) const { return (t / steps) * rows * padded + (t % steps) * batch; }
};

constexpr int64_t kPanelColumns = 128;

PanelShape panel_shape(int64_t T, int64_t B) {
  int64_t steps = 1;
  if (B > 0 && B < kPanelColumns && T > 1) {
    const int64_t panels = (T * B + kPanelColumns - 1) / kPanelColumns;
    steps = (T + panels - 1) / panels;
  }
  const int64_t lines = (steps * B + 15) / 16;
  return {B, steps, (lines + 1 - lines % 2) * 16, (T + steps - 1) / steps};
}

// A batch wider than kPanelColumns runs in chunks of at most that many columns, one after the
// other, each through all the steps: the columns are independent, and a chunk's arrays stay in
// cache. The panels of such a batch hold one step each, all its columns; a chunk reads its own. A
// chunk's gates and cell states are one block ([T, 4H, chunk] and [T + 1, H, chunk]), the blocks one
// after the other in the group's [T, 4H, B] and [T + 1, H, B].
struct BatchChunk {
  int64_t b0, cols;  // columns [b0, b0 + cols)
};

template <typename Body>
HAPRUNED_INLINE void for_each_chunk(int64_t B, const Body& body) {
  for (int64_t b0 = 0; b0 < B; b0 += kPanelColumns) body(BatchChunk{b0, std::min(kPanelColumns, B - b0)});
}

template <typename T>
struct ForwardCall {
  LstmShape s;
  PanelShape pn;
  SparseLayout ih, hh;
  bool save;                              // keep what the backward reads
  const T *x, *h0, *c0, *w_ih, *w_hh, *bias;
  T *y, *c_n;                             // outputs, [T, G, B, H] and [G, B, H]
  T *x_panels, *h_panels, *gates, *cs;    // with save: [G, P, I, padded], [G, P, H, padded] (slot t: h_{t-1}),
                                          // [G, T, 4H, B], [G, T + 1, H, B] (c0 first), by chunks
  T *val_ih, *val_hh;                     // the entries' values, in row order
  T* work;                                // per group, work_size elements

  // A group's scratch: a panel's projection [4H, padded], h_t [H, chunk], and without save one panel
  // of inputs [I, padded] (its padding zeroed), one step's gates [4H, chunk], two cell states.
  static int64_t work_size(const LstmShape& s, const PanelShape& pn) {
    return (4 * s.H + s.I) * pn.padded + 7 * s.H * std::min(s.B, kPanelColumns);
  }
};

// A panel of one step (B >= kPanelColumns, or T = 1) takes its input and recurrent products in one
// pass, straight into the step's gates; wider panels take the input projection of all their steps
// at once, which each step's recurrent product starts from.
template <class Isa, typename T>
HAPRUNED_INLINE void forward_chunk(const ForwardCall<T>& a, int64_t g, BatchChunk chunk) {
  const auto [steps, G, B, I, H] = a.s;
  const PanelShape& pn = a.pn;
  const int64_t R = 4 * H, ld = pn.padded, b0 = chunk.b0, C = chunk.cols;
  T* pre = a.work + g * ForwardCall<T>::work_size(a.s, pn);
  T* hbuf = pre + R * ld;
  T* x_work = hbuf + H * C;
  T* gates_work = x_work + I * ld;
  T* cs_work = gates_work + R * C;
  if (!a.save) std::fill(x_work, x_work + I * ld, T(0));
  const auto x_panel = [&](int64_t p) { return a.save ? a.x_panels + ((g * pn.panels + p) * I * ld + b0) : x_work; };
  T* hp = a.h_panels + (g * pn.panels * H * ld + b0);
  T* gates = a.gates + g * steps * R * B + steps * R * b0;
  T* cs = a.cs + g * (steps + 1) * H * B + (steps + 1) * H * b0;
  const auto gates_at = [&](int64_t t) { return a.save ? gates + t * R * C : gates_work; };
  const auto cs_at = [&](int64_t t) { return a.save ? cs + t * H * C : cs_work + (t % 2) * H * C; };
  const auto batch_rows = [&](auto* base, int64_t t, int64_t width) { return base + ((t * G + g) * B + b0) * width; };
  transpose_into(batch_rows(a.h0, 0, H), H, hbuf, C, C, H);
  if (a.save) copy_rows<Isa>(hbuf, C, hp, ld, H, C);
  transpose_into(batch_rows(a.c0, 0, H), H, cs_at(0), C, C, H);
  const CompressedRows<T> w_ih = a.ih.rows(g, a.val_ih), w_hh = a.hh.rows(g, a.val_hh);
  const Rows<const T> bias{a.bias + g * R, 0}, h_prev{hbuf, C};
  for (int64_t t = 0; t < steps; ++t) {
    const int64_t p = t / pn.steps, column = (t % pn.steps) * C;
    if (column == 0)  // the panel's inputs
      for (int64_t u = t; u < std::min(steps, t + pn.steps); ++u)
        transpose_into(batch_rows(a.x, u, I), I, x_panel(p) + (u - t) * C, ld, C, I);
    T* gates_t = gates_at(t);
    if (pn.steps == 1) {
      const SparseOperand<T> ops[] = {{w_ih, {x_panel(p), ld}}, {w_hh, h_prev}};
      sparse_times_dense<Isa, Start::kRowValue>(ops, bias, {gates_t, C}, C);
    } else {
      if (column == 0) {
        const SparseOperand<T> projection[] = {{w_ih, {x_panel(p), ld}}};
        sparse_times_dense<Isa, Start::kRowValue>(projection, bias, {pre, ld}, ld);
      }
      const SparseOperand<T> recurrent[] = {{w_hh, h_prev}};
      sparse_times_dense<Isa, Start::kMatrix>(recurrent, {pre + column, ld}, {gates_t, C}, C);
    }
    gates_forward_units(gates_t, cs_at(t), cs_at(t + 1), hbuf, H * C);
    if (a.save && t + 1 < steps) copy_rows<Isa>(hbuf, C, hp + pn.step_offset(H, t + 1), ld, H, C);
    transpose_into(hbuf, C, batch_rows(a.y, t, H), H, H, C);
  }
  transpose_into(cs_at(steps), C, batch_rows(a.c_n, 0, H), H, H, C);
}

template <class Isa, typename T>
HAPRUNED_INLINE void forward_group(const ForwardCall<T>& a, int64_t g) {
  const int64_t R = 4 * a.s.H;
  a.ih.gather_row_values(g, a.w_ih + g * R * a.s.I, a.val_ih);
  a.hh.gather_row_values(g, a.w_hh + g * R * a.s.H, a.val_hh);
  for_each_chunk(a.s.B, [&](BatchChunk chunk) HAPRUNED_ISA_BODY { forward_chunk<Isa>(a, g, chunk); });
}

template <typename T>
struct BackwardCall {
  LstmShape s;
  PanelShape pn;
  SparseLayout ih, hh;
  const T *grad_y, *grad_c_n;  // grad_c_n: nullptr when none arrives
  const T *w_ih, *w_hh, *x_panels, *h_panels, *gates, *cs;
  T *grad_x, *grad_h0, *grad_c0, *grad_w_ih, *grad_w_hh, *grad_bias;  // the weight and bias gradients zeroed;
                                                                       // grad_x nullptr when not asked for
  T *val_ih, *val_hh;    // the entries' values, in column order
  T *entry_ih, *entry_hh;  // the entries' gradients, in row order
  T *acc_ih, *acc_hh;    // the entries' gradients as vectors of lanes (add_sampled_products)
  T* work;               // per group, work_size elements

  // A group's scratch: one panel of gate gradients [4H, padded], of input gradients [I, padded], and
  // one step's gate gradients [4H, chunk], arriving hidden gradients, dh and dc [H, chunk].
  static int64_t work_size(const LstmShape& s, const PanelShape& pn) {
    return (4 * s.H + s.I) * pn.padded + 7 * s.H * std::min(s.B, kPanelColumns);
  }
};

// The backward runs the steps last first; a panel's gate gradients are complete at its first step,
// and then give their share of the bias, weight and input gradients while they are in cache. The
// panel buffer is zeroed for each chunk, and a panel's columns past the last step (the last panel's)
// and its padding are never written, so they add nothing.
template <class Isa, typename T>
HAPRUNED_INLINE void backward_chunk(const BackwardCall<T>& a, int64_t g, BatchChunk chunk) {
  const auto [steps, G, B, I, H] = a.s;
  const PanelShape& pn = a.pn;
  const int64_t R = 4 * H, ld = pn.padded, b0 = chunk.b0, C = chunk.cols;
  // the columns of a panel that the products read: the chunk's steps, padded to whole vectors
  const int64_t width = (pn.steps * C + 15) / 16 * 16;
  T* dp = a.work + g * BackwardCall<T>::work_size(a.s, pn);
  T* gx = dp + R * ld;
  T* dbuf = gx + I * ld;
  T *ghbuf = dbuf + R * C, *dh = ghbuf + H * C, *dc = dh + H * C;
  std::fill(dp, dp + R * ld, T(0));
  const T* xp = a.x_panels + (g * pn.panels * I * ld + b0);
  const T* hp = a.h_panels + (g * pn.panels * H * ld + b0);
  const T* gates = a.gates + g * steps * R * B + steps * R * b0;
  const T* cs = a.cs + g * (steps + 1) * H * B + (steps + 1) * H * b0;
  const auto batch_rows = [&](auto* base, int64_t t, int64_t width) { return base + ((t * G + g) * B + b0) * width; };
  std::fill(dh, dh + H * C, T(0));
  if (a.grad_c_n)
    transpose_into(batch_rows(a.grad_c_n, 0, H), H, dc, C, C, H);
  else
    std::fill(dc, dc + H * C, T(0));
  const CompressedRows<T> w_hh_t = a.hh.columns(g, a.val_hh), w_ih_t = a.ih.columns(g, a.val_ih);
  for (int64_t t = steps - 1; t >= 0; --t) {
    transpose_into(batch_rows(a.grad_y, t, H), H, ghbuf, C, C, H);
    gates_backward_units(gates + t * R * C, dbuf, cs + t * H * C, cs + (t + 1) * H * C, ghbuf, dh, dc, H * C);
    const SparseOperand<T> recurrent[] = {{w_hh_t, {dbuf, C}}};
    sparse_times_dense<Isa, Start::kZero>(recurrent, {nullptr, 0}, {dh, C}, C);
    copy_rows<Isa>(dbuf, C, dp + (t % pn.steps) * C, ld, R, C);
    if (t % pn.steps) continue;
    const int64_t p = t / pn.steps;
    add_row_sums<Isa>(Rows<const T>{dp, ld}, R, width, a.grad_bias + g * R);
    add_sampled_products<Isa>(a.hh.row_ptr + g * R, a.hh.col_idx, R, Rows<const T>{dp, ld},
                              Rows<const T>{hp + p * H * ld, ld}, width, a.acc_hh);
    add_sampled_products<Isa>(a.ih.row_ptr + g * R, a.ih.col_idx, R, Rows<const T>{dp, ld},
                              Rows<const T>{xp + p * I * ld, ld}, width, a.acc_ih);
    if (!a.grad_x) continue;
    const SparseOperand<T> input[] = {{w_ih_t, {dp, ld}}};
    sparse_times_dense<Isa, Start::kZero>(input, {nullptr, 0}, {gx, ld}, width);
    for (int64_t u = t; u < std::min(steps, t + pn.steps); ++u)
      transpose_into(gx + (u - t) * C, ld, batch_rows(a.grad_x, u, I), I, I, C);
  }
  transpose_into(dh, C, batch_rows(a.grad_h0, 0, H), H, H, C);
  transpose_into(dc, C, batch_rows(a.grad_c0, 0, H), H, H, C);
}

template <class Isa, typename T>
HAPRUNED_INLINE void backward_group(const BackwardCall<T>& a, int64_t g) {
  const int64_t R = 4 * a.s.H;
  if (a.grad_x) a.ih.gather_column_values(g, a.w_ih + g * R * a.s.I, a.val_ih);  // read by grad_x only
  a.hh.gather_column_values(g, a.w_hh + g * R * a.s.H, a.val_hh);
  constexpr int64_t kStride = kAccBytes / sizeof(T);
  for (const auto& [layout, acc] : {std::pair{&a.ih, a.acc_ih}, {&a.hh, a.acc_hh}})
    std::fill(acc + layout->row_ptr[g * R] * kStride, acc + layout->row_ptr[(g + 1) * R] * kStride, T(0));
  for_each_chunk(a.s.B, [&](BatchChunk chunk) HAPRUNED_ISA_BODY { backward_chunk<Isa>(a, g, chunk); });
  sampled_sums<Isa>(a.acc_hh, a.hh.row_ptr[g * R], a.hh.row_ptr[(g + 1) * R], a.entry_hh);
  sampled_sums<Isa>(a.acc_ih, a.ih.row_ptr[g * R], a.ih.row_ptr[(g + 1) * R], a.entry_ih);
  a.hh.scatter_row_values(g, a.entry_hh, a.grad_w_hh + g * R * a.s.H);
  a.ih.scatter_row_values(g, a.entry_ih, a.grad_w_ih + g * R * a.s.I);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> sparse_lstm_seq_cpu(
    const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& w_ih, const at::Tensor& w_hh,
    const at::Tensor& bias, const at::Tensor& layout_ih, const at::Tensor& layout_hh, bool save) {
  const LstmShape s = check_lstm_inputs(x, h0, c0, w_ih, w_hh, c10::nullopt, c10::nullopt, /*sequence=*/true);
  check_bias(bias, x, s);
  TORCH_CHECK(x.device().is_cpu(), "x must be a CPU tensor, got ", x.device());
  const SparseLayout ih = check_layout(layout_ih, "layout_ih", x, s.G, 4 * s.H, s.I);
  const SparseLayout hh = check_layout(layout_hh, "layout_hh", x, s.G, 4 * s.H, s.H);
  const PanelShape pn = panel_shape(s.T, s.B);
  const auto options = x.options();
  at::Tensor y = at::empty({s.T, s.G, s.B, s.H}, options), c_n = at::empty({s.G, s.B, s.H}, options);
  // What the backward reads; empty without save.
  const int64_t kept = save ? 1 : 0;
  at::Tensor x_panels = at::zeros({kept * s.G, pn.panels, s.I, pn.padded}, options);
  at::Tensor h_panels = at::zeros({kept * s.G, pn.panels, s.H, pn.padded}, options);
  at::Tensor gates = at::empty({kept * s.G, s.T, 4 * s.H, s.B}, options);
  at::Tensor cs = at::empty({kept * s.G, s.T + 1, s.H, s.B}, options);
  if (s.G == 0 || s.B == 0 || s.H == 0) {
    c_n.copy_(c0);
    y.zero_();
    return {y, c_n, x_panels, h_panels, gates, cs};
  }
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sparse_lstm_seq_cpu", [&] {
    at::Tensor val_ih = at::empty({ih.nnz}, options), val_hh = at::empty({hh.nnz}, options);
    at::Tensor work = at::empty({s.G, ForwardCall<scalar_t>::work_size(s, pn)}, options);
    const ForwardCall<scalar_t> call{
        s, pn, ih, hh, save, x.const_data_ptr<scalar_t>(), h0.const_data_ptr<scalar_t>(),
        c0.const_data_ptr<scalar_t>(), w_ih.const_data_ptr<scalar_t>(), w_hh.const_data_ptr<scalar_t>(),
        bias.const_data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), c_n.data_ptr<scalar_t>(),
        x_panels.data_ptr<scalar_t>(), h_panels.data_ptr<scalar_t>(), gates.data_ptr<scalar_t>(),
        cs.data_ptr<scalar_t>(), val_ih.data_ptr<scalar_t>(), val_hh.data_ptr<scalar_t>(), work.data_ptr<scalar_t>()};
    const int64_t work_per_group = s.T * s.B * (ih.nnz + hh.nnz + 40 * s.H) / s.G;  // products and gates
    parallel_for(0, s.G, grain_for(work_per_group), [&](int64_t begin, int64_t end) {
      with_isa([&](auto isa) HAPRUNED_ISA_BODY {
        for (int64_t g = begin; g < end; ++g) forward_group<decltype(isa)>(call, g);
      });
    });
  });
  return {y, c_n, x_panels, h_panels, gates, cs};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> sparse_lstm_seq_backward_cpu(
    const at::Tensor& grad_y, const c10::optional<at::Tensor>& grad_c_n, const at::Tensor& w_ih,
    const at::Tensor& w_hh, const at::Tensor& layout_ih, const at::Tensor& layout_hh, const at::Tensor& x_panels,
    const at::Tensor& h_panels, const at::Tensor& gates, const at::Tensor& cs, bool input_grad) {
  TORCH_CHECK(grad_y.scalar_type() == at::kFloat || grad_y.scalar_type() == at::kDouble,
              "grad_y must be float32 or float64, got ", grad_y.scalar_type());
  check_tensor(grad_y, "grad_y", 4, grad_y);
  TORCH_CHECK(grad_y.device().is_cpu(), "grad_y must be a CPU tensor, got ", grad_y.device());
  check_tensor(w_ih, "w_ih", 3, grad_y);
  const LstmShape s{grad_y.size(0), grad_y.size(1), grad_y.size(2), w_ih.size(2), grad_y.size(3)};
  const PanelShape pn = panel_shape(s.T, s.B);
  check_like(w_ih, "w_ih", grad_y, {s.G, 4 * s.H, s.I});
  check_like(w_hh, "w_hh", grad_y, {s.G, 4 * s.H, s.H});
  if (grad_c_n) check_like(*grad_c_n, "grad_c_n", grad_y, {s.G, s.B, s.H});
  check_like(x_panels, "x_panels", grad_y, {s.G, pn.panels, s.I, pn.padded});
  check_like(h_panels, "h_panels", grad_y, {s.G, pn.panels, s.H, pn.padded});
  check_like(gates, "gates", grad_y, {s.G, s.T, 4 * s.H, s.B});
  check_like(cs, "cs", grad_y, {s.G, s.T + 1, s.H, s.B});
  const SparseLayout ih = check_layout(layout_ih, "layout_ih", grad_y, s.G, 4 * s.H, s.I);
  const SparseLayout hh = check_layout(layout_hh, "layout_hh", grad_y, s.G, 4 * s.H, s.H);
  const auto options = grad_y.options();
  at::Tensor grad_x = input_grad ? at::empty({s.T, s.G, s.B, s.I}, options) : at::empty({0}, options);
  at::Tensor grad_h0 = at::empty({s.G, s.B, s.H}, options), grad_c0 = at::empty({s.G, s.B, s.H}, options);
  at::Tensor grad_w_ih = at::zeros_like(w_ih), grad_w_hh = at::zeros_like(w_hh);
  at::Tensor grad_bias = at::zeros({s.G, 4 * s.H}, options);
  if (s.G == 0 || s.B == 0 || s.H == 0) {
    grad_x.zero_();
    grad_h0.zero_();
    if (grad_c_n) grad_c0.copy_(*grad_c_n); else grad_c0.zero_();
    return {grad_x, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_bias};
  }
  AT_DISPATCH_FLOATING_TYPES(grad_y.scalar_type(), "sparse_lstm_seq_backward_cpu", [&] {
    const auto t = [&](int64_t size) { return at::empty({size}, options); };
    at::Tensor val_ih = t(ih.nnz), val_hh = t(hh.nnz), entry_ih = t(ih.nnz), entry_hh = t(hh.nnz);
    const int64_t lanes = kAccBytes / sizeof(scalar_t);
    at::Tensor acc_ih = t(ih.nnz * lanes), acc_hh = t(hh.nnz * lanes);
    at::Tensor work = at::empty({s.G, BackwardCall<scalar_t>::work_size(s, pn)}, options);
    const BackwardCall<scalar_t> call{
        s, pn, ih, hh, grad_y.const_data_ptr<scalar_t>(),
        grad_c_n ? grad_c_n->const_data_ptr<scalar_t>() : nullptr, w_ih.const_data_ptr<scalar_t>(),
        w_hh.const_data_ptr<scalar_t>(), x_panels.const_data_ptr<scalar_t>(), h_panels.const_data_ptr<scalar_t>(),
        gates.const_data_ptr<scalar_t>(), cs.const_data_ptr<scalar_t>(), input_grad ? grad_x.data_ptr<scalar_t>() : nullptr,
        grad_h0.data_ptr<scalar_t>(), grad_c0.data_ptr<scalar_t>(), grad_w_ih.data_ptr<scalar_t>(),
        grad_w_hh.data_ptr<scalar_t>(), grad_bias.data_ptr<scalar_t>(), val_ih.data_ptr<scalar_t>(),
        val_hh.data_ptr<scalar_t>(), entry_ih.data_ptr<scalar_t>(), entry_hh.data_ptr<scalar_t>(),
        acc_ih.data_ptr<scalar_t>(), acc_hh.data_ptr<scalar_t>(), work.data_ptr<scalar_t>()};
    const int64_t work_per_group = 3 * s.T * s.B * (ih.nnz + hh.nnz + 40 * s.H) / s.G;
    parallel_for(0, s.G, grain_for(work_per_group), [&](int64_t begin, int64_t end) {
      with_isa([&](auto isa) HAPRUNED_ISA_BODY {
        for (int64_t g = begin; g < end; ++g) backward_group<decltype(isa)>(call, g);
      });
    });
  });
  return {grad_x, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(hapruned, CPU, m) {
  m.impl("sparse_lstm_seq", &sparse_lstm_seq_cpu);
  m.impl("sparse_lstm_seq_backward", &sparse_lstm_seq_backward_cpu);
}

}  // namespace hapruned
