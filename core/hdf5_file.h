#pragma once
// A small RAII wrapper over the HDF5 C API for datasets of tensors plus a few root attributes.
//
// Threads: every H5File call holds one process-wide mutex around its HDF5 work. Debian's serial
// libhdf5 happens to be built thread-safe, but other builds (a bundled or self-compiled libhdf5)
// often are not, and even a thread-safe libhdf5 serializes all calls behind its own global lock, so
// ours costs nothing extra. With it, several data-loader threads may each read through their own
// H5File (or through one shared H5File's const methods). Moving, closing or destroying an H5File
// must still happen on one thread at a time, as for any object. HDF5 calls made elsewhere in the
// process, outside H5File, are not covered by the mutex.
//
// Errors are std::runtime_error naming the file and the dataset or attribute concerned; HDF5's own
// error-stack printing to stderr is switched off.
#include <torch/torch.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace ef {

class H5File {
 public:
  enum class Mode { Read, Create };  // Create truncates an existing file

  // Read on a missing file: "HDF5 file not found: <path>"; on a corrupt or non-HDF5 file:
  // "<path> is not a readable HDF5 file (corrupt or wrong format)".
  H5File(const std::filesystem::path& path, Mode mode);
  ~H5File();
  H5File(H5File&& other) noexcept;
  H5File& operator=(H5File&& other) noexcept;
  H5File(const H5File&) = delete;
  H5File& operator=(const H5File&) = delete;

  // Writes a contiguous copy of `t` as dataset `name` ("train/images"), creating intermediate groups
  // and replacing an existing dataset of that name. dtypes: uint8, int32, int64, float32, float64,
  // and bool (stored as uint8 and marked, so that read() gives bool back).
  void write(const std::string& name, const torch::Tensor& t);
  // CPU tensors. Integer datasets written by other tools come back as the smallest of uint8, int8,
  // int16, int32, int64 that holds their values (uint16 as int32, uint32 as int64); floats as
  // float32 or float64. Missing dataset: "<path>: no dataset 'train/images'".
  torch::Tensor read(const std::string& name) const;
  // Rows [begin, end) along dim 0, read as one hyperslab.
  torch::Tensor read_rows(const std::string& name, int64_t begin, int64_t end) const;
  std::vector<int64_t> shape(const std::string& name) const;
  bool has(const std::string& name) const;  // true when `name` is a dataset (not for groups)

  // Attributes on the root group; setting an existing one replaces it. Strings are variable-length
  // UTF-8 (h5py reads them as str), integers int64.
  void set_attr(const std::string& name, const std::string& value);
  void set_attr(const std::string& name, int64_t value);
  std::string attr_string(const std::string& name) const;
  int64_t attr_int(const std::string& name) const;
  bool has_attr(const std::string& name) const;

  // Flushes and closes now, reporting failures that the destructor would have to swallow. Further
  // calls other than destruction throw.
  void close();
  const std::filesystem::path& path() const;

 private:
  int64_t file_id() const;  // the open hid_t, or throws if closed

  std::filesystem::path path_;
  int64_t file_ = -1;  // hid_t; kept as int64_t so this header needs no <hdf5.h>
};

// Writes a file atomically: `fill` gets an H5File created at a temporary name beside `path`; on
// success the file is flushed, closed, fsync'ed and renamed onto `path`; if `fill` (or anything
// else) throws, the temporary is removed, `path` is left as it was, and the exception propagates.
void write_h5_atomically(const std::filesystem::path& path, const std::function<void(H5File&)>& fill);

// Checks that the root attribute "schema_version" equals `expected`, else throws naming the file,
// the version found (or that it is missing) and the one expected.
void require_schema(const H5File& f, int64_t expected);

}  // namespace ef
