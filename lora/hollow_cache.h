#pragma once
// The two stages of Hollowed Net (hollowed-net brief §2.2-2.3) and what they share.
//
// TrainingSchedule: every input of every training step fixed before training (image index, t, ε,
// caption dropped or not), drawn from the run's seed. The personalize recipe trains every method on
// it, so full fine-tuning, LoRA and Hollowed Net see the very same inputs; the hollowed net's cache
// is valid only for exactly this schedule (brief §6 "cache validity").
//
// HollowCache: an HDF5 file of the boundary (lora/hollow.h) the frozen full UNet computed for every
// row of the schedule, with what the hollowed network's step needs besides (x_t, the loss target,
// the text embedding), all float32:
//   x_t [N,C,h,w], target [N,C,h,w], t int64 [N], context_index int64 [N] -> contexts [P,L,D],
//   h_in [N,...], skip_<k> [N,...] for each cached skip k;     N = steps x batch, step-major.
// Root attributes: schema_version, generator "hollow_cache", and `identity` (JSON): the schedule's
// checksum, the training images' checksum, the checksums of the weights the cache was computed with
// (the retained UNet weights, text encoder, autoencoder, as loaded), the plan (m) and the UNet's
// options. Opening a cache for another identity is refused naming what differs.
#include <torch/torch.h>

#include <filesystem>
#include <functional>
#include <optional>
#include <string>

#include "core/hdf5_file.h"
#include "lora/hollow.h"

namespace ef::lora {

struct TrainingSchedule {
  torch::Tensor index;  // int64 [S, b]: training image
  torch::Tensor t;      // int64 [S, b]
  torch::Tensor noise;  // float [S, b, C, h, w]
  torch::Tensor drop;   // bool [S, b]: caption replaced by the empty one
  // Deterministic from `seed`; t uniform in [0, timesteps), images by a seeded permutation per epoch.
  static TrainingSchedule make(int64_t steps, int64_t batch, int64_t images, std::vector<int64_t> latent_shape, int64_t timesteps,
                               double text_dropout, uint64_t seed);
  int64_t steps() const { return index.size(0); }
  int64_t batch() const { return index.size(1); }
  std::string checksum() const;  // hex crc32c over every tensor
};

// crc32c (hex) over the bytes of every tensor of `module`'s state, in name order.
std::string state_checksum(const torch::nn::Module& module);

// One training step's worth of a cache.
struct CachedBatch {
  torch::Tensor x_t, target, t;  // [b,C,h,w], [b,C,h,w], int64 [b]
  torch::Tensor context_index;   // int64 [b]: row of the cache's contexts
  torch::Tensor context;         // [b, L, D] (filled by HollowCache::step)
  UNetBoundary boundary;
};

class HollowCache {
 public:
  // One row per schedule entry, computed by `row_fill(step)` (the step's rows, context_index into
  // `contexts` [P, L, D]);
  // written atomically (a failed pre-compute leaves no file).
  static void write(const std::filesystem::path& path, const nlohmann::json& identity, const HollowPlan& plan, int64_t steps,
                    const torch::Tensor& contexts, const std::function<CachedBatch(int64_t step)>& row_fill);
  // Opens a cache; InputError when it is not one, or when its identity differs from `expected`
  // (naming every differing field and both values).
  HollowCache(const std::filesystem::path& path, const nlohmann::json& expected, const HollowPlan& plan);
  CachedBatch step(int64_t s) const;  // rows [s*b, (s+1)*b)
  int64_t steps() const { return steps_; }
  int64_t bytes() const;  // of the file

 private:
  H5File file_;
  HollowPlan plan_;
  int64_t steps_ = 0, batch_ = 0;
  torch::Tensor contexts_;
};

}  // namespace ef::lora
