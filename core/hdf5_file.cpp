#include "core/hdf5_file.h"

#include "core/config.h"
#include "core/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <hdf5.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <type_traits>
#include <utility>

static_assert(std::is_same_v<hid_t, int64_t>, "hdf5_file.h stores hid_t as int64_t (HDF5 >= 1.10)");

namespace ef {
namespace {

// --- library lock, error reporting, handles -------------------------------------------------------

std::mutex& hdf5_mutex() {
  static std::mutex mutex;
  return mutex;
}

// Held for the duration of every H5File call (see the header for why). It also switches off HDF5's
// printing of its error stack to stderr, per thread: in a thread-safe libhdf5 each thread has its
// own default error stack, born with printing on.
class Hdf5Lock {
 public:
  Hdf5Lock() : lock_(hdf5_mutex()) {
    thread_local bool silenced = false;
    if (!silenced) {
      H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
      silenced = true;
    }
  }

 private:
  std::lock_guard<std::mutex> lock_;
};

herr_t keep_innermost(unsigned, const H5E_error2_t* err, void* data) {
  try {  // no exception may cross HDF5's C frames
    if (err->desc != nullptr && err->desc[0] != '\0') *static_cast<std::string*>(data) = err->desc;
  } catch (...) {
  }
  return 0;
}

// The most specific message on this thread's HDF5 error stack ("file signature not found", ...).
std::string hdf5_detail() {
  std::string detail;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, keep_innermost, &detail);
  return detail.empty() ? std::string() : " (HDF5: " + detail + ")";
}

// Only called with the lock held: it reads the HDF5 error stack of the failed call.
[[noreturn]] void fail(const std::filesystem::path& path, const std::string& what) {
  throw std::runtime_error(path.string() + ": " + what + hdf5_detail());
}

// Owns one HDF5 identifier. `close` may be null for library-owned ids (H5T_NATIVE_*).
class Handle {
 public:
  using Closer = herr_t (*)(hid_t);
  Handle(hid_t id, Closer close) : id_(id), close_(close) {}
  ~Handle() {
    if (id_ >= 0 && close_ != nullptr) close_(id_);
  }
  Handle(Handle&& other) noexcept : id_(std::exchange(other.id_, -1)), close_(other.close_) {}
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  Handle& operator=(Handle&&) = delete;
  hid_t get() const { return id_; }
  bool ok() const { return id_ >= 0; }

 private:
  hid_t id_;
  Closer close_;
};

std::string in_quotes(const std::string& name) { return "'" + name + "'"; }

// --- names and objects ----------------------------------------------------------------------------

std::vector<std::string> path_components(const std::string& name) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= name.size()) {
    const size_t slash = std::min(name.find('/', start), name.size());
    if (slash > start) parts.push_back(name.substr(start, slash - start));
    start = slash + 1;
  }
  return parts;
}

// H5Lexists fails (rather than answering false) when an intermediate group is missing, so walk the
// path one component at a time.
bool link_exists(hid_t file, const std::string& name) {
  std::string prefix;
  for (const auto& part : path_components(name)) {
    prefix += prefix.empty() ? part : "/" + part;
    if (H5Lexists(file, prefix.c_str(), H5P_DEFAULT) <= 0) return false;
  }
  return !prefix.empty();
}

H5I_type_t object_type(hid_t file, const std::string& name) {
  if (!link_exists(file, name)) return H5I_BADID;
  Handle object(H5Oopen(file, name.c_str(), H5P_DEFAULT), H5Oclose);
  return object.ok() ? H5Iget_type(object.get()) : H5I_BADID;
}

bool is_dataset(hid_t file, const std::string& name) { return object_type(file, name) == H5I_DATASET; }

// Before write() creates `name`: what stands in its way must be a dataset to replace, and every
// existing parent must be a group. HDF5's own messages for these cases ("message type not found")
// would not say what is wrong; deleting a group in the way would silently drop its datasets.
void check_write_target(hid_t file, const std::filesystem::path& path, const std::string& name) {
  const auto parts = path_components(name);
  std::string prefix;
  for (size_t i = 0; i < parts.size(); ++i) {
    prefix += prefix.empty() ? parts[i] : "/" + parts[i];
    const H5I_type_t type = object_type(file, prefix);
    if (type == H5I_BADID) return;  // missing from here on: write() creates it
    const bool last = i + 1 == parts.size();
    if (!last && type != H5I_GROUP) {
      throw std::runtime_error(path.string() + ": cannot write dataset " + in_quotes(name) + ": " + in_quotes(prefix) +
                               " is not a group");
    }
    if (last && type != H5I_DATASET) {
      throw std::runtime_error(path.string() + ": cannot write dataset " + in_quotes(name) +
                               ": a group of that name exists");
    }
  }
}

Handle open_dataset(hid_t file, const std::filesystem::path& path, const std::string& name) {
  if (!is_dataset(file, name)) throw InputError(path.string() + ": no dataset " + in_quotes(name));
  Handle dataset(H5Dopen2(file, name.c_str(), H5P_DEFAULT), H5Dclose);
  if (!dataset.ok()) fail(path, "cannot open dataset " + in_quotes(name));
  return dataset;
}

Handle open_root(hid_t file, const std::filesystem::path& path) {
  Handle root(H5Gopen2(file, "/", H5P_DEFAULT), H5Gclose);
  if (!root.ok()) fail(path, "cannot open the root group");
  return root;
}

std::vector<int64_t> extent(hid_t space) {
  const int rank = H5Sget_simple_extent_ndims(space);
  std::vector<hsize_t> dims(static_cast<size_t>(std::max(rank, 0)));
  if (rank > 0) H5Sget_simple_extent_dims(space, dims.data(), nullptr);
  return std::vector<int64_t>(dims.begin(), dims.end());
}

// --- dtypes ---------------------------------------------------------------------------------------

// The memory type matching a tensor dtype, or -1 when we do not store that dtype.
hid_t native_type(torch::ScalarType dtype) {
  switch (dtype) {
    case torch::kUInt8: return H5T_NATIVE_UINT8;
    case torch::kInt8: return H5T_NATIVE_INT8;
    case torch::kInt16: return H5T_NATIVE_INT16;
    case torch::kInt32: return H5T_NATIVE_INT32;
    case torch::kInt64: return H5T_NATIVE_INT64;
    case torch::kFloat32: return H5T_NATIVE_FLOAT;
    case torch::kFloat64: return H5T_NATIVE_DOUBLE;
    default: return -1;
  }
}

// Marks uint8 datasets that hold bools written by us, so that read() gives bool back.
const char* const kDtypeAttr = "edgeforge_dtype";

// How a dataset is read: into which tensor dtype, through which memory type.
struct ReadPlan {
  torch::ScalarType dtype;
  Handle mem_type;
  bool as_bool;  // bytes meaning bool: converted after reading
};

// Integers come back in the smallest tensor dtype that holds every value of the stored type.
torch::ScalarType integer_dtype(size_t size, bool is_signed) {
  if (is_signed) {
    return size == 1 ? torch::kInt8 : size == 2 ? torch::kInt16 : size <= 4 ? torch::kInt32 : torch::kInt64;
  }
  return size == 1 ? torch::kUInt8 : size == 2 ? torch::kInt32 : torch::kInt64;
}

// h5py stores numpy bools as a one-byte enum {FALSE = 0, TRUE = 1}.
bool is_h5py_bool(hid_t type) {
  if (H5Tget_size(type) != 1 || H5Tget_nmembers(type) != 2) return false;
  signed char first = -1, second = -1;
  if (H5Tget_member_value(type, 0, &first) < 0 || H5Tget_member_value(type, 1, &second) < 0) return false;
  return first + second == 1 && first * second == 0;
}

ReadPlan plan_read(hid_t dataset, const std::filesystem::path& path, const std::string& name) {
  Handle type(H5Dget_type(dataset), H5Tclose);
  if (!type.ok()) fail(path, "cannot get the type of dataset " + in_quotes(name));
  const bool marked_bool = H5Aexists(dataset, kDtypeAttr) > 0;
  switch (H5Tget_class(type.get())) {
    case H5T_INTEGER: {
      const size_t size = H5Tget_size(type.get());
      const bool is_signed = H5Tget_sign(type.get()) == H5T_SGN_2;
      if (!is_signed && size > 4) break;  // uint64 fits no tensor dtype
      const auto dtype = integer_dtype(size, is_signed);
      return {dtype, Handle(native_type(dtype), nullptr), marked_bool && dtype == torch::kUInt8};
    }
    case H5T_FLOAT: {
      const auto dtype = H5Tget_size(type.get()) <= 4 ? torch::kFloat32 : torch::kFloat64;
      return {dtype, Handle(native_type(dtype), nullptr), false};
    }
    case H5T_ENUM:
      if (is_h5py_bool(type.get())) {
        return {torch::kUInt8, Handle(H5Tget_native_type(type.get(), H5T_DIR_ASCEND), H5Tclose), true};
      }
      break;
    default:
      break;
  }
  throw InputError(path.string() + ": dataset " + in_quotes(name) +
                           " has a type that cannot become a tensor (only integers, floats and bools can)");
}

torch::Tensor read_selection(hid_t dataset, hid_t mem_space, hid_t file_space, const std::vector<int64_t>& dims,
                             const ReadPlan& plan, const std::filesystem::path& path, const std::string& name) {
  auto out = torch::empty(dims, plan.dtype);
  // HDF5 refuses a read of nothing into a null buffer, and there is nothing to read anyway.
  if (out.numel() > 0 && H5Dread(dataset, plan.mem_type.get(), mem_space, file_space, H5P_DEFAULT, out.data_ptr()) < 0) {
    fail(path, "cannot read dataset " + in_quotes(name));
  }
  return plan.as_bool ? out.to(torch::kBool) : out;
}

// --- attributes -----------------------------------------------------------------------------------

void delete_attr_if_present(hid_t object, const std::string& name, const std::filesystem::path& path) {
  if (H5Aexists(object, name.c_str()) > 0 && H5Adelete(object, name.c_str()) < 0) {
    fail(path, "cannot replace attribute " + in_quotes(name));
  }
}

Handle create_scalar_attr(hid_t object, const std::string& name, hid_t type, const std::filesystem::path& path) {
  delete_attr_if_present(object, name, path);
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  Handle attr(H5Acreate2(object, name.c_str(), type, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  if (!attr.ok()) fail(path, "cannot create attribute " + in_quotes(name));
  return attr;
}

Handle utf8_string_type(bool variable_length) {
  Handle type(H5Tcopy(H5T_C_S1), H5Tclose);
  if (variable_length) H5Tset_size(type.get(), H5T_VARIABLE);
  H5Tset_cset(type.get(), H5T_CSET_UTF8);
  return type;
}

void write_string_attr(hid_t object, const std::string& name, const std::string& value,
                       const std::filesystem::path& path) {
  const Handle type = utf8_string_type(true);
  const Handle attr = create_scalar_attr(object, name, type.get(), path);
  const char* text = value.c_str();
  if (H5Awrite(attr.get(), type.get(), &text) < 0) fail(path, "cannot write attribute " + in_quotes(name));
}

// Opens a root attribute that must exist and hold exactly one value of class `expected`.
Handle open_root_attr(hid_t root, const std::string& name, H5T_class_t expected, const char* kind,
                      const std::filesystem::path& path) {
  if (H5Aexists(root, name.c_str()) <= 0) {
    throw InputError(path.string() + ": no attribute " + in_quotes(name) + " on the root group");
  }
  Handle attr(H5Aopen(root, name.c_str(), H5P_DEFAULT), H5Aclose);
  if (!attr.ok()) fail(path, "cannot open attribute " + in_quotes(name));
  Handle type(H5Aget_type(attr.get()), H5Tclose);
  Handle space(H5Aget_space(attr.get()), H5Sclose);
  if (H5Tget_class(type.get()) != expected || H5Sget_simple_extent_npoints(space.get()) != 1) {
    throw InputError(path.string() + ": attribute " + in_quotes(name) + " is not a single " + kind);
  }
  return attr;
}

std::string read_string_attr(hid_t attr, const std::string& name, const std::filesystem::path& path) {
  Handle file_type(H5Aget_type(attr), H5Tclose);
  if (H5Tis_variable_str(file_type.get()) > 0) {
    const Handle mem_type = utf8_string_type(true);
    char* text = nullptr;
    if (H5Aread(attr, mem_type.get(), &text) < 0) fail(path, "cannot read attribute " + in_quotes(name));
    const std::unique_ptr<char, herr_t (*)(void*)> owned(text, H5free_memory);
    return text != nullptr ? std::string(text) : std::string();
  }
  // Fixed-length (as numpy's "S" strings are stored): read the bytes, cut at the first NUL.
  std::string bytes(H5Tget_size(file_type.get()), '\0');
  if (H5Aread(attr, file_type.get(), bytes.data()) < 0) fail(path, "cannot read attribute " + in_quotes(name));
  return bytes.substr(0, bytes.find('\0'));
}

// --- files ----------------------------------------------------------------------------------------

Handle file_access_plist() {
  Handle fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
#if H5_VERSION_GE(1, 10, 7)
  // Filesystems without flock (some NFS or Lustre mounts) would otherwise refuse every open.
  H5Pset_file_locking(fapl.get(), true, true);
#endif
  return fapl;
}

hid_t open_for_reading(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) throw InputError("HDF5 file not found: " + path.string());
  if (std::filesystem::is_directory(path, ec)) throw InputError(path.string() + " is a directory, not an HDF5 file");
  if (::access(path.c_str(), R_OK) != 0) {
    throw std::runtime_error("cannot read HDF5 file " + path.string() + ": " + std::strerror(errno));
  }
  const Handle fapl = file_access_plist();
  const hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.get());
  if (file < 0) {
    throw InputError(path.string() + " is not a readable HDF5 file (corrupt or wrong format)" + hdf5_detail());
  }
  return file;
}

hid_t create_file(const std::filesystem::path& path) {
  const Handle fapl = file_access_plist();
  Handle fcpl(H5Pcreate(H5P_FILE_CREATE), H5Pclose);
  H5Pset_obj_track_times(fcpl.get(), 0);  // the root group, like datasets, without timestamps
  const hid_t file = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, fcpl.get(), fapl.get());
  if (file < 0) fail(path, "cannot create HDF5 file");
  return file;
}

}  // namespace

// --- H5File ---------------------------------------------------------------------------------------

H5File::H5File(const std::filesystem::path& path, Mode mode) : path_(path) {
  Hdf5Lock lock;
  file_ = mode == Mode::Read ? open_for_reading(path_) : create_file(path_);
}

H5File::~H5File() {
  if (file_ < 0) return;
  Hdf5Lock lock;
  H5Fclose(file_);  // errors here cannot be reported; call close() to see them
}

H5File::H5File(H5File&& other) noexcept : path_(std::move(other.path_)), file_(std::exchange(other.file_, -1)) {}

H5File& H5File::operator=(H5File&& other) noexcept {
  if (this != &other) {
    if (file_ >= 0) {
      Hdf5Lock lock;
      H5Fclose(file_);
    }
    path_ = std::move(other.path_);
    file_ = std::exchange(other.file_, -1);
  }
  return *this;
}

int64_t H5File::file_id() const {
  if (file_ < 0) throw std::runtime_error(path_.string() + ": HDF5 file is closed");
  return file_;
}

const std::filesystem::path& H5File::path() const { return path_; }

void H5File::close() {
  Hdf5Lock lock;
  if (file_ < 0) return;
  // Every object we open is closed before its call returns, so this really closes the file.
  if (H5Fclose(std::exchange(file_, -1)) < 0) fail(path_, "error while closing; the file may be incomplete");
}

// Contiguous layout, uncompressed: read_rows is then one plain read, and no decompression has to run
// under the library-wide lock, where it would serialize all data-loader threads.
void H5File::write(const std::string& name, const torch::Tensor& t) {
  if (path_components(name).empty()) throw std::invalid_argument(path_.string() + ": empty dataset name");
  auto data = t.detach().to(torch::kCPU).contiguous();
  const bool is_bool = data.scalar_type() == torch::kBool;
  if (is_bool) data = data.to(torch::kUInt8);
  const hid_t mem_type = native_type(data.scalar_type());
  if (mem_type < 0) {
    throw std::invalid_argument(path_.string() + ": cannot write dataset " + in_quotes(name) + ": dtype " +
                                c10::toString(t.scalar_type()) +
                                " is not supported (uint8, int8, int16, int32, int64, float32, float64, bool)");
  }
  const std::vector<hsize_t> dims(data.sizes().begin(), data.sizes().end());

  Hdf5Lock lock;
  const hid_t file = file_id();
  check_write_target(file, path_, name);
  // Replacing keeps write() simple to use; HDF5 does not reuse the old dataset's space (h5repack does).
  if (is_dataset(file, name) && H5Ldelete(file, name.c_str(), H5P_DEFAULT) < 0) {
    fail(path_, "cannot replace existing " + in_quotes(name));
  }
  Handle space(dims.empty() ? H5Screate(H5S_SCALAR) : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr),
               H5Sclose);
  Handle link_props(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
  H5Pset_create_intermediate_group(link_props.get(), 1);
  // Without timestamps in the object headers, the same data written the same way gives the same
  // file bytes (intermediate groups still carry theirs).
  Handle create_props(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
  H5Pset_obj_track_times(create_props.get(), 0);
  Handle dataset(H5Dcreate2(file, name.c_str(), mem_type, space.get(), link_props.get(), create_props.get(), H5P_DEFAULT),
                 H5Dclose);
  if (!dataset.ok()) fail(path_, "cannot create dataset " + in_quotes(name));
  if (data.numel() > 0 && H5Dwrite(dataset.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data.data_ptr()) < 0) {
    fail(path_, "cannot write dataset " + in_quotes(name));
  }
  if (is_bool) write_string_attr(dataset.get(), kDtypeAttr, "bool", path_);
}

torch::Tensor H5File::read(const std::string& name) const {
  Hdf5Lock lock;
  const Handle dataset = open_dataset(file_id(), path_, name);
  const ReadPlan plan = plan_read(dataset.get(), path_, name);
  const Handle space(H5Dget_space(dataset.get()), H5Sclose);
  if (H5Sget_simple_extent_type(space.get()) == H5S_NULL) {
    throw std::runtime_error(path_.string() + ": dataset " + in_quotes(name) + " has no data (null dataspace)");
  }
  return read_selection(dataset.get(), H5S_ALL, H5S_ALL, extent(space.get()), plan, path_, name);
}

torch::Tensor H5File::read_rows(const std::string& name, int64_t begin, int64_t end) const {
  Hdf5Lock lock;
  const Handle dataset = open_dataset(file_id(), path_, name);
  const ReadPlan plan = plan_read(dataset.get(), path_, name);
  const Handle file_space(H5Dget_space(dataset.get()), H5Sclose);
  std::vector<int64_t> dims = extent(file_space.get());
  if (dims.empty()) throw std::runtime_error(path_.string() + ": dataset " + in_quotes(name) + " is a scalar; it has no rows");
  if (begin < 0 || end < begin || end > dims[0]) {
    throw std::out_of_range(path_.string() + ": rows [" + std::to_string(begin) + ", " + std::to_string(end) +
                            ") are out of range for dataset " + in_quotes(name) + " with " + std::to_string(dims[0]) +
                            " rows");
  }
  dims[0] = end - begin;
  if (end == begin) return torch::empty(dims, plan.as_bool ? torch::kBool : plan.dtype);

  std::vector<hsize_t> start(dims.size(), 0);
  start[0] = static_cast<hsize_t>(begin);
  const std::vector<hsize_t> count(dims.begin(), dims.end());
  if (H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr) < 0) {
    fail(path_, "cannot select rows of dataset " + in_quotes(name));
  }
  const Handle mem_space(H5Screate_simple(static_cast<int>(count.size()), count.data(), nullptr), H5Sclose);
  return read_selection(dataset.get(), mem_space.get(), file_space.get(), dims, plan, path_, name);
}

std::vector<int64_t> H5File::shape(const std::string& name) const {
  Hdf5Lock lock;
  const Handle dataset = open_dataset(file_id(), path_, name);
  const Handle space(H5Dget_space(dataset.get()), H5Sclose);
  return extent(space.get());
}

bool H5File::has(const std::string& name) const {
  Hdf5Lock lock;
  return is_dataset(file_id(), name);
}

void H5File::set_attr(const std::string& name, const std::string& value) {
  Hdf5Lock lock;
  const Handle root = open_root(file_id(), path_);
  write_string_attr(root.get(), name, value, path_);
}

void H5File::set_attr(const std::string& name, int64_t value) {
  Hdf5Lock lock;
  const Handle root = open_root(file_id(), path_);
  const Handle attr = create_scalar_attr(root.get(), name, H5T_NATIVE_INT64, path_);
  if (H5Awrite(attr.get(), H5T_NATIVE_INT64, &value) < 0) fail(path_, "cannot write attribute " + in_quotes(name));
}

std::string H5File::attr_string(const std::string& name) const {
  Hdf5Lock lock;
  const Handle root = open_root(file_id(), path_);
  const Handle attr = open_root_attr(root.get(), name, H5T_STRING, "string", path_);
  return read_string_attr(attr.get(), name, path_);
}

int64_t H5File::attr_int(const std::string& name) const {
  Hdf5Lock lock;
  const Handle root = open_root(file_id(), path_);
  const Handle attr = open_root_attr(root.get(), name, H5T_INTEGER, "integer", path_);
  int64_t value = 0;
  if (H5Aread(attr.get(), H5T_NATIVE_INT64, &value) < 0) fail(path_, "cannot read attribute " + in_quotes(name));
  return value;
}

bool H5File::has_attr(const std::string& name) const {
  Hdf5Lock lock;
  const Handle root = open_root(file_id(), path_);
  return H5Aexists(root.get(), name.c_str()) > 0;
}

// --- free functions -------------------------------------------------------------------------------

void write_h5_atomically(const std::filesystem::path& path, const std::function<void(H5File&)>& fill) {
  write_atomically_via(path, [&](const std::filesystem::path& tmp) {
    H5File file(tmp, H5File::Mode::Create);
    fill(file);
    file.close();  // reports close errors the destructor would swallow
  });
}

void require_schema(const H5File& f, int64_t expected) {
  const std::string key = "schema_version";
  if (!f.has_attr(key)) {
    throw std::runtime_error(f.path().string() + ": missing root attribute 'schema_version' (expected schema version " +
                             std::to_string(expected) + "); was it written by EdgeForge?");
  }
  const int64_t found = f.attr_int(key);
  if (found != expected) {
    throw std::runtime_error(f.path().string() + ": schema_version is " + std::to_string(found) + ", expected " +
                             std::to_string(expected) + " (rewrite the file with this version of EdgeForge)");
  }
}

}  // namespace ef
