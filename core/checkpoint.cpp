#include "core/checkpoint.h"

#include <algorithm>
#include <fstream>

#include "core/config.h"
#include "core/atomic_file.h"

namespace ef {

namespace fs = std::filesystem;

uint64_t fnv1a64(const std::string& bytes) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : bytes) h = (h ^ c) * 1099511628211ULL;
  return h;
}

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

CheckpointStore::CheckpointStore(fs::path dir, int keep_last) : dir_(std::move(dir)), keep_last_(keep_last) {}

fs::path CheckpointStore::folder(int64_t step) const { return dir_ / ("step_" + std::to_string(step)); }

fs::path CheckpointStore::save(int64_t step, const std::function<void(const fs::path&)>& write, const nlohmann::json& meta) {
  fs::create_directories(dir_);
  // leftovers of a process killed while writing
  for (const auto& e : fs::directory_iterator(dir_))
    if (e.path().filename().string().rfind(".step_", 0) == 0) fs::remove_all(e.path());

  fs::path partial = dir_ / (".step_" + std::to_string(step) + ".partial");
  try {
    fs::create_directories(partial);
    write(partial);
    write_file_atomically(partial / "meta.json", meta.dump(2));
    for (const auto& e : fs::directory_iterator(partial)) fsync_path(e.path());
    fsync_path(partial);
    fs::path final_dir = folder(step);
    if (fs::exists(final_dir)) fs::remove_all(final_dir);  // re-saving a step (after a resume)
    fs::rename(partial, final_dir);
    fsync_path(dir_);
    write_file_atomically(dir_ / "latest", final_dir.filename().string() + "\n");
  } catch (...) {
    std::error_code ec;
    fs::remove_all(partial, ec);
    throw;
  }
  prune();
  return folder(step);
}

std::vector<int64_t> CheckpointStore::steps() const {
  std::vector<int64_t> out;
  if (!fs::exists(dir_)) return out;
  for (const auto& e : fs::directory_iterator(dir_)) {
    std::string name = e.path().filename().string();
    if (name.rfind("step_", 0) == 0 && fs::exists(e.path() / "meta.json")) out.push_back(std::stoll(name.substr(5)));
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::optional<fs::path> CheckpointStore::latest() const {
  fs::path pointer = dir_ / "latest";
  if (!fs::exists(pointer)) return std::nullopt;
  std::string name = read_file(pointer);
  name.erase(name.find_last_not_of(" \n\r\t") + 1);
  fs::path f = dir_ / name;
  if (!fs::exists(f / "meta.json"))
    throw InputError("checkpoint " + f.string() + " named by " + pointer.string() + " is incomplete or missing");
  return f;
}

nlohmann::json CheckpointStore::read_meta(const fs::path& folder) {
  fs::path p = folder / "meta.json";
  try {
    return nlohmann::json::parse(read_file(p));
  } catch (const nlohmann::json::exception& e) {
    throw InputError(p.string() + ": corrupt checkpoint metadata: " + e.what());
  }
}

void CheckpointStore::prune() {
  if (keep_last_ <= 0) return;
  auto all = steps();
  auto newest = latest();
  for (size_t i = 0; i + static_cast<size_t>(keep_last_) < all.size(); ++i) {
    fs::path f = folder(all[i]);
    if (newest && fs::equivalent(f, *newest)) continue;
    fs::remove_all(f);
  }
}

}  // namespace ef
