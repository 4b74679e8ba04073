#pragma once
// Crash-safe file writes: everything is written to a temporary beside the target, flushed to disk
// (fsync) and renamed over it, so a reader sees the old file or the new one, never half of one.
// A full disk or any write error throws with the path, and the temporary is removed.
#include <filesystem>
#include <functional>
#include <string>

namespace ef {

void write_file_atomically(const std::filesystem::path& path, const std::string& bytes);
// Writes `bytes` (atomically, creating the parent folders) only when the file is missing or holds
// something else: a recipe that records a file in its run folder when it is built leaves a finished
// run untouched when it is evaluated or exported, read-only copies included.
void write_file_if_changed(const std::filesystem::path& path, const std::string& bytes);
// For writers that stream: `fill` writes into the given temporary path (any API), then the file is
// fsync'ed and renamed. If `fill` throws, the temporary is removed and the exception propagates.
void write_atomically_via(const std::filesystem::path& path, const std::function<void(const std::filesystem::path& tmp)>& fill);

// For outputs that are folders (a generated scene: images, a model, ground truth): `fill` writes
// everything into an empty temporary folder beside `path`; then every file in it is fsync'ed and it
// is renamed onto `path` (an existing folder there is replaced). If `fill` throws, the temporary
// folder is removed: a reader never finds a half-written folder at `path`.
void write_folder_atomically(const std::filesystem::path& path,
                             const std::function<void(const std::filesystem::path& tmp_dir)>& fill);

void fsync_path(const std::filesystem::path& path);  // file or directory
std::string read_file(const std::filesystem::path& path);  // throws naming the path

}  // namespace ef
