#include "core/safetensors.h"

#include <nlohmann/json.hpp>

#include <cstring>
#include <limits>

#include "core/config.h"
#include "core/atomic_file.h"

namespace ef {

namespace {
struct DtypeName {
  torch::Dtype dtype;
  const char* name;
};
constexpr DtypeName kDtypes[] = {
    {torch::kFloat32, "F32"}, {torch::kFloat64, "F64"}, {torch::kFloat16, "F16"}, {torch::kBFloat16, "BF16"},
    {torch::kInt64, "I64"},   {torch::kInt32, "I32"},   {torch::kInt16, "I16"},   {torch::kInt8, "I8"},
    {torch::kUInt8, "U8"},    {torch::kBool, "BOOL"},
};

const char* dtype_name(torch::Dtype d) {
  for (const auto& e : kDtypes)
    if (e.dtype == d) return e.name;
  throw std::runtime_error(std::string("safetensors: unsupported dtype ") + c10::toString(d));
}

torch::Dtype dtype_from(const std::string& name, const std::string& source) {
  for (const auto& e : kDtypes)
    if (name == e.name) return e.dtype;
  throw InputError(source + ": unsupported safetensors dtype '" + name + "'");
}
}  // namespace

std::string encode_safetensors(const TensorMap& tensors, const Metadata& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<torch::Tensor> contiguous;
  size_t offset = 0;
  for (const auto& [name, t] : tensors) {
    torch::Tensor c = t.detach().to(torch::kCPU).contiguous();
    size_t bytes = c.numel() * c.element_size();
    header[name] = {{"dtype", dtype_name(c.scalar_type())}, {"shape", c.sizes().vec()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    contiguous.push_back(c);
  }
  std::string json = header.dump();
  json.append((8 - json.size() % 8) % 8, ' ');  // the format recommends 8-byte alignment of the data
  std::string out(8, '\0');
  uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  out += json;
  out.reserve(out.size() + offset);
  for (const auto& c : contiguous) out.append(static_cast<const char*>(c.data_ptr()), c.numel() * c.element_size());
  return out;
}

TensorMap decode_safetensors(const std::string& bytes, const std::string& source, Metadata* metadata) {
  if (bytes.size() < 8) throw InputError(source + ": not a safetensors file (shorter than its 8-byte header size)");
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
  if (n > bytes.size() - 8) throw InputError(source + ": corrupt safetensors file (header size " + std::to_string(n) + " exceeds the file)");
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(bytes.substr(8, n));
  } catch (const std::exception& e) {
    throw InputError(source + ": corrupt safetensors header: " + e.what());
  }
  const size_t data_begin = 8 + n, data_size = bytes.size() - data_begin;
  TensorMap out;
  if (!header.is_object()) throw InputError(source + ": corrupt safetensors header (not a JSON object)");
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string where = source + ": corrupt safetensors entry '" + it.key() + "'";
    torch::Dtype dtype;
    std::vector<int64_t> shape;
    std::vector<uint64_t> off;
    try {  // a header that is JSON but not the format's: named, not the JSON library's bare message
      if (it.key() == "__metadata__") {
        if (metadata) *metadata = it.value().get<Metadata>();
        continue;
      }
      const auto& e = it.value();
      dtype = dtype_from(e.at("dtype").get<std::string>(), source);
      shape = e.at("shape").get<std::vector<int64_t>>();
      off = e.at("data_offsets").get<std::vector<uint64_t>>();
    } catch (const nlohmann::json::exception& x) {
      throw InputError(where + ": " + x.what());
    }
    // the size the shape announces, checked against the data before anything is allocated
    uint64_t numel = 1;
    for (int64_t d : shape) {
      if (d < 0) throw InputError(where + " (negative dimension " + std::to_string(d) + ")");
      if (d != 0 && numel > std::numeric_limits<uint64_t>::max() / static_cast<uint64_t>(d))
        throw InputError(where + " (its shape overflows)");
      numel *= static_cast<uint64_t>(d);
    }
    const uint64_t element = static_cast<uint64_t>(c10::elementSize(dtype));
    if (numel > data_size / std::max<uint64_t>(element, 1) || off.size() != 2 || off[1] < off[0] || off[1] > data_size ||
        off[1] - off[0] != numel * element)
      throw InputError(where + " (data offsets do not match its shape)");
    torch::Tensor t = torch::empty(shape, torch::TensorOptions().dtype(dtype));
    std::memcpy(t.data_ptr(), bytes.data() + data_begin + off[0], static_cast<size_t>(numel * element));
    out.emplace(it.key(), t);
  }
  return out;
}

void save_safetensors(const std::filesystem::path& path, const TensorMap& tensors, const Metadata& metadata) {
  write_file_atomically(path, encode_safetensors(tensors, metadata));
}

TensorMap load_safetensors(const std::filesystem::path& path, Metadata* metadata) {
  if (!std::filesystem::exists(path)) throw InputError("weights file not found: " + path.string());
  return decode_safetensors(read_file(path), path.string(), metadata);
}

TensorMap module_state(const torch::nn::Module& module) {
  TensorMap out;
  for (const auto& p : module.named_parameters(true)) out[p.key()] = p.value();
  for (const auto& b : module.named_buffers(true)) out[b.key()] = b.value();
  return out;
}

void load_module_state(torch::nn::Module& module, const TensorMap& state, const std::string& source) {
  torch::NoGradGuard no_grad;
  if (auto* adapting = dynamic_cast<ShapeAdaptingModule*>(&module)) adapting->adopt_shapes(state);
  const auto* partial = dynamic_cast<const PartialStateModule*>(&module);
  auto left_out = [&](const std::string& name) { return partial && partial->leaves_out(name); };
  TensorMap mine = module_state(module);
  for (const auto& [name, t] : mine) {
    if (left_out(name)) continue;
    auto it = state.find(name);
    if (it == state.end()) throw InputError(source + ": missing tensor '" + name + "'");
    if (it->second.sizes() != t.sizes())
      throw InputError(source + ": tensor '" + name + "' has shape " + c10::str(it->second.sizes()) +
                               ", the model expects " + c10::str(t.sizes()));
    t.copy_(it->second);
  }
  for (const auto& [name, t] : state)
    if (!mine.count(name) && !left_out(name)) throw InputError(source + ": unexpected tensor '" + name + "' (not in the model)");
}

}  // namespace ef
