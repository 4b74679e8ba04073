#include "lora/personalize_eval.h"

#include <spdlog/spdlog.h>

#include "core/atomic_file.h"
#include "core/feature_metrics.h"
#include "core/image_io.h"
#include "core/run.h"
#include "lora/style_eval.h"

namespace ef::lora {
namespace {

namespace fs = std::filesystem;

torch::Tensor signed_images(const torch::Tensor& nhwc) { return nhwc.permute({0, 3, 1, 2}).to(torch::kFloat32).div(127.5).sub(1); }

torch::Tensor unit_rows(const torch::Tensor& f) { return f / f.norm(2, 1, true).clamp_min(1e-12); }

// Mean cosine similarity over every pair of rows of a [N, D] and b [M, D] (rows unit-norm).
double mean_cosine(const torch::Tensor& a, const torch::Tensor& b) { return a.matmul(b.t()).mean().item<double>(); }

}  // namespace

PersonalizeEvalOptions PersonalizeEvalOptions::from(const Config& eval) {
  PersonalizeEvalOptions o;
  o.prompts = eval.get<int64_t>("prompts", o.prompts);
  o.seeds = eval.get<int64_t>("seeds", o.seeds);
  o.sampler = SamplerOptions::from(eval.section("sampler"));
  o.guidance = eval.get<double>("guidance", o.guidance);
  o.attribute_classifier = eval.get<std::string>("attribute_classifier", "");
  if (o.prompts < 1) eval.invalid("prompts", "at least 1 prompt");
  if (o.seeds < 2) eval.invalid("seeds", "at least 2 samples per prompt (diversity compares them)");
  return o;
}

PersonalizeEvaluator::PersonalizeEvaluator(PersonalizeEvalOptions options, const SubjectDataset& train, const SubjectDataset* val,
                                           const SubjectDataset* klass, torch::Device device, uint64_t seed)
    : opt_(std::move(options)), train_(train), val_(val), class_(klass), seed_(seed) {
  if (!opt_.attribute_classifier.empty())
    classifier_.emplace(AttributeClassifier::load(resolve_run_folder(opt_.attribute_classifier, "eval.attribute_classifier"), device));
  if (train_.subject() < 0) {  // a user's folder: its own prompt
    prompts_ = {train_.text_at(0)};
    labels_ = {-1};
    return;
  }
  const auto& attrs = train_.attributes();
  const int64_t position = train_.attribute_index("position"), background = train_.attribute_index("background"),
                colour = train_.attribute_index("colour");
  const int64_t classified = classifier_ ? train_.attribute_index(classifier_->attribute()) : -1;
  const int64_t positions = static_cast<int64_t>(attrs[position].values.size()), backgrounds = static_cast<int64_t>(attrs[background].values.size());
  for (int64_t p = 0; p < opt_.prompts; ++p) {
    torch::Tensor row = train_.labels()[0].clone();
    std::vector<int64_t> l(row.data_ptr<int64_t>(), row.data_ptr<int64_t>() + row.numel());
    l[position] = (2 * p + 1) % positions;  // places spread over the grid
    l[background] = (p + p / backgrounds) % backgrounds;
    l[colour] = static_cast<int64_t>(std::find(attrs[colour].values.begin(), attrs[colour].values.end(), "red") - attrs[colour].values.begin());
    std::string prompt = scene_caption(attrs, l);
    prompt.replace(prompt.find(" red "), 5, " " + train_.token() + " ");
    prompts_.push_back(prompt);
    labels_.push_back(classified >= 0 ? l[classified] : -1);
  }
}

void PersonalizeEvaluator::prepare(LatentDiffusion& model) {
  if (prepared_) return;
  const torch::Tensor train_images = signed_images(train_.images());
  if (!val_) {
    centre_ = torch::zeros({1, latent_features(model, train_images.narrow(0, 0, 1)).size(1)});
    reference_ = unit_rows(latent_features(model, train_images));
    prepared_ = true;
    return;
  }
  const torch::Tensor val_images = signed_images(val_->images()), class_images = signed_images(class_->images());
  // Pooled latents share a large common part: similarities are measured about the class scenes'
  // mean feature, so that they tell the subject from other objects of its class.
  const torch::Tensor class_features = latent_features(model, class_images);
  centre_ = class_features.mean(0, true);
  reference_ = unit_rows(latent_features(model, val_images) - centre_);
  references_["sim_real"] = mean_cosine(unit_rows(latent_features(model, train_images) - centre_), reference_);
  references_["sim_class"] = mean_cosine(unit_rows(class_features - centre_), reference_);
  // the probe is fitted on the even rows and checked on the odd ones
  const torch::Tensor pos = probe_features(model, val_images), neg = probe_features(model, class_images);
  auto half = [](const torch::Tensor& t, int64_t parity) { return t.index_select(0, torch::arange(parity, t.size(0), 2)); };
  probe_ = StyleProbe::fit(half(pos, 0), half(neg, 0));
  if (pos.size(0) > 1 && neg.size(0) > 1) references_["subj_probe_acc"] = probe_->accuracy(half(pos, 1), half(neg, 1));
  probe_ = StyleProbe::fit(pos, neg);  // then on all of them for scoring
  prepared_ = true;
}

torch::Tensor PersonalizeEvaluator::generate(LatentDiffusion& model) {
  std::vector<std::string> all;
  for (const auto& p : prompts_)
    for (int64_t k = 0; k < opt_.seeds; ++k) all.push_back(p);
  torch::NoGradGuard no_grad;
  return model.generate(all, train_.image_size(), opt_.sampler, opt_.guidance, seed_).to(torch::kCPU);
}

Scalars PersonalizeEvaluator::evaluate(LatentDiffusion& model) {
  prepare(model);
  Scalars out = references_;
  const torch::Tensor images = generate(model);
  const torch::Tensor f = latent_features(model, images);
  out["sim"] = mean_cosine(unit_rows(f - centre_), reference_);
  if (probe_) out["subj"] = probe_->probability(probe_features(model, images)).mean().item<double>();
  const int64_t P = static_cast<int64_t>(prompts_.size()), K = opt_.seeds;
  double div = 0;
  for (int64_t p = 0; p < P; ++p) div += mean_pairwise_distance(f.narrow(0, p * K, K));
  out["div"] = div / static_cast<double>(P);
  if (classifier_ && labels_.front() >= 0) {
    torch::Tensor labels = torch::tensor(labels_).repeat_interleave(K);
    out["acc"] = classifier_->accuracy(images, labels);
  }
  return out;
}

void PersonalizeEvaluator::write_samples(LatentDiffusion& model, const fs::path& dir, int64_t step, MetricLogger& log) {
  torch::Tensor grid = make_grid((generate(model) + 1) / 2, opt_.seeds);
  fs::create_directories(dir);
  const std::string stem = "samples_step_" + std::to_string(step);
  write_png(dir / (stem + ".png"), to_uint8_hwc(grid));
  write_file_atomically(dir / (stem + ".json"), nlohmann::json({{"rows", prompts_}}).dump(1));
  log.image("samples/personalize", step, grid);
}

}  // namespace ef::lora
