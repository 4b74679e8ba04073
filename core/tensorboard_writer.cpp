#include "core/tensorboard_writer.h"

#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>
#include <system_error>

#include "core/crc32c.h"
#include "tensorboard.pb.h"  // generated into the build folder

namespace ef {
namespace {

namespace pb = edgeforge::tensorboard;

double now_seconds() {
  using namespace std::chrono;
  return duration<double>(system_clock::now().time_since_epoch()).count();
}

std::string hostname() {
  char buf[256] = {};
  if (gethostname(buf, sizeof(buf) - 1) != 0 || buf[0] == '\0') return "localhost";
  return buf;
}

// TFRecord integers are little-endian regardless of the host.
void put_le(unsigned char* out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out[i] = static_cast<unsigned char>(v >> (8 * i));
}

}  // namespace

TensorBoardWriter::TensorBoardWriter(const std::filesystem::path& log_dir) {
  std::error_code ec;
  std::filesystem::create_directories(log_dir, ec);
  if (ec) {
    throw std::runtime_error("TensorBoardWriter: cannot create " + log_dir.string() + ": " +
                             ec.message());
  }
  const auto seconds = static_cast<long long>(now_seconds());
  const std::string base = "events.out.tfevents." + std::to_string(seconds) + "." + hostname();
  // "x" (exclusive create): two writers started in the same second in the same directory must not
  // truncate each other's file, so the later one takes a numbered name instead.
  for (int attempt = 0; file_ == nullptr; ++attempt) {
    path_ = log_dir / (attempt == 0 ? base : base + "." + std::to_string(attempt));
    file_ = std::fopen(path_.c_str(), "wbx");
    if (file_ == nullptr && (errno != EEXIST || attempt >= 100)) fail("cannot create", errno);
  }

  pb::Event event;
  event.set_wall_time(now_seconds());
  event.set_file_version("brain.Event:2");
  try {
    write_record(event.SerializeAsString());
    // Flush right away so TensorBoard sees a valid file even before the first summary.
    flush();
  } catch (...) {
    // The destructor does not run for a half-built object, so close the file here.
    std::fclose(file_);
    throw;
  }
}

TensorBoardWriter::~TensorBoardWriter() {
  if (file_ == nullptr) return;
  try {
    flush();
  } catch (const std::exception&) {
    // A destructor must not throw; callers who care about the last records call flush() first.
  }
  std::fclose(file_);
}

void TensorBoardWriter::add_scalar(const std::string& tag, int64_t step, double value) {
  pb::Event event;
  event.set_wall_time(now_seconds());
  event.set_step(step);
  pb::Summary::Value* v = event.mutable_summary()->add_value();
  v->set_tag(tag);
  v->set_simple_value(static_cast<float>(value));
  write_record(event.SerializeAsString());
}

void TensorBoardWriter::add_image_png(const std::string& tag, int64_t step, const std::string& png,
                                      int height, int width, int channels) {
  if (channels < 1 || channels > 4 || height <= 0 || width <= 0) {
    throw std::invalid_argument("TensorBoardWriter::add_image_png: bad shape for tag " + tag);
  }
  pb::Event event;
  event.set_wall_time(now_seconds());
  event.set_step(step);
  pb::Summary::Value* v = event.mutable_summary()->add_value();
  v->set_tag(tag);
  pb::Summary::Image* image = v->mutable_image();
  image->set_height(height);
  image->set_width(width);
  image->set_colorspace(channels);  // TF's colorspace codes coincide with channel counts
  image->set_encoded_image_string(png);
  write_record(event.SerializeAsString());
}

void TensorBoardWriter::flush() {
  if (std::fflush(file_) != 0) fail("cannot flush", errno);
  if (::fsync(fileno(file_)) != 0) fail("cannot fsync", errno);
}

void TensorBoardWriter::write_record(const std::string& payload) {
  unsigned char header[12];
  put_le(header, payload.size(), 8);
  put_le(header + 8, masked_crc32c(header, 8), 4);
  unsigned char footer[4];
  put_le(footer, masked_crc32c(payload.data(), payload.size()), 4);

  write_bytes(header, sizeof(header));
  write_bytes(payload.data(), payload.size());
  write_bytes(footer, sizeof(footer));
}

void TensorBoardWriter::write_bytes(const void* data, size_t n) {
  if (std::fwrite(data, 1, n, file_) != n) fail("cannot write", errno);
}

void TensorBoardWriter::fail(const char* what, int err) const {
  throw std::runtime_error("TensorBoardWriter: " + std::string(what) + " " + path_.string() +
                           ": " + std::strerror(err));
}

}  // namespace ef
