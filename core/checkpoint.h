#pragma once
// Checkpoint folders: ckpt/step_<N>/ holds one <module>.safetensors per network, trainer.pt
// (optimizers, RNG, data position, step) and meta.json (step, metrics, config hash).
// A checkpoint is written into ckpt/.step_<N>.partial, fsync'ed, renamed to step_<N>, and only then
// named by ckpt/latest: a write that dies midway leaves the previous checkpoint the latest one.
#include <nlohmann/json.hpp>

#include <filesystem>
#include <functional>
#include <optional>
#include <vector>

namespace ef {

class CheckpointStore {
 public:
  CheckpointStore(std::filesystem::path dir, int keep_last);

  // `write` fills the given (partial) folder; `meta` is written as meta.json last.
  std::filesystem::path save(int64_t step, const std::function<void(const std::filesystem::path&)>& write,
                             const nlohmann::json& meta);
  std::optional<std::filesystem::path> latest() const;  // folder named by ckpt/latest, checked complete
  std::vector<int64_t> steps() const;                    // complete checkpoints, ascending
  std::filesystem::path folder(int64_t step) const;
  const std::filesystem::path& dir() const { return dir_; }

  static nlohmann::json read_meta(const std::filesystem::path& folder);  // throws naming the folder

 private:
  void prune();
  std::filesystem::path dir_;
  int keep_last_;
};

uint64_t fnv1a64(const std::string& bytes);  // stable hash for config identity
std::string hex64(uint64_t v);

}  // namespace ef
