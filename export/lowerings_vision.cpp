// Lowerings of the dense-prediction and generative networks' ops: pooling, resizing, bilinear
// sampling (with RAFT's correlation lookup, our custom dispatcher op), instance and group
// normalisation, padding, clipping, stacking, norms, SiLU and the sinusoids of timestep embeddings.
#include <cmath>

#include "export/lowering.h"

namespace ef::exporter {

namespace {

std::vector<int64_t> per_dim(std::vector<int64_t> v, size_t dims) {  // LibTorch's one-value-for-all form
  if (v.size() == 1 && dims > 1) v.assign(dims, v.front());
  return v;
}

// The traced shape of v with a 1 inserted at `axis` (stack's pieces).
std::vector<int64_t> unsqueezed(const Value* v, int64_t axis) {
  auto s = Lowering::shape(v);
  s.insert(s.begin() + axis, 1);
  return s;
}

// ONNX Resize to the traced output size: "linear" (align_corners or half-pixel, as PyTorch's
// upsample_bilinear2d) or "nearest" (asymmetric + floor, as PyTorch's upsample_nearest2d).
bool resize(Lowering& L, const JitNode* n, bool linear) {
  std::map<std::string, Attr> a;
  if (linear) {
    const bool align = L.b(in(n, 2));
    a = {{"mode", Attr::of(std::string("linear"))},
         {"coordinate_transformation_mode", Attr::of(std::string(align ? "align_corners" : "pytorch_half_pixel"))}};
  } else {
    a = {{"mode", Attr::of(std::string("nearest"))}, {"coordinate_transformation_mode", Attr::of(std::string("asymmetric"))},
         {"nearest_mode", Attr::of(std::string("floor"))}};
  }
  L.bind(outv(n), L.emit("Resize", {L.tensor(in(n, 0)), "", "", L.ints(Lowering::shape(outv(n)))}, a));
  return linear;  // nearest only copies values
}

// L2 norm over `dims`: sqrt(sum(x^2)).
std::string l2_norm(Lowering& L, const std::string& x, std::vector<int64_t> dims, int64_t rank, bool keep) {
  for (auto& d : dims) d = Lowering::axis(d, rank);
  std::string s = L.emit("ReduceSum", {L.emit("Mul", {x, x}), L.ints(dims)}, {{"keepdims", Attr::of(int64_t{keep})}});
  return L.emit("Sqrt", {s});
}

}  // namespace

void add_vision_lowerings(LoweringTable& m) {
  m["aten::avg_pool2d"] = [](Lowering& L, const JitNode* n) {
    // avg_pool2d(x, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)
    if (n->inputs().size() > 6 && !L.is_none(in(n, 6))) throw std::runtime_error("export: aten::avg_pool2d with divisor_override is not supported");
    auto kernel = per_dim(L.int_list(in(n, 1)), 2), stride = L.int_list(in(n, 2)), pad = per_dim(L.int_list(in(n, 3)), 2);
    stride = stride.empty() ? kernel : per_dim(stride, 2);
    L.bind(outv(n), L.emit("AveragePool", {L.tensor(in(n, 0))},
                           {{"kernel_shape", Attr::of(kernel)}, {"strides", Attr::of(stride)}, {"pads", Attr::of(std::vector<int64_t>{pad[0], pad[1], pad[0], pad[1]})},
                            {"ceil_mode", Attr::of(int64_t{L.b(in(n, 4))})}, {"count_include_pad", Attr::of(int64_t{L.b(in(n, 5))})}}));
    return true;
  };
  m["aten::upsample_bilinear2d"] = [](Lowering& L, const JitNode* n) { return resize(L, n, true); };
  m["aten::upsample_nearest2d"] = [](Lowering& L, const JitNode* n) { return resize(L, n, false); };
  m["aten::grid_sampler"] = [](Lowering& L, const JitNode* n) {
    // grid_sampler(x, grid, interpolation_mode, padding_mode, align_corners)
    static const char* modes[] = {"bilinear", "nearest", "bicubic"};
    static const char* pads[] = {"zeros", "border", "reflection"};
    const int64_t mode = L.i(in(n, 2)), pad = L.i(in(n, 3));
    if (mode < 0 || mode > 2 || pad < 0 || pad > 2) throw std::runtime_error("export: aten::grid_sampler with an unknown mode");
    L.bind(outv(n), L.emit("GridSample", {L.tensor(in(n, 0)), L.tensor(in(n, 1))},
                           {{"mode", Attr::of(std::string(modes[mode]))}, {"padding_mode", Attr::of(std::string(pads[pad]))},
                            {"align_corners", Attr::of(int64_t{L.b(in(n, 4))})}}));
    return true;
  };
  // RAFT's radius lookup (flow/corr.h): every query pixel n samples its own correlation map
  // level[n] at (x + i - r, y + j - r), bilinearly with zeros outside. As ONNX: the maps become a
  // batch of one-channel images and each query a (2r+1)x(2r+1) sampling grid for GridSample.
  // align_corners = 0 with g = (2p + 1) / size - 1 lands exactly on pixel p, for any size (1 too).
  m["edgeforge::corr_lookup"] = [](Lowering& L, const JitNode* n) {
    const auto ls = Lowering::shape(in(n, 0)), cs = Lowering::shape(in(n, 1));
    const int64_t N = ls[0], h = ls[1], w = ls[2], r = L.i(in(n, 2)), side = 2 * r + 1;
    torch::Tensor d = torch::arange(-r, r + 1, torch::kFloat);
    torch::Tensor delta = torch::stack(torch::meshgrid({d, d}, "ij"), -1).unsqueeze(0);  // [1, i, j, (x, y)] = (i - r, j - r)
    std::string maps = L.reshape_to(L.tensor(in(n, 0)), {N, 1, h, w});
    std::string p = L.emit("Add", {L.reshape_to(L.tensor(in(n, 1)), {N, 1, 1, 2}), L.constant(delta, "corr_offsets")});
    std::string g = L.emit("Add", {L.emit("Mul", {p, L.constant(torch::tensor({2.0f / w, 2.0f / h}), "corr_scale")}),
                                   L.constant(torch::tensor({1.0f / w - 1, 1.0f / h - 1}), "corr_shift")});
    std::string s = L.emit("GridSample", {maps, g},
                           {{"mode", Attr::of(std::string("bilinear"))}, {"padding_mode", Attr::of(std::string("zeros"))}, {"align_corners", Attr::of(int64_t{0})}});
    L.bind(outv(n), L.reshape_to(s, {cs[0], cs[1], cs[2], side * side}));
    return true;
  };
  // unfold (im2col): a grouped Conv whose constant one-hot kernels copy each (ki, kj) tap into
  // channel c*kh*kw + ki*kw + kj, then [B, C*kh*kw, L].
  m["aten::im2col"] = [](Lowering& L, const JitNode* n) {
    // im2col(x, kernel_size, dilation, padding, stride)
    const auto xs = Lowering::shape(in(n, 0));
    const int64_t C = xs[1];
    auto k = per_dim(L.int_list(in(n, 1)), 2), dil = per_dim(L.int_list(in(n, 2)), 2), pad = per_dim(L.int_list(in(n, 3)), 2),
         stride = per_dim(L.int_list(in(n, 4)), 2);
    const int64_t K = k[0] * k[1];
    torch::Tensor eye = torch::eye(K).view({K, 1, k[0], k[1]}).repeat({C, 1, 1, 1});
    std::string y = L.emit("Conv", {L.tensor(in(n, 0)), L.constant(eye, "im2col_taps")},
                           {{"kernel_shape", Attr::of(k)}, {"strides", Attr::of(stride)}, {"dilations", Attr::of(dil)},
                            {"pads", Attr::of(std::vector<int64_t>{pad[0], pad[1], pad[0], pad[1]})}, {"group", Attr::of(C)}});
    L.bind(outv(n), L.reshape_to(y, Lowering::shape(outv(n))));
    return false;  // copies of its input's values
  };
  m["aten::instance_norm"] = [](Lowering& L, const JitNode* n) {
    // instance_norm(x, weight, bias, running_mean, running_var, use_input_stats, momentum, eps, cudnn)
    if (!L.b(in(n, 5))) throw std::runtime_error("export: aten::instance_norm with running statistics is not supported");
    const int64_t C = Lowering::shape(in(n, 0))[1];
    std::string w = L.is_none(in(n, 1)) ? L.constant(torch::ones({C}), "in_ones") : L.tensor(in(n, 1));
    std::string b = L.is_none(in(n, 2)) ? L.constant(torch::zeros({C}), "in_zeros") : L.tensor(in(n, 2));
    L.bind(outv(n), L.emit("InstanceNormalization", {L.tensor(in(n, 0)), w, b}, {{"epsilon", Attr::of(static_cast<float>(L.d(in(n, 7))))}}));
    return true;
  };
  // group_norm: opset 17 has no GroupNormalization. Instance-normalise [B, G, rest], then the
  // per-channel affine.
  m["aten::group_norm"] = [](Lowering& L, const JitNode* n) {
    // group_norm(x, num_groups, weight, bias, eps, cudnn)
    const auto xs = Lowering::shape(in(n, 0));
    const int64_t B = xs[0], C = xs[1], G = L.i(in(n, 1));
    int64_t rest = 1;
    for (size_t k = 2; k < xs.size(); ++k) rest *= xs[k];
    std::string g = L.reshape_to(L.tensor(in(n, 0)), {B, G, (C / G) * rest});
    g = L.emit("InstanceNormalization", {g, L.constant(torch::ones({G}), "gn_ones"), L.constant(torch::zeros({G}), "gn_zeros")},
               {{"epsilon", Attr::of(static_cast<float>(L.d(in(n, 4))))}});
    std::string y = L.reshape_to(g, xs);
    std::vector<int64_t> affine(xs.size() - 1, 1);
    affine[0] = C;
    if (!L.is_none(in(n, 2))) y = L.emit("Mul", {y, L.reshape_to(L.tensor(in(n, 2)), affine)});
    if (!L.is_none(in(n, 3))) y = L.emit("Add", {y, L.reshape_to(L.tensor(in(n, 3)), affine)});
    L.bind(outv(n), y);
    return true;
  };
  m["aten::silu"] = [](Lowering& L, const JitNode* n) {
    std::string x = L.tensor(in(n, 0));
    L.bind(outv(n), L.emit("Mul", {x, L.emit("Sigmoid", {x})}));
    return true;
  };
  m["aten::sin"] = [](Lowering& L, const JitNode* n) { return unary(L, n, "Sin"); };
  m["aten::cos"] = [](Lowering& L, const JitNode* n) { return unary(L, n, "Cos"); };
  // hardtanh (ReLU6), clamp, clamp_max: Clip with its bounds as scalar inputs ("" = unbounded)
  auto clip = [](Lowering& L, const JitNode* n, const Value* lo, const Value* hi) {
    auto bound = [&](const Value* v) { return !v || L.is_none(v) ? std::string() : L.constant(torch::scalar_tensor(L.d(v), torch::kFloat), "clip"); };
    L.bind(outv(n), L.emit("Clip", {L.tensor(in(n, 0)), bound(lo), bound(hi)}));
    return true;
  };
  m["aten::hardtanh"] = [clip](Lowering& L, const JitNode* n) { return clip(L, n, in(n, 1), in(n, 2)); };
  m["aten::relu6"] = [](Lowering& L, const JitNode* n) {
    L.bind(outv(n), L.emit("Clip", {L.tensor(in(n, 0)), L.constant(torch::scalar_tensor(0.0f), "clip"), L.constant(torch::scalar_tensor(6.0f), "clip")}));
    return true;
  };
  m["aten::clamp"] = [clip](Lowering& L, const JitNode* n) {
    if (!L.is_const(in(n, 1)) || !L.is_const(in(n, 2))) throw std::runtime_error("export: aten::clamp with tensor bounds is not supported");
    return clip(L, n, in(n, 1), in(n, 2));
  };
  m["aten::clamp_max"] = [clip](Lowering& L, const JitNode* n) { return clip(L, n, nullptr, in(n, 1)); };
  m["aten::constant_pad_nd"] = [](Lowering& L, const JitNode* n) {
    // LibTorch: (last dim begin, end, second-to-last begin, end, ...); ONNX: all begins, then all ends
    const auto p = L.int_list(in(n, 1));
    const int64_t r = Lowering::rank(in(n, 0));
    std::vector<int64_t> pads(2 * r, 0);
    for (size_t k = 0; k < p.size() / 2; ++k) {
      pads[r - 1 - k] = p[2 * k];
      pads[2 * r - 1 - k] = p[2 * k + 1];
    }
    const double value = L.is_none(in(n, 2)) ? 0.0 : L.d(in(n, 2));
    L.bind(outv(n), L.emit("Pad", {L.tensor(in(n, 0)), L.ints(pads), L.constant(torch::scalar_tensor(value, torch::kFloat), "pad_value")},
                           {{"mode", Attr::of(std::string("constant"))}}));
    return false;
  };
  m["aten::stack"] = [](Lowering& L, const JitNode* n) {
    const auto& parts = L.list(in(n, 0));
    const Value* list = in(n, 0);
    const int64_t a = Lowering::axis(L.i(in(n, 1)), Lowering::rank(outv(n)));
    std::vector<std::string> pieces;
    for (size_t k = 0; k < parts.size(); ++k) pieces.push_back(L.reshape_to(parts[k], unsqueezed(list->node()->inputs().at(k), a)));
    L.bind(outv(n), L.emit("Concat", pieces, {{"axis", Attr::of(a)}}));
    return true;
  };
  auto norm = [](Lowering& L, const JitNode* n, const Value* ord, const Value* dims, const Value* keep) {
    if (!L.is_none(ord) && L.d(ord) != 2.0) throw std::runtime_error(std::string("export: ") + n->kind().toQualString() + " with p != 2 is not supported");
    const int64_t r = Lowering::rank(in(n, 0));
    std::vector<int64_t> d;
    if (L.is_none(dims)) for (int64_t k = 0; k < r; ++k) d.push_back(k);
    else d = L.int_list(dims);
    L.bind(outv(n), l2_norm(L, L.tensor(in(n, 0)), d, r, L.b(keep)));
    return true;
  };
  // norm(x, p, dim, keepdim) and linalg_vector_norm(x, ord, dim, keepdim, dtype)
  m["aten::norm"] = [norm](Lowering& L, const JitNode* n) {
    if (n->inputs().size() < 4) throw std::runtime_error("export: aten::norm without dims is not supported");
    return norm(L, n, in(n, 1), in(n, 2), in(n, 3));
  };
  m["aten::linalg_vector_norm"] = [norm](Lowering& L, const JitNode* n) { return norm(L, n, in(n, 1), in(n, 2), in(n, 3)); };
  // values that do not depend on the data, only on a traced shape: a scalar expanded to it (a full
  // initializer would store a feature map's worth of copies, per use)
  auto filled = [](Lowering& L, const JitNode* n, double value) {
    const auto t = Lowering::scalar_type(outv(n));
    L.bind(outv(n), L.emit("Expand", {L.constant(torch::scalar_tensor(value, torch::TensorOptions().dtype(t)), "fill"), L.ints(Lowering::shape(outv(n)))}));
    return false;
  };
  m["aten::ones_like"] = [filled](Lowering& L, const JitNode* n) { return filled(L, n, 1.0); };
  m["aten::zeros_like"] = [filled](Lowering& L, const JitNode* n) { return filled(L, n, 0.0); };
  // (1 - z) traces as empty_like + full_like: only the shape matters
  m["aten::empty_like"] = [filled](Lowering& L, const JitNode* n) { return filled(L, n, 0.0); };
  m["aten::full_like"] = [filled](Lowering& L, const JitNode* n) { return filled(L, n, L.d(in(n, 1))); };
}

}  // namespace ef::exporter
