#pragma once
// The standard 3DGS scene file (Kerbl et al.; what SuperSplat, the SIBR viewer and gsplat read):
//
//   ply / format binary_little_endian 1.0 / element vertex N / property float ... / end_header
//   x y z  nx ny nz  f_dc_0..2  f_rest_0..f_rest_{3(K-1)-1}  opacity  scale_0..2  rot_0..3
//
// Values are raw (pre-activation), exactly GaussianParams: opacity logit, log scales, unnormalised
// quaternion (w, x, y, z), SH coefficients; normals are written as 0. f_rest is channel-major:
// f_rest_[(K-1)·c + (k-1)] = sh[:, k, c] for k >= 1. Extras follow as float properties
// `<name>_<i>` (i over the flattened trailing dims), with a `comment extra <name> <dims...>` header
// line so the reader restores their shape; viewers ignore both.
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "splatting/gaussians.h"

namespace ef::splat {

// Writes `g` (any float dtype, any device: converted to float32 on the CPU) atomically.
void write_ply(const std::filesystem::path& path, const GaussianParams& g);

// Reads binary_little_endian, binary_big_endian and ascii files with any numeric property types,
// and the compressed layout of compact_ply.h (recognised by its `chunk` element).
// Accepts any SH degree (the count of f_rest_* decides it), properties in any order, and unknown
// properties, which land in `extras` (grouped by the name before a trailing `_<i>`). Tensors come
// back as float32 on the CPU. Throws std::runtime_error naming the file for a non-ply, truncated
// or malformed file, or one missing a required property.
GaussianParams read_ply(const std::filesystem::path& path);

// Every element of a PLY file (scalar properties only) as a table [count, properties]: float32 when
// all its properties are float32 (copied as stored), else float64 (exact for 32-bit integers). What
// read_ply and the compact reader decode. Throws like read_ply.
struct PlyElementData {
  std::string name;
  std::vector<std::string> properties;
  torch::Tensor table;  // float32 or float64 [count, properties.size()]
};
struct PlyData {
  std::vector<PlyElementData> elements;
  std::map<std::string, std::vector<int64_t>> extra_dims;  // `comment extra <name> <dims...>`
  const PlyElementData* element(const std::string& name) const;  // nullptr when absent
};
PlyData read_ply_data(const std::filesystem::path& path);

// The ordered property names write_ply uses for SH degree `degree` without extras (62 for degree 3).
std::vector<std::string> standard_ply_properties(int64_t degree);

}  // namespace ef::splat
