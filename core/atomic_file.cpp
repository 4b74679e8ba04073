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
