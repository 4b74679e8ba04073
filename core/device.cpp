#include "core/device.h"

#include <ATen/Context.h>

#include "core/config.h"

namespace ef {

torch::Device resolve_device(const std::string& name) {
  if (name == "auto") return torch::cuda::is_available() ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
  if (name == "cpu") return torch::Device(torch::kCPU);
  if (name.rfind("cuda", 0) == 0) {
    if (!torch::cuda::is_available()) throw ConfigError("device: '" + name + "' asked for, but no CUDA device is available");
    return torch::Device(name);
  }
  throw ConfigError("device: expected \"auto\", \"cpu\" or \"cuda[:N]\", got \"" + name + "\"");
}

void seed_everything(uint64_t seed) {
  torch::manual_seed(seed);
  if (torch::cuda::is_available()) torch::cuda::manual_seed_all(seed);
}

void set_deterministic(bool on) {
  at::globalContext().setDeterministicAlgorithms(on, /*warn_only=*/true);
  at::globalContext().setDeterministicCuDNN(on);
  at::globalContext().setBenchmarkCuDNN(!on);
}

std::string describe_devices() {
  std::string out = "cpu (" + std::to_string(at::get_num_threads()) + " threads)";
  if (torch::cuda::is_available()) out += ", cuda x" + std::to_string(torch::cuda::device_count());
  else out += ", no CUDA device";
  return out;
}

}  // namespace ef
