#pragma once
// The compressed 3DGS layout that PlayCanvas' SuperSplat writes ("compressed.ply"; the PlayCanvas
// engine and SuperSplat load it), 16 bytes per Gaussian plus one byte per SH coefficient:
//
//   element chunk C      (one per 256 Gaussians, in file order)
//     float min_x min_y min_z max_x max_y max_z                      centre bounds
//     float min_scale_x .. min_scale_z max_scale_x .. max_scale_z    log-scale bounds
//     float min_r min_g min_b max_r max_g max_b                      bounds of 0.5 + C0 * f_dc
//   element vertex N
//     uint packed_position   x:11 | y:10 | z:11 bits (x highest), unorm within the chunk's bounds
//     uint packed_rotation   index of the largest |component| of the unit quaternion (w,x,y,z):2 |
//                            the other three in order, 10 bits each: v / sqrt(2) + 0.5
//                            (the largest is made positive and rebuilt as sqrt(1 - a^2 - b^2 - c^2))
//     uint packed_scale      11 | 10 | 11 bits, unorm within the chunk's log-scale bounds
//     uint packed_color      r:8 | g:8 | b:8 (within the chunk's colour bounds) | sigmoid(opacity):8
//   element sh N           (SH degree >= 1 only)
//     uchar f_rest_0 ..      the standard f_rest order, q = round((v + 4) * 255 / 8), v = q * 8 / 255 - 4
//   element extra N        (EdgeForge's extra attributes, when the scene has any: float32, with the
//                           same `<name>_<i>` properties and `comment extra` lines as write_ply)
//
// unorm b bits: q = floor(t * (2^b - 1) + 0.5), t = (v - min) / (max - min) (0 when max - min < 1e-5).
// Gaussians are written in Morton order of their centres (10 bits per axis over the scene's bounds),
// so each chunk covers a small region and its bounds stay tight. read_ply (ply.h) reads this layout too.
#include <filesystem>

#include "splatting/gaussians.h"
#include "splatting/ply.h"

namespace ef::splat {

// Writes `g` atomically in the compressed layout (SH degree <= 3). Returns the file's size in bytes.
int64_t write_compact_ply(const std::filesystem::path& path, const GaussianParams& g);

// Decodes a parsed compressed file (read_ply calls it when the file has a `chunk` element).
// Throws std::runtime_error naming `path` when an element or property is missing or inconsistent.
GaussianParams decode_compact_ply(const PlyData& data, const std::filesystem::path& path);

}  // namespace ef::splat
