#pragma once

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>

namespace ef {

// Appends TensorBoard summaries to an events file in TFRecord framing
// (uint64 length, masked crc32c of length, payload, masked crc32c of payload).
// Not thread-safe; one writer per file.
class TensorBoardWriter {
 public:
  // Creates log_dir if needed and a new file events.out.tfevents.<unix_seconds>.<hostname> in it;
  // writes the initial Event with file_version "brain.Event:2". Throws std::runtime_error naming
  // the path on failure.
  explicit TensorBoardWriter(const std::filesystem::path& log_dir);
  ~TensorBoardWriter();  // flushes

  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  // TensorBoard stores scalars as float32, so value loses precision beyond that.
  void add_scalar(const std::string& tag, int64_t step, double value);
  // png: an encoded PNG file's bytes. channels (1..4) becomes the image's colorspace.
  void add_image_png(const std::string& tag, int64_t step, const std::string& png, int height,
                     int width, int channels);
  void flush();  // fflush + fsync
  const std::filesystem::path& path() const { return path_; }

 private:
  // Frames one serialized Event as a TFRecord and appends it.
  void write_record(const std::string& payload);
  void write_bytes(const void* data, size_t n);
  [[noreturn]] void fail(const char* what, int err) const;

  std::filesystem::path path_;
  std::FILE* file_ = nullptr;
};

}  // namespace ef
