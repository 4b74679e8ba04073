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


// Rows scaled to unit length (an all-zero row, an image without colour, stays zero: it
// is similar to nothing).
torch::Tensor unit_rows(const torch::Tensor& f) { return f / f.norm(2, 1, true).clamp_min(1e-12); }

// Position-invariant features of images [B,3,H,W] in [-1,1] (the subject appears anywhere, and pooled
// latents mostly say where): a hue histogram of 12 bins, each pixel counted by its chroma (greys,
// the scenes' backgrounds, count nothing; saturated objects most) and spread over neighbouring bins
// by a Gaussian of 30 degrees, so that a slightly shifted shade still resembles its colour.
torch::Tensor subject_features(const torch::Tensor& images) {
  torch::NoGradGuard no_grad;
  const torch::Tensor x = (images.to(torch::kCPU, torch::kFloat32) + 1) / 2;  // [0, 1]
  const torch::Tensor r = x.select(1, 0), g = x.select(1, 1), b = x.select(1, 2);
  const torch::Tensor hi = std::get<0>(x.max(1)), chroma = hi - std::get<0>(x.min(1));
  const torch::Tensor c = chroma.clamp_min(1e-6);
  // hue in sixths of the circle, as in HSV
  torch::Tensor hue = torch::where(hi == r, ((g - b) / c).remainder(6.0), torch::where(hi == g, (b - r) / c + 2, (r - g) / c + 4));
  hue = (hue * 60.0).flatten(1).unsqueeze(-1);  // [B, HW, 1] degrees
  const torch::Tensor centres = torch::arange(12, torch::kFloat32).mul(30.0).view({1, 1, 12});
  const torch::Tensor d = ((hue - centres).remainder(360.0) + 180.0).remainder(360.0) - 180.0;  // signed angle
  const torch::Tensor w = torch::exp(-0.5 * (d / 30.0).pow(2)) * chroma.flatten(1).unsqueeze(-1);
  return w.sum(1) / static_cast<double>(hue.size(1));  // [B, 12]
}

// Mean cosine similarity over every pair of rows of a [N, D] and b [M, D] (rows unit-norm).
double mean_cosine(const torch::Tensor& a, const torch::Tensor& b) { return a.matmul(b.t()).mean().item<double>(); }

// The denoising loss of `model` on every image of `data` with its own caption, at timesteps and
// noise drawn from `seed` (the same at every evaluation), averaged over `draws` draws.
double heldout_loss(LatentDiffusion& model, const SubjectDataset& data, uint64_t seed, int64_t draws = 4) {
  torch::NoGradGuard no_grad;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  std::vector<std::string> texts;
  for (int64_t i = 0; i < data.size(); ++i) texts.push_back(data.text_at(i));
  const torch::Tensor z = model.encode(signed_scene_images(data.images()).to(model.device())) * model.latent_scale();
  const torch::Tensor context = model.embed_text(texts);
  double total = 0;
  for (int64_t d = 0; d < draws; ++d)
    total += denoising_loss(model.schedule, z, [&](const torch::Tensor& x, const torch::Tensor& t) { return model.predict(x, t, context); }, gen)
                 .item<double>();
  return total / static_cast<double>(draws);
}

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
  const torch::Tensor train_images = signed_scene_images(train_.images());
  if (!val_) {
    reference_ = unit_rows(subject_features(train_images));
    prepared_ = true;
    return;
  }
  const torch::Tensor val_images = signed_scene_images(val_->images()), class_images = signed_scene_images(class_->images());
  const torch::Tensor class_features = subject_features(class_images), val_features = subject_features(val_images);
  reference_ = unit_rows(val_features);
  references_["sim_real"] = mean_cosine(unit_rows(subject_features(train_images)), reference_);
  references_["sim_class"] = mean_cosine(unit_rows(class_features), reference_);
  // the probe is fitted on the even rows and checked on the odd ones
  const torch::Tensor pos = val_features, neg = class_features;
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
  out["subj_loss"] = heldout_loss(model, val_ ? *val_ : train_, seed_ + 101);
  if (class_) out["class_loss"] = heldout_loss(model, *class_, seed_ + 202);
  const torch::Tensor images = generate(model);
  const torch::Tensor f = subject_features(images);
  out["sim"] = mean_cosine(unit_rows(f), reference_);
  if (probe_) out["subj"] = probe_->probability(f).mean().item<double>();
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
