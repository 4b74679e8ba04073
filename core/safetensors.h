#pragma once
// safetensors (the Hugging Face weight format): 8-byte little-endian header size, a JSON header
// {name: {dtype, shape, data_offsets}, "__metadata__": {str: str}}, then the raw little-endian data.
// No C++ library for it exists in Debian; the format is small enough to implement here.
#include <torch/torch.h>

#include <filesystem>
#include <map>
#include <string>

namespace ef {

using TensorMap = std::map<std::string, torch::Tensor>;
using Metadata = std::map<std::string, std::string>;

std::string encode_safetensors(const TensorMap& tensors, const Metadata& metadata = {});
TensorMap decode_safetensors(const std::string& bytes, const std::string& source, Metadata* metadata = nullptr);

void save_safetensors(const std::filesystem::path& path, const TensorMap& tensors, const Metadata& metadata = {});  // atomic
TensorMap load_safetensors(const std::filesystem::path& path, Metadata* metadata = nullptr);

// Module <-> TensorMap, by the module's parameter and buffer names ("blocks.0.attn.qkv.weight").
TensorMap module_state(const torch::nn::Module& module);
// Copies into the module's tensors; a missing key, an extra key or a shape mismatch is an error
// that names the key and both shapes, and `source` (a file name).
void load_module_state(torch::nn::Module& module, const TensorMap& state, const std::string& source);

// A module whose tensors change shape while it trains (a Gaussian scene grows and shrinks): before
// its state is loaded, load_module_state lets it re-create its tensors with the stored shapes.
class ShapeAdaptingModule {
 public:
  virtual ~ShapeAdaptingModule() = default;
  virtual void adopt_shapes(const TensorMap& state) = 0;
};

// A module built from part of a network (a UNet without its innermost units, lora/hollow.h): it
// loads from a state of the whole network, and load_module_state skips the tensors it leaves out,
// on both sides (its own empty tensors and the state's tensors of those names). Any other missing
// or extra tensor is still an error.
class PartialStateModule {
 public:
  virtual ~PartialStateModule() = default;
  virtual bool leaves_out(const std::string& name) const = 0;
};

}  // namespace ef
