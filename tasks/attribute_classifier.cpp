#include "tasks/attribute_classifier.h"

#include "core/atomic_file.h"
#include "core/checkpoint.h"
#include "core/config.h"
#include "core/trainer.h"
#include "models/vit.h"

namespace ef {

namespace fs = std::filesystem;

AttributeClassifier AttributeClassifier::load(const fs::path& run_dir, torch::Device device) {
  if (!fs::exists(run_dir / "config.json")) throw ConfigError(run_dir.string() + " is not a run folder (no config.json)");
  Config config = Config::load(run_dir / "config.json");
  const std::string recipe = config.get<std::string>("recipe", "");
  const std::string kind = config.section("data").get<std::string>("kind", "shapes");
  if (recipe != "classify" || kind != "captions")
    throw ConfigError(run_dir.string() + " is not a classify run on captions attributes (recipe \"" + recipe + "\", data.kind \"" + kind +
                      "\")");
  AttributeClassifier c;
  c.attribute_ = config.section("data").require<std::string>("attribute");
  const fs::path classes_file = run_dir / "classes.json";
  if (!fs::exists(classes_file)) throw std::runtime_error(run_dir.string() + " has no classes.json (written when the classify recipe starts)");
  try {
    nlohmann::json j = nlohmann::json::parse(read_file(classes_file));
    c.classes_ = j.at("classes").get<std::vector<std::string>>();
    if (j.value("attribute", nlohmann::json()) != nlohmann::json(c.attribute_))
      throw std::runtime_error(classes_file.string() + " names another attribute than config.json's data.attribute \"" + c.attribute_ + "\"");
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(classes_file.string() + ": not a valid class list: " + e.what());
  }

  // the network exactly as the recipe built it (the resolved config holds every option)
  Config m = config.section("model");
  ViTOptions vo = ViTOptions::from(m);
  if (vo.num_classes < static_cast<int64_t>(c.classes_.size()))
    throw std::runtime_error(run_dir.string() + ": model.num_classes " + std::to_string(vo.num_classes) + " is below the " +
                             std::to_string(c.classes_.size()) + " classes of '" + c.attribute_ + "'");
  ViT model(vo, m.section("attention"));
  CheckpointStore store(run_dir / "ckpt", 0);
  auto latest = store.latest();
  if (!latest) throw std::runtime_error(run_dir.string() + " has no checkpoint yet");
  c.checkpoint_ = *latest;
  load_module_weights(*model, c.checkpoint_, "model", /*prefer_ema=*/true);
  model->to(device);
  model->eval();
  c.model_ = model.ptr();
  c.device_ = device;
  return c;
}

std::string AttributeClassifier::attribute() const { return attribute_; }
const std::vector<std::string>& AttributeClassifier::classes() const { return classes_; }
int64_t AttributeClassifier::image_size() const { return model_->options().image_size; }
const fs::path& AttributeClassifier::checkpoint() const { return checkpoint_; }

torch::Tensor AttributeClassifier::logits(const torch::Tensor& images) const {
  const int64_t s = image_size();
  if (images.dim() != 4 || images.size(1) != 3 || images.size(2) != s || images.size(3) != s)
    throw std::invalid_argument("AttributeClassifier('" + attribute_ + "'): expected images [B, 3, " + std::to_string(s) + ", " +
                                std::to_string(s) + "], got " + c10::str(images.sizes()));
  if (!images.is_floating_point()) throw std::invalid_argument("AttributeClassifier: expected float images in [-1, 1], got " + std::string(c10::toString(images.scalar_type())));
  torch::NoGradGuard no_grad;
  torch::Tensor out = model_->forward(images.to(device_, torch::kFloat32)).to(torch::kFloat32);
  model_->take_aux_losses();
  return out.narrow(1, 0, static_cast<int64_t>(classes_.size())).to(images.device());
}

torch::Tensor AttributeClassifier::predict(const torch::Tensor& images) const { return logits(images).argmax(1); }

double AttributeClassifier::accuracy(const torch::Tensor& images, const torch::Tensor& labels, int64_t batch_size) const {
  if (labels.dim() != 1 || labels.size(0) != images.size(0))
    throw std::invalid_argument("AttributeClassifier::accuracy: labels " + c10::str(labels.sizes()) + " do not match images " + c10::str(images.sizes()));
  if (images.size(0) == 0) return 0.0;
  int64_t correct = 0;
  for (int64_t b = 0; b < images.size(0); b += batch_size) {
    const int64_t n = std::min(batch_size, images.size(0) - b);
    correct += (predict(images.narrow(0, b, n)).cpu() == labels.narrow(0, b, n).cpu().to(torch::kInt64)).sum().item<int64_t>();
  }
  return static_cast<double>(correct) / static_cast<double>(images.size(0));
}

}  // namespace ef
