#pragma once
#include <torch/torch.h>

#include <string>

namespace ef {

// "auto" picks CUDA when present; "cuda" without a GPU is an error naming what was asked.
torch::Device resolve_device(const std::string& name);

// Seeds LibTorch's generators (CPU and, when present, CUDA).
void seed_everything(uint64_t seed);

// Deterministic mode: LibTorch's deterministic algorithms and cuDNN determinism. CPU runs are
// deterministic regardless, given the same thread count.
void set_deterministic(bool on);

std::string describe_devices();  // for `edgeforge info`

}  // namespace ef
