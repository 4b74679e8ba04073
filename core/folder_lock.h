#pragma once
// One writer per folder: the process that trains a run (or runs a sweep) holds an advisory lock
// (flock(2)) on <folder>/.lock, which the kernel drops when the process dies, however it dies, so a
// killed writer never leaves a stale lock behind. The file holds the holder's PID, for the message a
// second writer gets. Readers (eval, export) take no lock.
#include <filesystem>
#include <string>

namespace ef {

class FolderLock {
 public:
  // Throws InputError naming `folder` (a "run folder", a "sweep folder": `what`) and the PID of the
  // process that holds it.
  FolderLock(const std::filesystem::path& folder, const std::string& what);
  ~FolderLock();
  FolderLock(const FolderLock&) = delete;
  FolderLock& operator=(const FolderLock&) = delete;

 private:
  int fd_ = -1;
};

}  // namespace ef
