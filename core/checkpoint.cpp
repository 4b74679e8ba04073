#include "core/checkpoint.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>

#include "core/config.h"
#include "core/atomic_file.h"
#include "core/crc32c.h"

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

namespace {
bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }
bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Where a re-save moves step_<N> while renaming its replacement in (when it cannot swap them).
fs::path aside_of(const fs::path& step_dir) { return step_dir.parent_path() / ("." + step_dir.filename().string() + ".old"); }

void rename_or_throw(const fs::path& from, const fs::path& to) {
  if (std::rename(from.c_str(), to.c_str()) != 0)
    throw std::runtime_error("cannot rename " + from.string() + " to " + to.string() + ": " + std::strerror(errno));
}

// Swaps two folders in one step (Linux renameat2), so that `b` names a complete folder at every
// instant. False where the filesystem cannot; the caller then moves `b` aside first.
bool exchange(const fs::path& a, const fs::path& b) {
  return ::renameat2(AT_FDCWD, a.c_str(), AT_FDCWD, b.c_str(), RENAME_EXCHANGE) == 0;
}

std::string crc_hex(const fs::path& file) {
  const std::string bytes = read_file(file);
  char hex[16];
  std::snprintf(hex, sizeof hex, "%08x", crc32c(bytes.data(), bytes.size()));
  return hex;
}

// {"model.safetensors": "<crc32c hex>", ...} of every file under `folder`, by relative path.
nlohmann::json checksums(const fs::path& folder) {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& e : fs::recursive_directory_iterator(folder))
    if (e.is_regular_file()) out[e.path().lexically_relative(folder).generic_string()] = crc_hex(e.path());
  return out;
}

std::string read_pointer(const fs::path& pointer) {
  std::string name = read_file(pointer);
  name.erase(name.find_last_not_of(" \n\r\t") + 1);
  return name;
}
}  // namespace

bool CheckpointStore::complete(const fs::path& folder) {
  // meta.json is written last and the folder is renamed into place only after everything is on disk
  return fs::exists(folder / "meta.json");
}

fs::path CheckpointStore::save(int64_t step, const std::function<void(const fs::path&)>& write, const nlohmann::json& meta) {
  fs::create_directories(dir_);
  recover();
  fs::path partial = dir_ / (".step_" + std::to_string(step) + ".partial");
  const fs::path final_dir = folder(step);
  try {
    fs::create_directories(partial);
    write(partial);
    nlohmann::json full_meta = meta;
    full_meta["files"] = checksums(partial);
    write_file_atomically(partial / "meta.json", full_meta.dump(2));
    for (const auto& e : fs::directory_iterator(partial)) fsync_path(e.path());
    fsync_path(partial);
    fs::path replaced;  // the folder this save replaces (re-saving a step after a resume), removed last
    if (!fs::exists(final_dir)) {
      rename_or_throw(partial, final_dir);
    } else if (exchange(partial, final_dir)) {
      replaced = partial;  // the swap left the old checkpoint under the partial name
    } else {
      replaced = aside_of(final_dir);
      rename_or_throw(final_dir, replaced);
      if (std::rename(partial.c_str(), final_dir.c_str()) != 0) {
        std::rename(replaced.c_str(), final_dir.c_str());
        throw std::runtime_error("cannot rename " + partial.string() + " to " + final_dir.string() + ": " + std::strerror(errno));
      }
    }
    fsync_path(dir_);
    write_file_atomically(dir_ / "latest", final_dir.filename().string() + "\n");
    if (!replaced.empty()) fs::remove_all(replaced);  // only now: until `latest` was written, it could be the one named
  } catch (...) {
    std::error_code ec;
    fs::remove_all(partial, ec);
    throw;
  }
  prune();
  return final_dir;
}

void CheckpointStore::recover() {
  if (!fs::is_directory(dir_)) return;
  std::vector<std::string> names;  // listed first: the loop below renames and removes entries
  for (const auto& e : fs::directory_iterator(dir_)) names.push_back(e.path().filename().string());
  for (const auto& name : names) {
    const fs::path p = dir_ / name;
    if (starts_with(name, ".step_") && ends_with(name, ".old")) {
      const fs::path step_dir = dir_ / name.substr(1, name.size() - 1 - 4);
      if (!complete(step_dir) && complete(p)) {
        // killed between moving the old folder aside and renaming its replacement in: put it back
        spdlog::warn("checkpoint {} was left moved aside by an interrupted save: restoring it", step_dir.string());
        fs::remove_all(step_dir);
        rename_or_throw(p, step_dir);
        continue;
      }
      fs::remove_all(p);
    } else if (starts_with(name, ".step_") || starts_with(name, ".latest.tmp")) {
      fs::remove_all(p);  // a half-written checkpoint or pointer of a killed writer
    }
  }
  const fs::path pointer = dir_ / "latest";
  const auto all = steps();
  if (all.empty()) return;  // nothing complete to point at; latest() reports a dangling pointer
  const fs::path newest = folder(all.back());
  if (!fs::exists(pointer)) {
    spdlog::warn("{} is missing (a save was interrupted before naming its checkpoint): naming {}", pointer.string(), newest.string());
  } else if (const std::string name = read_pointer(pointer); !complete(dir_ / name)) {
    spdlog::warn("{} names {}, which is missing or incomplete: naming {}, the newest complete checkpoint", pointer.string(), name,
                 newest.string());
  } else {
    return;
  }
  write_file_atomically(pointer, newest.filename().string() + "\n");
}

std::vector<int64_t> CheckpointStore::steps() const {
  std::vector<int64_t> out;
  if (!fs::exists(dir_)) return out;
  for (const auto& e : fs::directory_iterator(dir_)) {
    std::string name = e.path().filename().string();
    if (name.rfind("step_", 0) == 0 && complete(e.path())) out.push_back(std::stoll(name.substr(5)));
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::optional<fs::path> CheckpointStore::latest() const {
  const fs::path pointer = dir_ / "latest";
  const auto all = steps();
  if (!fs::exists(pointer)) {
    if (all.empty()) return std::nullopt;
    // a save killed after renaming its folder in, before naming it
    spdlog::warn("{} is missing: using {}, the newest complete checkpoint", pointer.string(), folder(all.back()).string());
    return folder(all.back());
  }
  const fs::path f = dir_ / read_pointer(pointer);
  if (complete(f)) return f;
  // a save killed between moving the named folder aside and renaming its replacement in
  if (complete(aside_of(f))) {
    spdlog::warn("checkpoint {} named by {} is missing: using {}, where an interrupted save moved it", f.string(), pointer.string(),
                 aside_of(f).string());
    return aside_of(f);
  }
  if (!all.empty()) {
    spdlog::warn("checkpoint {} named by {} is missing or incomplete: using {}, the newest complete one", f.string(), pointer.string(),
                 folder(all.back()).string());
    return folder(all.back());
  }
  throw InputError("checkpoint " + f.string() + " named by " + pointer.string() + " is incomplete or missing, and " + dir_.string() +
                   " holds no other complete checkpoint");
}

nlohmann::json CheckpointStore::read_meta(const fs::path& folder) {
  fs::path p = folder / "meta.json";
  try {
    return nlohmann::json::parse(read_file(p));
  } catch (const nlohmann::json::exception& e) {
    throw InputError(p.string() + ": corrupt checkpoint metadata: " + e.what());
  }
}

void CheckpointStore::verify_file(const fs::path& file) {
  const fs::path folder = file.parent_path();
  if (!fs::exists(folder / "meta.json")) return;  // a folder of weights that is not a checkpoint
  const nlohmann::json meta = read_meta(folder);
  const std::string name = file.filename().string();
  if (!meta.contains("files") || !meta["files"].contains(name)) return;  // written before checksums were recorded
  const std::string recorded = meta["files"][name].get<std::string>();
  const std::string actual = crc_hex(file);
  if (actual != recorded)
    throw InputError(file.string() + " is corrupt: its CRC32C is " + actual + " but " + (folder / "meta.json").string() + " records " +
                     recorded + " (load an older checkpoint with --ckpt, or retrain)");
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
