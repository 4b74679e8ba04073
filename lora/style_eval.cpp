#include "lora/style_eval.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <sstream>

#include "core/atomic_file.h"
#include "core/feature_metrics.h"
#include "core/image_io.h"
#include "core/run.h"
#include "lora/analysis.h"
#include "lora/foura.h"

namespace ef::lora {
namespace {

namespace fs = std::filesystem;
namespace F = torch::nn::functional;

std::string strength_suffix(double s) {
  std::ostringstream o;
  o.precision(2);
  o << std::fixed << s;
  std::string t = o.str();
  while (t.size() > 3 && t.back() == '0') t.pop_back();  // 1.00 -> 1.0, 0.60 -> 0.6
  return "@" + t;
}

// Images [N,3,H,W] of a dataset (uint8 [N,H,W,3]) as floats in [-1,1].

}  // namespace

StyleEvalOptions StyleEvalOptions::from(const Config& eval) {
  StyleEvalOptions o;
  o.prompts = eval.get<int64_t>("prompts", o.prompts);
  o.seeds = eval.get<int64_t>("seeds", o.seeds);
  o.strengths = eval.get<std::vector<double>>("strengths", o.strengths);
  Config sampler = eval.section("sampler");
  if (!sampler.has("steps")) o.sampler.steps = 10;
  o.sampler = SamplerOptions::from(sampler);
  o.guidance = eval.get<double>("guidance", o.guidance);
  o.attribute_classifier = eval.get<std::string>("attribute_classifier", "");
  o.copy_factor = eval.get<double>("copy_factor", o.copy_factor);
  o.timesteps = eval.get<std::vector<int64_t>>("timesteps", o.timesteps);
  if (o.prompts < 1) eval.invalid("prompts", "at least 1 prompt per set");
  if (o.seeds < 2) eval.invalid("seeds", "at least 2 samples per prompt (diversity compares them)");
  if (o.strengths.empty()) eval.invalid("strengths", "name at least one strength");
  for (double s : o.strengths)
    if (!(s >= 0 && s <= 4)) eval.invalid("strengths", "strengths lie in [0, 4], got " + std::to_string(s));
  if (!(o.copy_factor > 0)) eval.invalid("copy_factor", "must be positive");
  return o;
}

StrengthGuard::StrengthGuard(const std::vector<Adapters>& adapters, double s) : adapters_(adapters) {
  for (auto& a : adapters_) a->set_strength(s);
}
StrengthGuard::~StrengthGuard() {
  for (auto& a : adapters_) a->set_strength(1.0);
}

StyleEvaluator::StyleEvaluator(StyleEvalOptions options, LatentDiffusion& model, const StyleDataset& train, const StyleDataset& val,
                               const StyleDataset& unseen, uint64_t seed)
    : opt_(std::move(options)), model_(model), train_(train), val_(val), unseen_(unseen), seed_(seed) {
  if (!opt_.attribute_classifier.empty())
    classifier_.emplace(AttributeClassifier::load(resolve_run_folder(opt_.attribute_classifier, "eval.attribute_classifier"), model.device()));
  if (classifier_) train_.attribute_index(classifier_->attribute());  // throws naming the attributes when unknown
}

torch::Tensor latent_features(LatentDiffusion& model, const torch::Tensor& images) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> out;
  for (int64_t begin = 0; begin < images.size(0); begin += 64) {
    torch::Tensor z = model.encode(images.narrow(0, begin, std::min<int64_t>(64, images.size(0) - begin)).to(model.device()));
    out.push_back(F::adaptive_avg_pool2d(z, F::AdaptiveAvgPool2dFuncOptions({4, 4})).flatten(1).to(torch::kCPU));
  }
  return torch::cat(out);
}

torch::Tensor probe_features(LatentDiffusion& model, const torch::Tensor& images) {
  torch::Tensor x = images.to(torch::kCPU);
  torch::Tensor colour = torch::cat({x.mean({2, 3}), x.std({2, 3})}, 1);
  torch::Tensor gx = (x.narrow(3, 1, x.size(3) - 1) - x.narrow(3, 0, x.size(3) - 1)).abs().mean({1, 2, 3});
  torch::Tensor gy = (x.narrow(2, 1, x.size(2) - 1) - x.narrow(2, 0, x.size(2) - 1)).abs().mean({1, 2, 3});
  return torch::cat({latent_features(model, images), colour, gx.unsqueeze(1), gy.unsqueeze(1)}, 1);
}

torch::Tensor StyleEvaluator::features(const torch::Tensor& images) { return latent_features(model_, images); }
torch::Tensor StyleEvaluator::probe_features(const torch::Tensor& images) { return ef::lora::probe_features(model_, images); }

void StyleEvaluator::prepare() {
  if (prepared_) return;
  const torch::Tensor train_images = signed_scene_images(train_.images());
  train_features_ = features(train_images);
  val_features_ = features(signed_scene_images(val_.images()));
  unseen_features_ = features(signed_scene_images(unseen_.images()));
  probe_ = StyleProbe::fit(torch::cat({probe_features(train_images), probe_features(signed_scene_images(val_.images()))}),
                           torch::cat({probe_features(signed_scene_images(train_.plain())), probe_features(signed_scene_images(val_.plain()))}));
  probe_accuracy_ = probe_->accuracy(probe_features(signed_scene_images(unseen_.images())), probe_features(signed_scene_images(unseen_.plain())));
  train_spacing_ = copy_threshold(train_features_, 1.0);
  copy_threshold_ = opt_.copy_factor * train_spacing_;
  prepared_ = true;
}

StyleEvaluator::PromptSet StyleEvaluator::prompt_set(const StyleDataset& data) const {
  PromptSet set;
  const int64_t n = std::min(opt_.prompts, data.size());
  const int64_t a = classifier_ ? data.attribute_index(classifier_->attribute()) : -1;
  for (int64_t i = 0; i < n; ++i) {
    set.prompts.push_back(data.text_at(i));
    set.labels.push_back(a >= 0 ? data.labels()[i][a].item<int64_t>() : -1);
  }
  return set;
}

torch::Tensor StyleEvaluator::generate(const PromptSet& set, uint64_t seed) {
  std::vector<std::string> all;
  for (const auto& p : set.prompts)
    for (int64_t k = 0; k < opt_.seeds; ++k) all.push_back(p);
  torch::NoGradGuard no_grad;
  return model_.generate(all, train_.image_size(), opt_.sampler, opt_.guidance, seed).to(torch::kCPU);
}

Scalars StyleEvaluator::score(const PromptSet& set, const torch::Tensor& images, const torch::Tensor& reference, const std::string& suffix) {
  const int64_t P = static_cast<int64_t>(set.prompts.size()), K = opt_.seeds;
  torch::Tensor f = features(images);
  Scalars out;
  out["style" + suffix] = probe_->probability(probe_features(images)).mean().item<double>();
  double div = 0, div_ssim = 0;
  for (int64_t p = 0; p < P; ++p) {
    div += mean_pairwise_distance(f.narrow(0, p * K, K));
    div_ssim += mean_pairwise_dissimilarity(images.narrow(0, p * K, K));
  }
  out["div" + suffix] = div / static_cast<double>(P);
  out["div_ssim" + suffix] = div_ssim / static_cast<double>(P);
  out["copy" + suffix] = copy_fraction(f, train_features_, copy_threshold_);
  out["nn_train" + suffix] = nearest_distances(f, train_features_).mean().item<double>() / train_spacing_;
  out["fd" + suffix] = frechet_distance(f, reference);
  if (classifier_) {
    torch::Tensor labels = torch::tensor(set.labels).repeat_interleave(K);
    out["acc" + suffix] = classifier_->accuracy(images.to(model_.device()), labels.to(model_.device()));
  }
  return out;
}

Scalars StyleEvaluator::effective_ranks(const std::vector<Adapters>& adapters) {
  // One denoiser pass per timestep on noised held-out latents; FouRA's adaptive gates report the
  // rank they kept (brief Fig. 5: r_eff per layer against t).
  std::vector<std::pair<std::string, FouraImpl*>> gated;
  for (const auto& a : adapters)
    for (const auto& l : a->layers())
      if (auto* f = dynamic_cast<FouraImpl*>(l.adapter.get()); f && f->options().gate == "adaptive") gated.emplace_back(l.path, f);
  if (gated.empty()) return {};
  torch::NoGradGuard no_grad;
  const int64_t n = std::min<int64_t>(val_.size(), 16);
  torch::Tensor images = signed_scene_images(val_.images().narrow(0, 0, n)).to(model_.device());
  std::vector<std::string> prompts;
  for (int64_t i = 0; i < n; ++i) prompts.push_back(val_.text_at(i));
  torch::Tensor z0 = model_.encode(images) * model_.latent_scale();
  torch::Tensor context = model_.embed_text(prompts);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed_ + 777);
  torch::Tensor eps = torch::randn(z0.sizes(), gen, torch::kFloat32).to(model_.device());
  Scalars out;
  std::ostringstream table;
  table << "FouRA effective rank per layer (rank " << gated.front().second->options().rank << "):\n  layer";
  for (int64_t t : opt_.timesteps) table << "  t=" << t;
  std::vector<std::vector<double>> ranks(gated.size());
  for (int64_t t : opt_.timesteps) {
    const int64_t tt = std::clamp<int64_t>(t, 0, model_.schedule.steps() - 1);
    torch::Tensor ts = torch::full({n}, tt, torch::TensorOptions().dtype(torch::kInt64).device(model_.device()));
    model_.predict(model_.schedule.add_noise(z0, eps, ts), ts, context);
    double sum = 0;
    for (size_t i = 0; i < gated.size(); ++i) ranks[i].push_back(gated[i].second->effective_rank()), sum += ranks[i].back();
    out["r_eff_t" + std::to_string(t)] = sum / static_cast<double>(gated.size());
  }
  for (size_t i = 0; i < gated.size(); ++i) {
    table << "\n  " << gated[i].first;
    for (double r : ranks[i]) table << "  " << r;
  }
  spdlog::info("{}", table.str());
  return out;
}

Scalars StyleEvaluator::evaluate(const std::vector<Adapters>& adapters) {
  prepare();
  Scalars out = {{"style_probe_acc", probe_accuracy_}};
  const PromptSet seen = prompt_set(val_), unseen = prompt_set(unseen_);
  for (double s : opt_.strengths) {
    StrengthGuard guard(adapters, s);
    for (auto& [k, v] : score(seen, generate(seen, seed_), val_features_, strength_suffix(s))) out[k] = v;
    for (auto& [k, v] : score(unseen, generate(unseen, seed_ + 1), unseen_features_, "_unseen" + strength_suffix(s))) out[k] = v;
  }
  for (auto& [k, v] : effective_ranks(adapters)) out[k] = v;
  // ΔW is defined for adapters that are a fixed linear map (LoRA, FouRA with gate none or frozen)
  std::vector<LayerAnalysis> rows;
  for (const auto& a : adapters) {
    bool linear = true;
    for (const auto& l : a->layers()) linear = linear && l.adapter->weight_equivalent();
    if (linear)
      for (auto& r : analyse(*a.ptr())) rows.push_back(std::move(r));
  }
  if (!rows.empty()) {
    spdlog::info("ΔW analyses:\n{}", format_table(rows));
    // means over the layers where each is defined (amplification is NaN for ΔW = 0, +inf for a ΔW
    // outside W0's row and column spaces)
    double erank = 0, amp = 0;
    int64_t n_erank = 0, n_amp = 0;
    for (const auto& r : rows) {
      if (std::isfinite(r.effective_rank)) erank += r.effective_rank, ++n_erank;
      if (std::isfinite(r.amplification)) amp += r.amplification, ++n_amp;
    }
    if (n_erank) out["sv_erank"] = erank / static_cast<double>(n_erank);
    if (n_amp) out["amp"] = amp / static_cast<double>(n_amp);
  }
  return out;
}

void StyleEvaluator::write_samples(const fs::path& dir, int64_t step, MetricLogger& log, const std::vector<Adapters>& adapters) {
  const double s = *std::max_element(opt_.strengths.begin(), opt_.strengths.end());
  StrengthGuard guard(adapters, s);
  const PromptSet seen = prompt_set(val_), unseen = prompt_set(unseen_);
  torch::Tensor images = torch::cat({generate(seen, seed_), generate(unseen, seed_ + 1)});
  torch::Tensor grid = make_grid((images + 1) / 2, opt_.seeds);
  fs::create_directories(dir);
  const std::string stem = "samples_step_" + std::to_string(step);
  write_png(dir / (stem + ".png"), to_uint8_hwc(grid));
  std::vector<std::string> rows = seen.prompts;
  rows.insert(rows.end(), unseen.prompts.begin(), unseen.prompts.end());
  write_file_atomically(dir / (stem + ".json"), nlohmann::json({{"strength", s}, {"rows", rows}}).dump(1));
  log.image("samples/style", step, grid);
}

}  // namespace ef::lora
