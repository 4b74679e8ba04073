#include "flow/flow_io.h"

#include <cmath>
#include <cstring>
#include <string>

#include "core/config.h"
#include "core/atomic_file.h"
#include "core/image_io.h"

namespace ef::flow {

namespace fs = std::filesystem;

namespace {
// The formats are little-endian; so is every machine we build for, which this guards.
static_assert(sizeof(float) == 4 && sizeof(int32_t) == 4, ".flo needs 32-bit float and int");
bool little_endian() {
  const uint16_t one = 1;
  uint8_t b;
  std::memcpy(&b, &one, 1);
  return b == 1;
}

void check_flow(const torch::Tensor& flow, const char* what) {
  TORCH_CHECK(flow.dim() == 3 && flow.size(2) == 2, what, ": flow must be [H,W,2], got ", flow.sizes());
}
}  // namespace

torch::Tensor read_flo(const fs::path& path) {
  TORCH_CHECK(little_endian(), "read_flo: big-endian hosts are not supported");
  const std::string bytes = read_file(path);
  if (bytes.size() < 12) throw InputError(path.string() + ": not a .flo file (" + std::to_string(bytes.size()) + " bytes, header needs 12)");
  float tag;
  int32_t w, h;
  std::memcpy(&tag, bytes.data(), 4);
  std::memcpy(&w, bytes.data() + 4, 4);
  std::memcpy(&h, bytes.data() + 8, 4);
  if (tag != kFloTag) throw InputError(path.string() + ": not a .flo file (tag is not 202021.25 \"PIEH\")");
  if (w <= 0 || h <= 0 || w > 100000 || h > 100000)
    throw InputError(path.string() + ": implausible .flo size " + std::to_string(w) + "x" + std::to_string(h));
  const size_t need = 12 + static_cast<size_t>(w) * static_cast<size_t>(h) * 8;
  if (bytes.size() != need)
    throw InputError(path.string() + ": .flo of " + std::to_string(w) + "x" + std::to_string(h) + " needs " + std::to_string(need) +
                             " bytes, file has " + std::to_string(bytes.size()));
  torch::Tensor flow = torch::empty({h, w, 2}, torch::kFloat32);
  std::memcpy(flow.data_ptr<float>(), bytes.data() + 12, need - 12);
  return flow;
}

void write_flo(const fs::path& path, const torch::Tensor& flow_in) {
  TORCH_CHECK(little_endian(), "write_flo: big-endian hosts are not supported");
  check_flow(flow_in, ("write_flo " + path.string()).c_str());
  torch::Tensor flow = flow_in.detach().to(torch::kCPU, torch::kFloat32).contiguous();
  const int32_t h = static_cast<int32_t>(flow.size(0)), w = static_cast<int32_t>(flow.size(1));
  std::string bytes(12 + static_cast<size_t>(flow.numel()) * 4, '\0');
  std::memcpy(bytes.data(), &kFloTag, 4);
  std::memcpy(bytes.data() + 4, &w, 4);
  std::memcpy(bytes.data() + 8, &h, 4);
  std::memcpy(bytes.data() + 12, flow.data_ptr<float>(), static_cast<size_t>(flow.numel()) * 4);
  write_file_atomically(path, bytes);
}

torch::Tensor flo_valid(const torch::Tensor& flow) {
  return (flow.abs() <= kFloUnknown).all(-1) & torch::isfinite(flow).all(-1);
}

KittiFlow read_kitti_flow(const fs::path& path) {
  torch::Tensor png = read_png(path);  // int32 [H,W,C] for 16-bit data
  if (png.dim() != 3 || png.size(2) != 3 || png.scalar_type() != torch::kInt32)
    throw InputError(path.string() + ": a KITTI flow PNG is 16-bit RGB, got shape " + std::to_string(png.dim() == 3 ? png.size(2) : 1) +
                             " channel(s), " + (png.scalar_type() == torch::kInt32 ? "16" : "8") + "-bit");
  torch::Tensor f = png.to(torch::kFloat32);
  KittiFlow out;
  out.valid = png.select(2, 2) > 0;
  out.flow = (f.narrow(2, 0, 2) - 32768.0f) / 64.0f;
  out.flow.masked_fill_(out.valid.logical_not().unsqueeze(-1), 0.0f);
  return out;
}

void write_kitti_flow(const fs::path& path, const torch::Tensor& flow_in, const torch::Tensor& valid_in) {
  check_flow(flow_in, ("write_kitti_flow " + path.string()).c_str());
  TORCH_CHECK(valid_in.sizes() == flow_in.sizes().slice(0, 2), "write_kitti_flow ", path.string(), ": valid must be [H,W] = ",
              flow_in.sizes().slice(0, 2), ", got ", valid_in.sizes());
  torch::Tensor flow = flow_in.detach().to(torch::kCPU, torch::kFloat64);
  torch::Tensor valid = valid_in.to(torch::kCPU, torch::kBool);
  torch::Tensor q = (flow * 64.0 + 32768.0).round().clamp(0, 65535).to(torch::kInt32);
  q.masked_fill_(valid.logical_not().unsqueeze(-1), 0);  // the devkit writes 0 for invalid pixels
  torch::Tensor png = torch::cat({q, valid.to(torch::kInt32).unsqueeze(-1)}, 2).contiguous();
  write_png(path, png);
}

}  // namespace ef::flow
