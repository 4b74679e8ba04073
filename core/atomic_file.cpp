#include "core/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace ef {

namespace fs = std::filesystem;

namespace {
[[noreturn]] void fail(const std::string& what, const fs::path& p) {
  throw std::runtime_error(what + " " + p.string() + ": " + std::strerror(errno));
}
// A name beside `path` that no other writer (thread or process) picks at the same time.
fs::path temporary_for(const fs::path& path) {
  static std::atomic<unsigned> counter{0};
  return path.parent_path() / ("." + path.filename().string() + ".tmp" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
}
}  // namespace

void fsync_path(const fs::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) fail("cannot open for fsync", path);
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0 && errno != EINVAL) fail("cannot fsync", path);
}

void write_atomically_via(const fs::path& path, const std::function<void(const fs::path&)>& fill) {
  if (!path.parent_path().empty()) fs::create_directories(path.parent_path());
  fs::path tmp = temporary_for(path);
  try {
    fill(tmp);
    fsync_path(tmp);
    if (std::rename(tmp.c_str(), path.c_str()) != 0) fail("cannot rename onto", path);
    fsync_path(path.parent_path().empty() ? fs::path(".") : path.parent_path());
  } catch (...) {
    std::error_code ec;
    fs::remove(tmp, ec);
    throw;
  }
}

void write_folder_atomically(const fs::path& path_in, const std::function<void(const fs::path&)>& fill) {
  const fs::path path = path_in.has_filename() ? path_in : path_in.parent_path();  // "out/" names "out"
  const fs::path parent = path.parent_path().empty() ? fs::path(".") : path.parent_path();
  fs::create_directories(parent);
  const fs::path tmp = temporary_for(path);
  std::error_code ec;
  try {
    fs::create_directory(tmp);
    fill(tmp);
    for (const auto& entry : fs::recursive_directory_iterator(tmp))
      if (entry.is_regular_file() || entry.is_directory()) fsync_path(entry.path());
    fsync_path(tmp);
    if (fs::exists(path)) {
      // rename(2) cannot replace a non-empty folder: move the old one aside first, drop it after.
      const fs::path old = temporary_for(path);
      if (std::rename(path.c_str(), old.c_str()) != 0) fail("cannot move aside", path);
      if (std::rename(tmp.c_str(), path.c_str()) != 0) {
        std::rename(old.c_str(), path.c_str());
        fail("cannot rename onto", path);
      }
      fs::remove_all(old, ec);
    } else if (std::rename(tmp.c_str(), path.c_str()) != 0) {
      fail("cannot rename onto", path);
    }
    fsync_path(parent);
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
}

void write_file_if_changed(const fs::path& path, const std::string& bytes) {
  std::error_code ec;
  if (fs::is_regular_file(path, ec) && read_file(path) == bytes) return;
  if (!path.parent_path().empty()) fs::create_directories(path.parent_path());
  write_file_atomically(path, bytes);
}

void write_file_atomically(const fs::path& path, const std::string& bytes) {
  write_atomically_via(path, [&](const fs::path& tmp) {
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) fail("cannot create", tmp);
    const char* p = bytes.data();
    size_t left = bytes.size();
    while (left > 0) {
      ssize_t n = ::write(fd, p, left);
      if (n < 0) {
        if (errno == EINTR) continue;
        int saved = errno;
        ::close(fd);
        errno = saved;
        fail("cannot write", path);
      }
      p += n, left -= static_cast<size_t>(n);
    }
    if (::close(fd) != 0) fail("cannot close", path);
  });
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path.string() + ": " + std::strerror(errno));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace ef
