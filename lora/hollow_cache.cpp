#include "lora/hollow_cache.h"

#include <cstdio>

#include "core/config.h"
#include "core/crc32c.h"
#include "core/safetensors.h"

namespace ef::lora {
namespace {

constexpr int64_t kCacheSchema = 1;

std::string hex(uint32_t v) {
  char buf[9];
  std::snprintf(buf, sizeof buf, "%08x", v);
  return buf;
}

// crc32c continued over a tensor's bytes (contiguous CPU copy).
uint32_t extend(uint32_t crc, const torch::Tensor& t) {
  torch::Tensor c = t.to(torch::kCPU).contiguous();
  const uint32_t part = crc32c(c.data_ptr(), static_cast<size_t>(c.nbytes()));
  const uint32_t both[2] = {crc, part};
  return crc32c(both, sizeof both);
}

}  // namespace

TrainingSchedule TrainingSchedule::make(int64_t steps, int64_t batch, int64_t images, std::vector<int64_t> latent_shape, int64_t timesteps,
                                        double text_dropout, uint64_t seed) {
  TORCH_CHECK(steps > 0 && batch > 0 && images > 0, "TrainingSchedule: steps, batch and images must be positive");
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  TrainingSchedule s;
  // images: each epoch a fresh permutation, read in order
  std::vector<int64_t> order;
  s.index = torch::empty({steps, batch}, torch::kInt64);
  auto idx = s.index.accessor<int64_t, 2>();
  size_t next = 0;
  for (int64_t i = 0; i < steps; ++i)
    for (int64_t j = 0; j < batch; ++j) {
      if (next == order.size()) {
        torch::Tensor perm = at::randperm(images, gen, torch::TensorOptions().dtype(torch::kInt64));
        order.assign(perm.data_ptr<int64_t>(), perm.data_ptr<int64_t>() + images);
        next = 0;
      }
      idx[i][j] = order[next++];
    }
  s.t = at::randint(0, timesteps, {steps, batch}, gen, torch::TensorOptions().dtype(torch::kInt64));
  std::vector<int64_t> shape = {steps, batch};
  shape.insert(shape.end(), latent_shape.begin(), latent_shape.end());
  s.noise = at::randn(shape, gen, torch::TensorOptions().dtype(torch::kFloat32));
  s.drop = at::rand({steps, batch}, gen, torch::TensorOptions().dtype(torch::kFloat32)) < text_dropout;
  return s;
}

std::string TrainingSchedule::checksum() const {
  uint32_t crc = 0;
  for (const auto& t : {index, t, noise, drop}) crc = extend(crc, t);
  return hex(crc);
}

std::string state_checksum(const torch::nn::Module& module) {
  uint32_t crc = 0;
  for (const auto& [name, t] : module_state(module)) {
    crc = extend(crc, torch::tensor(std::vector<int64_t>(name.begin(), name.end())));
    crc = extend(crc, t);
  }
  return hex(crc);
}

void HollowCache::write(const std::filesystem::path& path, const nlohmann::json& identity, const HollowPlan& plan, int64_t steps,
                        const torch::Tensor& contexts, const std::function<CachedBatch(int64_t step)>& row_fill) {
  std::vector<torch::Tensor> x_t, target, t, ci, h_in;
  std::map<int64_t, std::vector<torch::Tensor>> skips;
  for (int64_t s = 0; s < steps; ++s) {
    CachedBatch b = row_fill(s);
    x_t.push_back(b.x_t.to(torch::kCPU, torch::kFloat32));
    target.push_back(b.target.to(torch::kCPU, torch::kFloat32));
    t.push_back(b.t.to(torch::kCPU, torch::kInt64));
    ci.push_back(b.context_index.to(torch::kCPU, torch::kInt64));
    h_in.push_back(b.boundary.h_in.to(torch::kCPU, torch::kFloat32));
    for (int64_t k : plan.cached_skips()) skips[k].push_back(b.boundary.skips.at(k).to(torch::kCPU, torch::kFloat32));
  }
  if (std::filesystem::path dir = path.parent_path(); !dir.empty()) std::filesystem::create_directories(dir);
  write_h5_atomically(path, [&](H5File& f) {
    f.set_attr("schema_version", kCacheSchema);
    f.set_attr("generator", "hollow_cache");
    f.set_attr("identity", identity.dump());
    f.set_attr("batch", x_t.front().size(0));
    f.write("x_t", torch::cat(x_t));
    f.write("target", torch::cat(target));
    f.write("t", torch::cat(t));
    f.write("context_index", torch::cat(ci));
    f.write("contexts", contexts.to(torch::kCPU, torch::kFloat32));
    f.write("h_in", torch::cat(h_in));
    for (auto& [k, v] : skips) f.write("skip_" + std::to_string(k), torch::cat(v));
  });
}

HollowCache::HollowCache(const std::filesystem::path& path, const nlohmann::json& expected, const HollowPlan& plan)
    : file_([&] {
        try {
          return H5File(path, H5File::Mode::Read);
        } catch (const std::runtime_error& e) {
          throw InputError(std::string("hollow.cache: ") + e.what());
        }
      }()),
      plan_(plan) {
  const std::string where = "hollow.cache " + path.string();
  if (!file_.has_attr("generator") || file_.attr_string("generator") != "hollow_cache")
    throw InputError(where + " is not a Hollowed-Net activation cache");
  require_schema(file_, kCacheSchema);
  nlohmann::json found;
  try {
    found = nlohmann::json::parse(file_.attr_string("identity"));
  } catch (const nlohmann::json::exception& e) {
    throw InputError(where + ": unreadable identity: " + e.what());
  }
  std::string diff;
  for (const auto& [key, value] : expected.items())
    if (!found.contains(key) || found[key] != value)
      diff += "\n  " + key + ": the cache has " + (found.contains(key) ? found[key].dump() : "nothing") + ", this run needs " + value.dump();
  if (!diff.empty())
    throw InputError(where + " was computed for other inputs; delete it or point hollow.cache elsewhere to pre-compute again:" + diff);
  batch_ = file_.attr_int("batch");
  steps_ = file_.shape("t").at(0) / batch_;
  contexts_ = file_.read("contexts");
  for (int64_t k : plan_.cached_skips())
    if (!file_.has("skip_" + std::to_string(k))) throw InputError(where + ": no cached skip " + std::to_string(k));
}

CachedBatch HollowCache::step(int64_t s) const {
  TORCH_CHECK(s >= 0 && s < steps_, "HollowCache: step ", s, " of ", steps_);
  const int64_t a = s * batch_, b = a + batch_;
  CachedBatch out;
  out.x_t = file_.read_rows("x_t", a, b);
  out.target = file_.read_rows("target", a, b);
  out.t = file_.read_rows("t", a, b).to(torch::kInt64);
  out.context_index = file_.read_rows("context_index", a, b).to(torch::kInt64);
  out.context = contexts_.index_select(0, out.context_index);
  out.boundary.h_in = file_.read_rows("h_in", a, b);
  for (int64_t k : plan_.cached_skips()) out.boundary.skips[k] = file_.read_rows("skip_" + std::to_string(k), a, b);
  return out;
}

int64_t HollowCache::bytes() const { return static_cast<int64_t>(std::filesystem::file_size(file_.path())); }

}  // namespace ef::lora
