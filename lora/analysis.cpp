#include "lora/analysis.h"

#include <cmath>
#include <iomanip>
#include <limits>
#include <sstream>
#include <stdexcept>

namespace ef::lora {

namespace {

void check_same_shape(const char* what, const torch::Tensor& a, const torch::Tensor& b) {
  if (a.sizes() != b.sizes()) {
    std::ostringstream msg;
    msg << what << ": shapes differ: " << a.sizes() << " vs " << b.sizes();
    throw std::invalid_argument(msg.str());
  }
}

// Thin SVD in float64: U [out, k], S [k], Vh [k, in], k = min(out, in).
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> thin_svd(const torch::Tensor& weight) {
  return torch::linalg_svd(as_matrix(weight), /*full_matrices=*/false);
}

int64_t clamp_rank(int64_t r, const torch::Tensor& m) {
  return std::max<int64_t>(0, std::min<int64_t>(r, std::min(m.size(0), m.size(1))));
}

}  // namespace

torch::Tensor as_matrix(const torch::Tensor& weight) {
  if (weight.dim() != 2 && weight.dim() != 4) {
    std::ostringstream msg;
    msg << "lora analysis: expected a weight [out, in] or [out, in, kh, kw], got " << weight.sizes();
    throw std::invalid_argument(msg.str());
  }
  auto w = weight.detach().to(torch::kCPU, torch::kFloat64).contiguous();
  return w.reshape({w.size(0), -1}).clone();  // clone: never alias the caller's storage
}

torch::Tensor singular_values(const torch::Tensor& weight) { return torch::linalg_svdvals(as_matrix(weight)); }

torch::Tensor normalised_spectrum(const torch::Tensor& sigma) {
  auto s = sigma.to(torch::kFloat64);
  if (s.numel() == 0) return s;
  const double top = s[0].item<double>();
  return top > 0 ? s / top : torch::zeros_like(s);
}

double energy_fraction(const torch::Tensor& sigma, int64_t k) {
  auto e = sigma.to(torch::kFloat64).pow(2);
  const double total = e.sum().item<double>();
  if (total <= 0) return 1.0;
  k = std::max<int64_t>(0, std::min<int64_t>(k, e.numel()));
  return e.slice(0, 0, k).sum().item<double>() / total;
}

double effective_rank(const torch::Tensor& sigma) {
  auto s = sigma.to(torch::kFloat64).clamp_min(0);
  const double total = s.sum().item<double>();
  if (total <= 0) return 0.0;
  auto p = s / total;
  auto h = -torch::special_xlogy(p, p).sum();  // xlogy(0, 0) = 0
  return std::exp(h.item<double>());
}

double amplification_factor(const torch::Tensor& w0, const torch::Tensor& delta_w, int64_t r) {
  check_same_shape("amplification_factor", w0, delta_w);
  auto [u, s, vh] = thin_svd(delta_w);
  r = clamp_rank(r, u);
  auto ur = u.slice(1, 0, r);                    // [out, r]
  auto vr = vh.slice(0, 0, r).transpose(0, 1);   // [in', r]
  auto base = as_matrix(w0);
  auto projected = ur.transpose(0, 1).matmul(base).matmul(vr);  // [r, r]
  // ‖ΔW‖_F from its singular values: the same number, without a second pass over ΔW.
  const double num = s.pow(2).sum().sqrt().item<double>();
  // ΔW = 0 has no singular directions (the SVD returns an arbitrary basis): no factor.
  if (num == 0) return std::numeric_limits<double>::quiet_NaN();
  const double den = projected.norm().item<double>();
  // A ΔW inside W0's null space projects to rounding noise (~1e-16·‖W0‖), not to 0: below a
  // relative 1e-12 the projection is 0 and the factor unbounded, rather than an arbitrary 1e15.
  if (den <= 1e-12 * base.norm().item<double>()) return std::numeric_limits<double>::infinity();
  return num / den;
}

torch::Tensor top_left_singular_vectors(const torch::Tensor& weight, int64_t r) {
  auto u = std::get<0>(thin_svd(weight));
  return u.slice(1, 0, clamp_rank(r, u)).contiguous();
}

double subspace_similarity(const torch::Tensor& delta_a, const torch::Tensor& delta_b, int64_t r) {
  check_same_shape("subspace_similarity", delta_a, delta_b);
  auto ua = top_left_singular_vectors(delta_a, r), ub = top_left_singular_vectors(delta_b, r);
  const int64_t k = ua.size(1);
  if (k == 0) return std::numeric_limits<double>::quiet_NaN();
  return ua.transpose(0, 1).matmul(ub).pow(2).sum().item<double>() / double(k);
}

torch::Tensor subspace_similarity_grid(const torch::Tensor& delta_a, const torch::Tensor& delta_b, int64_t r_a,
                                       int64_t r_b) {
  check_same_shape("subspace_similarity_grid", delta_a, delta_b);
  auto ua = top_left_singular_vectors(delta_a, r_a), ub = top_left_singular_vectors(delta_b, r_b);
  // ‖U_a[:, :i]ᵀ U_b[:, :j]‖_F² is the sum of the squared cosines over the top-left i×j block of
  // M = U_aᵀ U_b: a 2-D prefix sum gives every block at once.
  auto m2 = ua.transpose(0, 1).matmul(ub).pow(2);  // [r_a, r_b]
  auto blocks = m2.cumsum(0).cumsum(1);
  auto i = torch::arange(1, m2.size(0) + 1, torch::kFloat64).unsqueeze(1);
  auto j = torch::arange(1, m2.size(1) + 1, torch::kFloat64).unsqueeze(0);
  return blocks / torch::minimum(i, j);
}

std::vector<LayerWeights> layer_weights(AdaptersImpl& adapters) {
  torch::NoGradGuard no_grad;
  std::vector<LayerWeights> out;
  for (const auto& l : adapters.layers()) {
    if (!l.adapter->weight_equivalent())
      throw std::logic_error("lora analysis: the adapter at '" + l.path + "' (" + l.adapter->kind() +
                             ") is not a fixed linear map in this mode, so it has no ΔW: call eval() for LoRA dropout, "
                             "freeze FouRA's adaptive gate or analyse it with gate \"none\"");
    const auto options = l.adapter->options_json();
    if (!options.contains("rank") || !options["rank"].is_number_integer())
      throw std::logic_error("lora analysis: the adapter at '" + l.path + "' (" + l.adapter->kind() +
                             ") has no integer \"rank\" in its options");
    LayerWeights w;
    w.path = l.path;
    w.describe = l.adapter->shape().describe();
    // the registered parameter holds W0 + Σ merged ΔW while any set on the layer is merged; the
    // stack keeps W0's bitwise copy then
    w.w0 = (l.stack->w0.defined() ? l.stack->w0 : l.stack->param).detach();
    w.delta_w = l.adapter->delta_weight().detach();
    w.rank = options["rank"].get<int64_t>();
    out.push_back(std::move(w));
  }
  return out;
}

std::vector<LayerAnalysis> analyse(const std::vector<LayerWeights>& layers, const std::vector<LayerWeights>* reference) {
  std::vector<LayerAnalysis> rows;
  for (const auto& l : layers) {
    check_same_shape(("lora analysis: '" + l.path + "' W0 and ΔW").c_str(), l.w0, l.delta_w);
    LayerAnalysis row;
    row.path = l.path;
    row.describe = l.describe;
    row.rank = l.rank;
    auto sigma = singular_values(l.delta_w);
    auto s = sigma.contiguous();
    row.singular_values.assign(s.data_ptr<double>(), s.data_ptr<double>() + s.numel());
    row.delta_norm = sigma.pow(2).sum().sqrt().item<double>();
    row.base_norm = as_matrix(l.w0).norm().item<double>();
    row.energy_top_r = energy_fraction(sigma, l.rank);
    row.effective_rank = effective_rank(sigma);
    row.amplification = amplification_factor(l.w0, l.delta_w, l.rank);
    if (reference)
      for (const auto& o : *reference)
        if (o.path == l.path) {
          check_same_shape(("lora analysis: '" + l.path + "' ΔW against the reference's").c_str(), l.delta_w, o.delta_w);
          row.similarity = subspace_similarity(l.delta_w, o.delta_w, std::min(l.rank, o.rank));
          break;
        }
    rows.push_back(std::move(row));
  }
  return rows;
}

std::vector<LayerAnalysis> analyse(AdaptersImpl& adapters, AdaptersImpl* reference) {
  const auto layers = layer_weights(adapters);
  if (!reference) return analyse(layers);
  const auto other = layer_weights(*reference);
  return analyse(layers, &other);
}

std::string format_table(const std::vector<LayerAnalysis>& rows) {
  bool any_similarity = false;
  size_t path_w = 5, shape_w = 5;
  for (const auto& r : rows) {
    any_similarity |= r.similarity.has_value();
    path_w = std::max(path_w, r.path.size());
    shape_w = std::max(shape_w, r.describe.size());
  }
  std::ostringstream out;
  auto num = [&](double v, int width) {
    std::ostringstream cell;
    cell << std::setprecision(4) << v;  // general format: 0.1234, 1.235e-05, inf, nan
    out << ' ' << std::setw(width) << cell.str();
  };
  out << std::left << std::setw(int(path_w)) << "layer" << ' ' << std::setw(int(shape_w)) << "shape" << std::right
      << std::setw(5) << "r" << std::setw(11) << "|W0|" << std::setw(11) << "|dW|" << std::setw(11) << "s1"
      << std::setw(11) << "s_r/s1" << std::setw(11) << "E_top_r" << std::setw(11) << "eff_rank" << std::setw(11)
      << "amplif";
  if (any_similarity) out << std::setw(11) << "phi";
  out << '\n';
  for (const auto& r : rows) {
    const auto& s = r.singular_values;
    const double s1 = s.empty() ? 0.0 : s.front();
    const size_t k = size_t(std::max<int64_t>(1, std::min<int64_t>(r.rank, int64_t(s.size()))));
    const double tail = (s.empty() || s1 <= 0) ? 0.0 : s[k - 1] / s1;
    out << std::left << std::setw(int(path_w)) << r.path << ' ' << std::setw(int(shape_w)) << r.describe << std::right
        << std::setw(5) << r.rank;
    for (double v : {r.base_norm, r.delta_norm, s1, tail, r.energy_top_r, r.effective_rank, r.amplification}) num(v, 10);
    if (any_similarity) {
      if (r.similarity) num(*r.similarity, 10);
      else out << ' ' << std::setw(10) << "-";
    }
    out << '\n';
  }
  return out.str();
}

nlohmann::json to_json(const std::vector<LayerAnalysis>& rows) {
  // JSON has no inf/NaN (nlohmann would write null anyway); say it explicitly.
  auto finite = [](double v) -> nlohmann::json { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(); };
  auto layers = nlohmann::json::array();
  for (const auto& r : rows) {
    nlohmann::json j{{"path", r.path},
                     {"describe", r.describe},
                     {"rank", r.rank},
                     {"singular_values", r.singular_values},
                     {"delta_norm", finite(r.delta_norm)},
                     {"base_norm", finite(r.base_norm)},
                     {"energy_top_r", finite(r.energy_top_r)},
                     {"effective_rank", finite(r.effective_rank)},
                     {"amplification", finite(r.amplification)}};
    if (r.similarity) j["similarity"] = finite(*r.similarity);
    layers.push_back(std::move(j));
  }
  return {{"layers", layers}};
}

}  // namespace ef::lora
