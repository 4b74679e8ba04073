#pragma once
// Checkpoint folders: ckpt/step_<N>/ holds one <module>.safetensors per network, trainer.pt
// (optimizers, RNG, data position, step) and meta.json (step, metrics, config hash, and the CRC32C of
// every other file, checked when a file is loaded: a bit flipped on disk is reported, not trained on).
// A checkpoint is written into ckpt/.step_<N>.partial, fsync'ed, renamed to step_<N>, and only then
// named by ckpt/latest: a write that dies midway leaves the previous checkpoint the latest one.
// Re-saving a step swaps the new folder with the old one in one rename (RENAME_EXCHANGE); where the
// filesystem cannot, the old one is first moved aside to .step_<N>.old and removed only after
// `latest` is updated. Whatever instant the writer dies at, `latest` (after recover() or through
// latest()'s fallback) names a complete checkpoint, and the last complete one is never lost.
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
  // The folder ckpt/latest names, checked complete. When it is missing (a writer killed between
  // moving a folder aside and renaming its replacement in), the moved-aside folder or else the newest
  // complete checkpoint, with a warning; throws when there is none.
  std::optional<std::filesystem::path> latest() const;
  // For the one process that writes (it holds the run's lock): restores a folder a killed writer had
  // moved aside, removes its leftovers (.step_*.partial, .step_*.old, .latest.tmp*) and points
  // `latest` at a complete checkpoint again. save() calls it first.
  void recover();
  std::vector<int64_t> steps() const;                    // complete checkpoints, ascending
  std::filesystem::path folder(int64_t step) const;
  const std::filesystem::path& dir() const { return dir_; }

  static nlohmann::json read_meta(const std::filesystem::path& folder);  // throws naming the folder
  // Checks a file of a checkpoint folder against the CRC32C its meta.json records; throws InputError
  // naming the file when they differ. Files of checkpoints written before checksums pass unchecked.
  static void verify_file(const std::filesystem::path& file);

 private:
  void prune();
  static bool complete(const std::filesystem::path& folder);
  std::filesystem::path dir_;
  int keep_last_;
};

uint64_t fnv1a64(const std::string& bytes);  // stable hash for config identity
std::string hex64(uint64_t v);

}  // namespace ef
