#include "core/folder_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "core/config.h"

namespace ef {

namespace fs = std::filesystem;

namespace {
std::string holder_of(int fd) {
  char buf[32] = {};
  ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
  std::string pid = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
  pid.erase(pid.find_last_not_of(" \n\r\t") + 1);
  return pid.empty() ? "another process" : "process " + pid;  // empty: it has locked but not yet written
}
}  // namespace

FolderLock::FolderLock(const fs::path& folder, const std::string& what) {
  fs::create_directories(folder);
  const fs::path file = folder / ".lock";
  // O_CLOEXEC: a child process (a sweep's training runs) must not inherit the lock and hold it on
  // after this process is gone
  fd_ = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) throw std::runtime_error("cannot open lock file " + file.string() + ": " + std::strerror(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    const std::string holder = holder_of(fd_);
    ::close(fd_);
    if (err == EWOULDBLOCK)
      throw InputError(what + " " + folder.string() + " is in use by " + holder + " (it holds " + file.string() +
                       "); wait for it to finish or stop it");
    throw std::runtime_error("cannot lock " + file.string() + ": " + std::strerror(err));
  }
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
    const int err = errno;
    ::close(fd_);
    throw std::runtime_error("cannot write " + file.string() + ": " + std::strerror(err));
  }
}

FolderLock::~FolderLock() {
  if (fd_ >= 0) ::close(fd_);  // closing the last descriptor releases the lock
}

}  // namespace ef
