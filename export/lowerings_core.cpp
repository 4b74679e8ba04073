// The core lowerings: linear algebra, elementwise math, reductions, data movement and the
// indexing ops of ToSA's token routing.
#include <cmath>

#include "export/lowering.h"

namespace ef::exporter {

namespace {

std::string linear(Lowering& L, const JitNode* n, const std::string& x, const Value* wv, const Value* bv) {
  auto w = L.param(wv);
  if (!w) throw std::runtime_error("export: aten::linear with a weight computed in the graph is not supported (it must be a parameter)");
  // MatMul wants [in, out]: the initializer holds the transposed weight under the parameter's name
  // (so encodings stay keyed by it), quantized per output channel along axis 1.
  const std::string wname = w->first;
  L.out.graph.initializers[wname] = to_initializer(wname, w->second.t());
  L.out.weight_axes[wname] = 1;
  std::string y = L.emit("MatMul", {x, wname});
  if (!L.is_none(bv)) {
    L.mark(y);
    y = L.emit("Add", {y, L.tensor(bv)});
  }
  return y;
}

}  // namespace

void add_core_lowerings(LoweringTable& m) {
  m["aten::linear"] = [](Lowering& L, const JitNode* n) {
    L.bind(outv(n), linear(L, n, L.tensor(in(n, 0)), in(n, 1), in(n, 2)));
    return true;
  };
  auto conv = [](Lowering& L, const JitNode* n) {
    // conv{1,2}d(x, w, b, stride, padding, dilation, groups) and
    // _convolution(x, w, b, stride, padding, dilation, transposed, output_padding, groups, ...)
    const bool full = n->kind().toQualString() == std::string("aten::_convolution");
    if (full && L.b(in(n, 6))) throw std::runtime_error("export: transposed convolution (aten::_convolution transposed=true) is not supported");
    const Value* pad_v = in(n, 4);
    if (pad_v->type()->kind() == c10::TypeKind::StringType)
      throw std::runtime_error("export: string padding ('same'/'valid') in " + std::string(n->kind().toQualString()) + " is not supported");
    std::vector<int64_t> stride = L.int_list(in(n, 3)), pad = L.int_list(pad_v), dil = L.int_list(in(n, 5));
    const int64_t groups = L.i(in(n, full ? 8 : 6));
    auto ws = Lowering::shape(in(n, 1));
    std::vector<int64_t> kernel(ws.begin() + 2, ws.end());
    // LibTorch accepts one value for all spatial dims (conv2d(..., 1, pad, 1, groups)); ONNX wants one per dim
    for (auto* v : {&stride, &pad, &dil})
      if (v->size() == 1 && kernel.size() > 1) v->assign(kernel.size(), v->front());
    auto w = L.param(in(n, 1));
    std::string wname = L.tensor(in(n, 1));
    if (w) L.out.weight_axes[wname] = 0;
    std::vector<int64_t> pads = pad;
    pads.insert(pads.end(), pad.begin(), pad.end());
    std::vector<std::string> ins = {L.tensor(in(n, 0)), wname};
    if (!L.is_none(in(n, 2))) ins.push_back(L.tensor(in(n, 2)));
    L.bind(outv(n), L.emit("Conv", ins, {{"strides", Attr::of(stride)}, {"pads", Attr::of(pads)}, {"dilations", Attr::of(dil)},
                                         {"group", Attr::of(groups)}, {"kernel_shape", Attr::of(kernel)}}));
    return true;
  };
  m["aten::conv1d"] = conv;
  m["aten::conv2d"] = conv;
  m["aten::_convolution"] = conv;
  m["aten::layer_norm"] = [](Lowering& L, const JitNode* n) {
    const auto norm_shape = L.int_list(in(n, 1));
    const auto& xs = Lowering::shape(in(n, 0));
    const int64_t r = static_cast<int64_t>(xs.size()), k = static_cast<int64_t>(norm_shape.size());
    std::vector<int64_t> wshape(xs.end() - k, xs.end());
    std::string w = L.is_none(in(n, 2)) ? L.constant(torch::ones(wshape), "ln_ones") : L.tensor(in(n, 2));
    std::string b = L.is_none(in(n, 3)) ? L.constant(torch::zeros(wshape), "ln_zeros") : L.tensor(in(n, 3));
    L.bind(outv(n), L.emit("LayerNormalization", {L.tensor(in(n, 0)), w, b},
                           {{"axis", Attr::of(r - k)}, {"epsilon", Attr::of(static_cast<float>(L.d(in(n, 4))))}}));
    return true;
  };
  m["aten::gelu"] = [](Lowering& L, const JitNode* n) {
    if (L.ivalue(in(n, 1)).toStringRef() != "none") throw std::runtime_error("export: aten::gelu with approximate='tanh' is not supported");
    // opset 17 has no Gelu: 0.5 x (1 + erf(x / sqrt 2))
    std::string x = L.tensor(in(n, 0));
    std::string e = L.emit("Erf", {L.emit("Mul", {x, L.constant(torch::scalar_tensor(1.0 / std::sqrt(2.0)))})});
    std::string y = L.emit("Mul", {L.emit("Mul", {x, L.emit("Add", {e, L.constant(torch::scalar_tensor(1.0))})}),
                                   L.constant(torch::scalar_tensor(0.5))});
    L.bind(outv(n), y);
    return true;
  };
  m["aten::scaled_dot_product_attention"] = [](Lowering& L, const JitNode* n) {
    if (!L.is_none(in(n, 3))) throw std::runtime_error("export: aten::scaled_dot_product_attention with an attention mask is not supported");
    const bool causal = L.b(in(n, 5));
    auto qs = Lowering::shape(in(n, 0));
    double scale = 1.0 / std::sqrt(static_cast<double>(qs.back()));
    if (n->inputs().size() > 6 && !L.is_none(in(n, 6))) scale = L.d(in(n, 6));
    const int64_t r = static_cast<int64_t>(qs.size());
    std::vector<int64_t> perm(r);
    for (int64_t k = 0; k < r; ++k) perm[k] = k;
    std::swap(perm[r - 1], perm[r - 2]);
    std::string kt = L.emit("Transpose", {L.tensor(in(n, 1))}, {{"perm", Attr::of(perm)}});
    std::string s = L.emit("MatMul", {L.tensor(in(n, 0)), kt});
    L.mark(s);
    s = L.emit("Mul", {s, L.constant(torch::scalar_tensor(scale))});
    L.mark(s);
    if (causal) {  // -inf above the diagonal; the masked scores get no quantizer (their range is infinite)
      const int64_t lq = qs[r - 2], lk = Lowering::shape(in(n, 1))[r - 2];
      torch::Tensor mask = torch::zeros({lq, lk}).masked_fill(torch::ones({lq, lk}, torch::kBool).triu(1), -INFINITY);
      s = L.emit("Add", {s, L.constant(mask, "causal_mask")});
    }
    std::string p = L.emit("Softmax", {s}, {{"axis", Attr::of(int64_t{-1})}});
    L.mark(p);
    L.bind(outv(n), L.emit("MatMul", {p, L.tensor(in(n, 2))}));
    return true;
  };
  auto softmax = [](const char* op) {
    return [op](Lowering& L, const JitNode* n) {
      L.bind(outv(n), L.emit(op, {L.tensor(in(n, 0))}, {{"axis", Attr::of(L.i(in(n, 1)))}}));
      return true;
    };
  };
  m["aten::softmax"] = softmax("Softmax");
  m["aten::_softmax"] = softmax("Softmax");
  m["aten::log_softmax"] = softmax("LogSoftmax");
  // linear arrives as t(W) + matmul/addmm: the transposed weight stays a parameter under its
  // checkpoint name (so encodings are keyed by it), its output channels on the last axis.
  m["aten::t"] = [](Lowering& L, const JitNode* n) {
    if (auto w = L.param(in(n, 0))) {
      L.bind_param(outv(n), w->first, w->second.t());
      return false;
    }
    L.bind(outv(n), L.emit("Transpose", {L.tensor(in(n, 0))}, {{"perm", Attr::of(std::vector<int64_t>{1, 0})}}));
    return false;
  };
  m["aten::matmul"] = [](Lowering& L, const JitNode* n) {
    if (auto w = L.param(in(n, 1))) L.out.weight_axes[w->first] = Lowering::rank(in(n, 1)) - 1;
    return elementwise(L, n, "MatMul");
  };
  m["aten::addmm"] = [](Lowering& L, const JitNode* n) {
    // addmm(bias, x, W, beta, alpha) = beta bias + alpha x W
    if (L.d(in(n, 3)) != 1.0 || L.d(in(n, 4)) != 1.0) throw std::runtime_error("export: aten::addmm with alpha or beta != 1 is not supported");
    if (auto w = L.param(in(n, 2))) L.out.weight_axes[w->first] = 1;
    L.bind(outv(n), L.emit("Gemm", {L.tensor(in(n, 1)), L.tensor(in(n, 2)), L.tensor(in(n, 0))}));
    return true;
  };
  auto arith = [](const char* op) {
    return [op](Lowering& L, const JitNode* n) {
      if (n->inputs().size() > 2 && n->inputs()[2]->type()->kind() != c10::TypeKind::StringType && !L.is_none(in(n, 2)) && L.d(in(n, 2)) != 1.0)
        throw std::runtime_error(std::string("export: ") + n->kind().toQualString() + " with alpha != 1 is not supported");
      if (n->inputs().size() > 2 && n->inputs()[2]->type()->kind() == c10::TypeKind::StringType)
        throw std::runtime_error(std::string("export: ") + n->kind().toQualString() + " with a rounding mode is not supported");
      return elementwise(L, n, op);
    };
  };
  m["aten::add"] = arith("Add");
  m["aten::sub"] = arith("Sub");
  m["aten::mul"] = arith("Mul");
  m["aten::div"] = arith("Div");
  m["aten::pow"] = arith("Pow");
  m["aten::rsub"] = [](Lowering& L, const JitNode* n) {  // b - a
    at::ScalarType t = Lowering::scalar_type(outv(n));
    L.bind(outv(n), L.emit("Sub", {L.tensor(in(n, 1), t), L.tensor(in(n, 0), t)}));
    return true;
  };
  for (auto [aten, op] : std::vector<std::pair<const char*, const char*>>{
           {"aten::relu", "Relu"}, {"aten::exp", "Exp"}, {"aten::log", "Log"}, {"aten::sqrt", "Sqrt"}, {"aten::erf", "Erf"},
           {"aten::tanh", "Tanh"}, {"aten::sigmoid", "Sigmoid"}, {"aten::neg", "Neg"}, {"aten::abs", "Abs"}, {"aten::reciprocal", "Reciprocal"}})
    m[aten] = [op = std::string(op)](Lowering& L, const JitNode* n) { return unary(L, n, op); };
  m["aten::rsqrt"] = [](Lowering& L, const JitNode* n) {
    L.bind(outv(n), L.emit("Reciprocal", {L.emit("Sqrt", {L.tensor(in(n, 0))})}));
    return true;
  };
  m["aten::square"] = [](Lowering& L, const JitNode* n) {
    std::string x = L.tensor(in(n, 0));
    L.bind(outv(n), L.emit("Mul", {x, x}));
    return true;
  };
  m["aten::clamp_min"] = [](Lowering& L, const JitNode* n) {
    L.bind(outv(n), L.emit("Max", {L.tensor(in(n, 0)), L.tensor(in(n, 1), Lowering::scalar_type(outv(n)))}));
    return true;
  };
  auto reduce = [](const char* op) {
    return [op = std::string(op)](Lowering& L, const JitNode* n) {
      // mean/sum(x, dims, keepdim, dtype)
      std::vector<int64_t> dims = L.int_list(in(n, 1));
      const int64_t r = Lowering::rank(in(n, 0));
      for (auto& a : dims) a = Lowering::axis(a, r);
      const int64_t keep = L.b(in(n, 2)) ? 1 : 0;
      if (op == "ReduceMean")  // opset 17: axes is an attribute of ReduceMean, an input of ReduceSum
        L.bind(outv(n), L.emit(op, {L.tensor(in(n, 0))}, {{"axes", Attr::of(dims)}, {"keepdims", Attr::of(keep)}}));
      else
        L.bind(outv(n), L.emit(op, {L.tensor(in(n, 0)), L.ints(dims)}, {{"keepdims", Attr::of(keep)}}));
      return true;
    };
  };
  m["aten::mean"] = reduce("ReduceMean");
  m["aten::sum"] = reduce("ReduceSum");
  // ---- data movement ----
  for (const char* op : {"aten::view", "aten::reshape", "aten::flatten", "aten::unsqueeze", "aten::squeeze", "aten::view_as", "aten::reshape_as"})
    m[op] = same_shape;
  for (const char* op : {"aten::contiguous", "aten::detach", "aten::clone", "aten::lift_fresh"}) m[op] = identity;
  auto dropout = [](Lowering& L, const JitNode* n) {
    if (L.b(in(n, 2))) throw std::runtime_error(std::string("export: ") + n->kind().toQualString() + " in training mode (call eval() first)");
    return identity(L, n);
  };
  m["aten::dropout"] = dropout;
  m["aten::feature_dropout"] = dropout;
  m["aten::to"] = [](Lowering& L, const JitNode* n) {
    at::ScalarType from = Lowering::scalar_type(in(n, 0)), to = Lowering::scalar_type(outv(n));
    if (from == to) return identity(L, n);
    L.bind(outv(n), L.emit("Cast", {L.tensor(in(n, 0))}, {{"to", Attr::of(static_cast<int64_t>(to_dtype(to, "aten::to")))}}));
    return false;
  };
  m["aten::expand"] = [](Lowering& L, const JitNode* n) {
    L.bind(outv(n), L.emit("Expand", {L.tensor(in(n, 0)), L.ints(Lowering::shape(outv(n)))}));
    return false;
  };
  m["aten::expand_as"] = m["aten::expand"];
  m["aten::transpose"] = [](Lowering& L, const JitNode* n) {
    const int64_t r = Lowering::rank(in(n, 0));
    std::vector<int64_t> perm(r);
    for (int64_t k = 0; k < r; ++k) perm[k] = k;
    std::swap(perm[Lowering::axis(L.i(in(n, 1)), r)], perm[Lowering::axis(L.i(in(n, 2)), r)]);
    L.bind(outv(n), L.emit("Transpose", {L.tensor(in(n, 0))}, {{"perm", Attr::of(perm)}}));
    return false;
  };
  m["aten::permute"] = [](Lowering& L, const JitNode* n) {
    std::vector<int64_t> perm = L.int_list(in(n, 1));
    for (auto& a : perm) a = Lowering::axis(a, Lowering::rank(in(n, 0)));
    L.bind(outv(n), L.emit("Transpose", {L.tensor(in(n, 0))}, {{"perm", Attr::of(perm)}}));
    return false;
  };
  m["aten::select"] = [](Lowering& L, const JitNode* n) {
    const int64_t r = Lowering::rank(in(n, 0)), a = Lowering::axis(L.i(in(n, 1)), r);
    int64_t idx = L.i(in(n, 2));
    if (idx < 0) idx += Lowering::shape(in(n, 0))[a];
    std::string index = L.constant(torch::scalar_tensor(idx, torch::kInt64), "index");
    L.bind(outv(n), L.emit("Gather", {L.tensor(in(n, 0)), index}, {{"axis", Attr::of(a)}}));
    return false;
  };
  auto slice = [](Lowering& L, const JitNode* n, int64_t dim, int64_t start, int64_t end, int64_t step) {
    const auto xs = Lowering::shape(in(n, 0));
    const int64_t a = Lowering::axis(dim, static_cast<int64_t>(xs.size()));
    end = std::min(end, xs[a]);
    L.bind(outv(n), L.emit("Slice", {L.tensor(in(n, 0)), L.ints({start}), L.ints({end}), L.ints({a}), L.ints({step})}));
    return false;
  };
  m["aten::slice"] = [slice](Lowering& L, const JitNode* n) {
    int64_t start = L.is_none(in(n, 2)) ? 0 : L.i(in(n, 2));
    int64_t end = L.is_none(in(n, 3)) ? INT64_MAX : L.i(in(n, 3));
    return slice(L, n, L.i(in(n, 1)), start, end, L.i(in(n, 4)));
  };
  m["aten::narrow"] = [slice](Lowering& L, const JitNode* n) {
    const int64_t start = L.i(in(n, 2));
    return slice(L, n, L.i(in(n, 1)), start, start + L.i(in(n, 3)), 1);
  };
  m["aten::cat"] = [](Lowering& L, const JitNode* n) {
    const int64_t a = Lowering::axis(L.i(in(n, 1)), Lowering::rank(outv(n)));
    L.bind(outv(n), L.emit("Concat", L.list(in(n, 0)), {{"axis", Attr::of(a)}}));
    return true;
  };
  auto pieces = [](Lowering& L, const JitNode* n, int64_t dim, const std::vector<int64_t>& sizes, bool squeeze) {
    const auto xs = Lowering::shape(in(n, 0));
    const int64_t a = Lowering::axis(dim, static_cast<int64_t>(xs.size()));
    std::vector<std::string> parts;
    int64_t start = 0;
    for (int64_t s : sizes) {
      if (squeeze)
        parts.push_back(L.emit("Gather", {L.tensor(in(n, 0)), L.constant(torch::scalar_tensor(start, torch::kInt64), "index")}, {{"axis", Attr::of(a)}}));
      else
        parts.push_back(L.emit("Slice", {L.tensor(in(n, 0)), L.ints({start}), L.ints({start + s}), L.ints({a})}));
      start += s;
    }
    L.bind_list(outv(n), parts);
    return false;
  };
  m["aten::unbind"] = [pieces](Lowering& L, const JitNode* n) {
    const auto xs = Lowering::shape(in(n, 0));
    const int64_t a = Lowering::axis(L.i(in(n, 1)), static_cast<int64_t>(xs.size()));
    return pieces(L, n, a, std::vector<int64_t>(xs[a], 1), true);
  };
  m["aten::chunk"] = [pieces](Lowering& L, const JitNode* n) {
    const auto xs = Lowering::shape(in(n, 0));
    const int64_t chunks = L.i(in(n, 1)), a = Lowering::axis(L.i(in(n, 2)), static_cast<int64_t>(xs.size()));
    const int64_t each = (xs[a] + chunks - 1) / chunks;
    std::vector<int64_t> sizes;
    for (int64_t s = 0; s < xs[a]; s += each) sizes.push_back(std::min(each, xs[a] - s));
    return pieces(L, n, a, sizes, false);
  };
  // ---- indexing (ToSA's token routing) ----
  m["aten::topk"] = [](Lowering& L, const JitNode* n) {
    // topk(x, k, dim, largest, sorted)
    const int64_t a = Lowering::axis(L.i(in(n, 2)), Lowering::rank(in(n, 0)));
    std::vector<std::string> outs;
    L.emit("TopK", {L.tensor(in(n, 0)), L.ints({L.i(in(n, 1))})}, {{"axis", Attr::of(a)}, {"largest", Attr::of(int64_t{L.b(in(n, 3))})}, {"sorted", Attr::of(int64_t{1})}}, 2, &outs);
    L.bind(outv(n, 0), outs[0]);
    L.bind(outv(n, 1), outs[1]);
    return false;
  };
  m["aten::sort"] = [](Lowering& L, const JitNode* n) {
    // sort(x, dim, descending): a TopK over the whole axis (ascending: largest=0)
    const auto xs = Lowering::shape(in(n, 0));
    const int64_t a = Lowering::axis(L.i(in(n, 1)), static_cast<int64_t>(xs.size()));
    std::vector<std::string> outs;
    L.emit("TopK", {L.tensor(in(n, 0)), L.ints({xs[a]})}, {{"axis", Attr::of(a)}, {"largest", Attr::of(int64_t{L.b(in(n, 2))})}, {"sorted", Attr::of(int64_t{1})}}, 2, &outs);
    L.bind(outv(n, 0), outs[0]);
    L.bind(outv(n, 1), outs[1]);
    return false;
  };
  m["aten::gather"] = [](Lowering& L, const JitNode* n) {
    const int64_t a = Lowering::axis(L.i(in(n, 1)), Lowering::rank(in(n, 0)));
    L.bind(outv(n), L.emit("GatherElements", {L.tensor(in(n, 0)), L.tensor(in(n, 2))}, {{"axis", Attr::of(a)}}));
    return false;
  };
  m["aten::scatter"] = [](Lowering& L, const JitNode* n) {
    const int64_t a = Lowering::axis(L.i(in(n, 1)), Lowering::rank(in(n, 0)));
    L.bind(outv(n), L.emit("ScatterElements", {L.tensor(in(n, 0)), L.tensor(in(n, 2)), L.tensor(in(n, 3))}, {{"axis", Attr::of(a)}}));
    return false;
  };
  m["aten::embedding"] = [](Lowering& L, const JitNode* n) {
    // embedding(weight, indices, padding_idx, scale_grad, sparse): rows of the table
    L.bind(outv(n), L.emit("Gather", {L.tensor(in(n, 0)), L.tensor(in(n, 1))}, {{"axis", Attr::of(int64_t{0})}}));
    return false;
  };
  m["aten::index_select"] = [](Lowering& L, const JitNode* n) {
    const int64_t a = Lowering::axis(L.i(in(n, 1)), Lowering::rank(in(n, 0)));
    L.bind(outv(n), L.emit("Gather", {L.tensor(in(n, 0)), L.tensor(in(n, 2))}, {{"axis", Attr::of(a)}}));
    return false;
  };
}

}  // namespace ef::exporter
