#include "core/image_io.h"

#include "core/config.h"
#include "core/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <csetjmp>
#include <cstdio>  // before jpeglib.h, which uses FILE and size_t without including anything
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <vector>

#include <png.h>
// clang-format off: jerror.h (the message codes) comes after jpeglib.h
#include <jpeglib.h>
#include <jerror.h>
// clang-format on

// How codec errors get back to C++
// --------------------------------
// libpng and libjpeg report a fatal error by calling a handler that must not return. Our handlers
// record the message in a plain C buffer and longjmp to a setjmp point. In C++, longjmp is only
// defined when the frames it skips hold no objects with non-trivial destructors (the same code
// with throw/catch would run no destructors). So every setjmp sits in a small "guarded" function
// (png_read_layout, jpeg_read_pixels, ...) whose locals are plain C data, that only calls into the
// codec, reads no local after the jump, and reports failure by returning false. Everything with a
// destructor - tensors, vectors, the RAII owners of the codec structs - lives in its callers, above
// the setjmp frame, where the jump never reaches; the callers then throw ordinary C++ exceptions.
// Throwing from the handlers instead would unwind through the codecs' C frames, which works with
// GCC only when those libraries happen to carry unwind tables, and leaves no chance to clean up.

namespace ef {
namespace {

const char* const kMemorySource = "<memory>";

[[noreturn]] void fail(const std::string& source, const std::string& what) {
  throw InputError(source + ": " + what);
}

std::string shape_of(const torch::Tensor& t) {
  std::ostringstream out;
  out << t.sizes();
  return out.str();
}

std::string read_whole_file(const std::filesystem::path& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) fail(path.string(), "is a directory, not an image file");
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) fail(path.string(), std::string("cannot open image file: ") + std::strerror(errno));
  const std::streamoff size = in.tellg();
  std::string bytes(static_cast<size_t>(size), '\0');
  in.seekg(0);
  if (!in.read(bytes.data(), size)) fail(path.string(), "read error while loading the image file");
  return bytes;
}

bool has_png_signature(const std::string& bytes) {
  const size_t n = 8;
  return bytes.size() >= n && png_sig_cmp(reinterpret_cast<png_const_bytep>(bytes.data()), 0, n) == 0;
}

bool has_jpeg_signature(const std::string& bytes) {
  // SOI marker (FF D8) followed by the first marker's FF.
  return bytes.size() >= 3 && static_cast<unsigned char>(bytes[0]) == 0xFF &&
         static_cast<unsigned char>(bytes[1]) == 0xD8 && static_cast<unsigned char>(bytes[2]) == 0xFF;
}

// Row pointers into an image buffer with `row_bytes` bytes per row, as both codecs want them.
std::vector<unsigned char*> row_pointers(unsigned char* data, int64_t height, size_t row_bytes) {
  std::vector<unsigned char*> rows(static_cast<size_t>(height));
  for (int64_t y = 0; y < height; ++y) rows[y] = data + static_cast<size_t>(y) * row_bytes;
  return rows;
}

// --- PNG ------------------------------------------------------------------------------------------

// State shared with libpng's callbacks. Plain C data only, because the callbacks longjmp.
struct PngIo {
  const unsigned char* data = nullptr;  // decoding: the encoded bytes
  size_t size = 0;
  size_t pos = 0;
  std::string* out = nullptr;  // encoding: where the encoded bytes go
  char error[256] = {};
};

void png_on_error(png_structp png, png_const_charp message) {
  auto* io = static_cast<PngIo*>(png_get_error_ptr(png));
  std::snprintf(io->error, sizeof io->error, "%s", message);
  png_longjmp(png, 1);
}

// Warnings are benign oddities (a sloppy iCCP profile, ...); they are not worth stderr noise.
void png_on_warning(png_structp, png_const_charp) {}

void png_read_from_memory(png_structp png, png_bytep dst, png_size_t n) {
  auto* io = static_cast<PngIo*>(png_get_io_ptr(png));
  if (n > io->size - io->pos) png_error(png, "truncated (the data ends early)");
  std::memcpy(dst, io->data + io->pos, n);
  io->pos += n;
}

void png_write_to_string(png_structp png, png_bytep data, png_size_t n) {
  auto* io = static_cast<PngIo*>(png_get_io_ptr(png));
  bool ok = true;
  try {  // a bad_alloc must not cross libpng's C frames: turn it into a libpng error instead
    io->out->append(reinterpret_cast<const char*>(data), n);
  } catch (...) {
    ok = false;
  }
  if (!ok) png_error(png, "out of memory while encoding");
}

void png_flush_nothing(png_structp) {}

class PngReader {
 public:
  explicit PngReader(PngIo* io) {
    png_ = png_create_read_struct(PNG_LIBPNG_VER_STRING, io, png_on_error, png_on_warning);
    if (png_ != nullptr) info_ = png_create_info_struct(png_);
    if (info_ == nullptr) {
      png_destroy_read_struct(&png_, nullptr, nullptr);
      throw std::runtime_error("libpng: cannot create a decoder (out of memory)");
    }
    png_set_read_fn(png_, io, png_read_from_memory);
  }
  ~PngReader() { png_destroy_read_struct(&png_, &info_, nullptr); }
  PngReader(const PngReader&) = delete;
  PngReader& operator=(const PngReader&) = delete;
  png_structp png() const { return png_; }
  png_infop info() const { return info_; }

 private:
  png_structp png_ = nullptr;
  png_infop info_ = nullptr;
};

class PngWriter {
 public:
  explicit PngWriter(PngIo* io) {
    png_ = png_create_write_struct(PNG_LIBPNG_VER_STRING, io, png_on_error, png_on_warning);
    if (png_ != nullptr) info_ = png_create_info_struct(png_);
    if (info_ == nullptr) {
      png_destroy_write_struct(&png_, nullptr);
      throw std::runtime_error("libpng: cannot create an encoder (out of memory)");
    }
    png_set_write_fn(png_, io, png_write_to_string, png_flush_nothing);
  }
  ~PngWriter() { png_destroy_write_struct(&png_, &info_); }
  PngWriter(const PngWriter&) = delete;
  PngWriter& operator=(const PngWriter&) = delete;
  png_structp png() const { return png_; }
  png_infop info() const { return info_; }

 private:
  png_structp png_ = nullptr;
  png_infop info_ = nullptr;
};

// The decoded layout, after the expansions we ask for.
struct PngLayout {
  png_uint_32 width;
  png_uint_32 height;
  int channels;
  int bit_depth;  // 8 or 16
  size_t row_bytes;
};

// Guarded (see the top of the file): false, with the message in the PngIo, on a libpng error.
bool png_read_layout(png_structp png, png_infop info, PngLayout* layout) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_read_info(png, info);
  const int color_type = png_get_color_type(png, info);
  if (color_type == PNG_COLOR_TYPE_PALETTE) {
    png_set_palette_to_rgb(png);
    if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);
  }
  if (color_type == PNG_COLOR_TYPE_GRAY && png_get_bit_depth(png, info) < 8) png_set_expand_gray_1_2_4_to_8(png);
  png_set_interlace_handling(png);  // lets png_read_image de-interlace Adam7 images
  png_read_update_info(png, info);
  layout->width = png_get_image_width(png, info);
  layout->height = png_get_image_height(png, info);
  layout->channels = png_get_channels(png, info);
  layout->bit_depth = png_get_bit_depth(png, info);
  layout->row_bytes = png_get_rowbytes(png, info);
  return true;
}

// Guarded. Reads on to IEND, so that a file cut short after its pixel data is caught too.
bool png_read_pixels(png_structp png, png_bytepp rows) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_read_image(png, rows);
  png_read_end(png, nullptr);
  return true;
}

struct PngSpec {
  png_uint_32 width;
  png_uint_32 height;
  int color_type;
  int bit_depth;
};

// Guarded.
bool png_write_all(png_structp png, png_infop info, const PngSpec* spec, png_bytepp rows) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_set_IHDR(png, info, spec->width, spec->height, spec->bit_depth, spec->color_type, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  png_write_image(png, rows);
  png_write_end(png, nullptr);
  return true;
}

// Refuses an image whose header announces more pixels than max_image_pixels(), before anything of
// its size is allocated.
void check_pixel_count(const std::string& source, int64_t width, int64_t height) {
  const int64_t limit = max_image_pixels();
  if (width > 0 && height > limit / width)
    fail(source, std::to_string(width) + " x " + std::to_string(height) + " pixels is more than the limit of " + std::to_string(limit) +
                     " (set EDGEFORGE_MAX_IMAGE_PIXELS to raise it)");
}

torch::Tensor decode_png_from(const std::string& bytes, const std::string& source) {
  if (!has_png_signature(bytes)) fail(source, "not a PNG file (bad signature)");
  PngIo io;
  io.data = reinterpret_cast<const unsigned char*>(bytes.data());
  io.size = bytes.size();
  PngReader reader(&io);
  PngLayout layout{};
  if (!png_read_layout(reader.png(), reader.info(), &layout)) fail(source, std::string("bad PNG data: ") + io.error);

  const int64_t height = layout.height, width = layout.width, channels = layout.channels;
  check_pixel_count(source, width, height);
  const size_t bytes_per_sample = layout.bit_depth == 16 ? 2 : 1;
  if (layout.row_bytes != static_cast<size_t>(width * channels) * bytes_per_sample) {
    fail(source, "unexpected PNG row layout (bit depth " + std::to_string(layout.bit_depth) + ")");
  }
  if (layout.bit_depth == 8) {
    auto image = torch::empty({height, width, channels}, torch::kUInt8);
    auto rows = row_pointers(image.data_ptr<uint8_t>(), height, layout.row_bytes);
    if (!png_read_pixels(reader.png(), rows.data())) fail(source, std::string("bad PNG data: ") + io.error);
    return image;
  }
  // 16-bit: PNG stores big-endian samples; widen them to int32 (see the header).
  std::vector<unsigned char> raw(static_cast<size_t>(height) * layout.row_bytes);
  auto rows = row_pointers(raw.data(), height, layout.row_bytes);
  if (!png_read_pixels(reader.png(), rows.data())) fail(source, std::string("bad PNG data: ") + io.error);
  auto image = torch::empty({height, width, channels}, torch::kInt32);
  int32_t* dst = image.data_ptr<int32_t>();
  for (size_t i = 0, n = static_cast<size_t>(image.numel()); i < n; ++i) {
    dst[i] = (static_cast<int32_t>(raw[2 * i]) << 8) | raw[2 * i + 1];
  }
  return image;
}

// [H,W] or [H,W,C] -> contiguous CPU [H,W,C], checking what a PNG can hold.
torch::Tensor png_ready_hwc(const torch::Tensor& input, const std::string& target) {
  auto image = input.dim() == 2 ? input.unsqueeze(2) : input;
  if (image.dim() != 3) fail(target, "cannot encode PNG: expected an [H,W,C] or [H,W] image, got shape " + shape_of(input));
  const int64_t channels = image.size(2);
  if (channels < 1 || channels > 4) fail(target, "cannot encode PNG: C must be 1..4, got shape " + shape_of(input));
  if (image.size(0) == 0 || image.size(1) == 0) fail(target, "cannot encode PNG: empty image of shape " + shape_of(input));
  if (image.size(0) > PNG_UINT_31_MAX || image.size(1) > PNG_UINT_31_MAX) fail(target, "cannot encode PNG: image too large");
  return image.detach().to(torch::kCPU).contiguous();
}

// Big-endian 16-bit samples, as PNG stores them; values outside 0..65535 are refused, not wrapped.
std::vector<unsigned char> png_samples16(const torch::Tensor& hwc, const std::string& target) {
  const auto wide = hwc.to(torch::kInt32).contiguous();
  const int32_t lo = wide.min().item<int32_t>(), hi = wide.max().item<int32_t>();
  if (lo < 0 || hi > 65535) {
    fail(target, "cannot encode PNG: 16-bit values must lie in 0..65535, found " + std::to_string(lo) + ".." +
                     std::to_string(hi));
  }
  std::vector<unsigned char> raw(static_cast<size_t>(wide.numel()) * 2);
  const int32_t* src = wide.data_ptr<int32_t>();
  for (size_t i = 0; i < static_cast<size_t>(wide.numel()); ++i) {
    raw[2 * i] = static_cast<unsigned char>(src[i] >> 8);
    raw[2 * i + 1] = static_cast<unsigned char>(src[i] & 0xFF);
  }
  return raw;
}

int png_color_type(int64_t channels) {
  switch (channels) {
    case 1: return PNG_COLOR_TYPE_GRAY;
    case 2: return PNG_COLOR_TYPE_GRAY_ALPHA;
    case 3: return PNG_COLOR_TYPE_RGB;
    default: return PNG_COLOR_TYPE_RGB_ALPHA;
  }
}

std::string encode_png_for(const torch::Tensor& input, const std::string& target) {
  const auto image = png_ready_hwc(input, target);
  const auto dtype = image.scalar_type();
  const bool eight_bit = dtype == torch::kUInt8;
  if (!eight_bit && dtype != torch::kInt32 && dtype != torch::kInt16 && dtype != torch::kUInt16) {
    fail(target, std::string("cannot encode PNG: dtype ") + c10::toString(dtype) +
                     " is not supported (uint8 for 8-bit, int32/int16/uint16 for 16-bit; "
                     "convert float images with to_uint8_hwc)");
  }
  const int64_t height = image.size(0), width = image.size(1), channels = image.size(2);
  std::vector<unsigned char> samples16;
  unsigned char* pixels = nullptr;
  if (eight_bit) {
    pixels = image.data_ptr<uint8_t>();
  } else {
    samples16 = png_samples16(image, target);
    pixels = samples16.data();
  }
  const size_t row_bytes = static_cast<size_t>(width * channels) * (eight_bit ? 1 : 2);
  auto rows = row_pointers(pixels, height, row_bytes);

  std::string encoded;
  PngIo io;
  io.out = &encoded;
  PngWriter writer(&io);
  const PngSpec spec{static_cast<png_uint_32>(width), static_cast<png_uint_32>(height), png_color_type(channels),
                     eight_bit ? 8 : 16};
  if (!png_write_all(writer.png(), writer.info(), &spec, rows.data())) {
    fail(target, std::string("cannot encode PNG: ") + io.error);
  }
  return encoded;
}

// --- JPEG -----------------------------------------------------------------------------------------

struct JpegErrorManager {
  jpeg_error_mgr base;  // first member: libjpeg hands the handlers a jpeg_error_mgr*
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void jpeg_on_fatal(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegErrorManager*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

// libjpeg's warnings are mostly oddities that real files are full of ("extraneous bytes before
// marker") and decode fine, so they are dropped - except a premature end of data, which libjpeg
// would paper over with gray pixels: that one is an error.
void jpeg_on_message(j_common_ptr cinfo, int level) {
  if (level != -1 || cinfo->err->msg_code != JWRN_JPEG_EOF) return;
  auto* err = reinterpret_cast<JpegErrorManager*>(cinfo->err);
  std::snprintf(err->message, sizeof err->message, "truncated (the data ends before the image does)");
  std::longjmp(err->jump, 1);
}

struct JpegDecoder {
  jpeg_decompress_struct cinfo;
  JpegErrorManager err;

  JpegDecoder() {
    std::memset(&cinfo, 0, sizeof cinfo);  // lets the destructor run even if creation fails
    std::memset(&err, 0, sizeof err);
    cinfo.err = jpeg_std_error(&err.base);
    err.base.error_exit = jpeg_on_fatal;
    err.base.emit_message = jpeg_on_message;
  }
  ~JpegDecoder() { jpeg_destroy_decompress(&cinfo); }  // safe in any state, even uncreated
  JpegDecoder(const JpegDecoder&) = delete;
  JpegDecoder& operator=(const JpegDecoder&) = delete;
};

struct JpegLayout {
  JDIMENSION width;
  JDIMENSION height;
  int components;
  bool cmyk;         // decoded as CMYK, converted to RGB by us (libjpeg has no CMYK -> RGB)
  bool adobe_cmyk;   // Adobe's convention: stored ink values are inverted
};

// Guarded (see the top of the file).
bool jpeg_create_guarded(JpegDecoder* d) {
  if (setjmp(d->err.jump)) return false;
  jpeg_create_decompress(&d->cinfo);
  return true;
}

// Guarded.
bool jpeg_start(JpegDecoder* d, const unsigned char* data, unsigned long size, JpegLayout* layout) {
  if (setjmp(d->err.jump)) return false;
  jpeg_mem_src(&d->cinfo, data, size);
  jpeg_read_header(&d->cinfo, TRUE);
  const bool cmyk = d->cinfo.jpeg_color_space == JCS_CMYK || d->cinfo.jpeg_color_space == JCS_YCCK;
  d->cinfo.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;  // gray and YCbCr both come out as RGB
  jpeg_start_decompress(&d->cinfo);
  layout->width = d->cinfo.output_width;
  layout->height = d->cinfo.output_height;
  layout->components = d->cinfo.output_components;
  layout->cmyk = cmyk;
  layout->adobe_cmyk = cmyk && d->cinfo.saw_Adobe_marker;
  return true;
}

// Guarded.
bool jpeg_read_pixels(JpegDecoder* d, unsigned char* const* rows) {
  if (setjmp(d->err.jump)) return false;
  while (d->cinfo.output_scanline < d->cinfo.output_height) {
    JSAMPROW row = rows[d->cinfo.output_scanline];
    jpeg_read_scanlines(&d->cinfo, &row, 1);
  }
  jpeg_finish_decompress(&d->cinfo);
  return true;
}

void cmyk_to_rgb(const unsigned char* cmyk, unsigned char* rgb, size_t pixels, bool inverted) {
  for (size_t i = 0; i < pixels; ++i, cmyk += 4, rgb += 3) {
    // With inverted (Adobe) values, 255 means "no ink", i.e. the channel's remaining brightness.
    const int k = inverted ? cmyk[3] : 255 - cmyk[3];
    for (int c = 0; c < 3; ++c) {
      const int v = inverted ? cmyk[c] : 255 - cmyk[c];
      rgb[c] = static_cast<unsigned char>((v * k + 127) / 255);
    }
  }
}

torch::Tensor decode_jpeg_from(const std::string& bytes, const std::string& source) {
  if (!has_jpeg_signature(bytes)) fail(source, "not a JPEG file (no SOI marker)");
  JpegDecoder decoder;
  if (!jpeg_create_guarded(&decoder)) fail(source, std::string("cannot start the JPEG decoder: ") + decoder.err.message);
  JpegLayout layout{};
  if (!jpeg_start(&decoder, reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), &layout)) {
    fail(source, std::string("bad JPEG data: ") + decoder.err.message);
  }
  const int64_t height = layout.height, width = layout.width, channels = layout.components;
  check_pixel_count(source, width, height);
  if (channels != (layout.cmyk ? 4 : 3)) fail(source, "unexpected JPEG output with " + std::to_string(channels) + " channels");

  auto image = torch::empty({height, width, 3}, torch::kUInt8);
  if (!layout.cmyk) {
    auto rows = row_pointers(image.data_ptr<uint8_t>(), height, static_cast<size_t>(width) * 3);
    if (!jpeg_read_pixels(&decoder, rows.data())) fail(source, std::string("bad JPEG data: ") + decoder.err.message);
    return image;
  }
  std::vector<unsigned char> cmyk(static_cast<size_t>(height * width) * 4);
  auto rows = row_pointers(cmyk.data(), height, static_cast<size_t>(width) * 4);
  if (!jpeg_read_pixels(&decoder, rows.data())) fail(source, std::string("bad JPEG data: ") + decoder.err.message);
  cmyk_to_rgb(cmyk.data(), image.data_ptr<uint8_t>(), static_cast<size_t>(height * width), layout.adobe_cmyk);
  return image;
}

}  // namespace

int64_t max_image_pixels() {
  constexpr int64_t kDefault = int64_t{1} << 28;
  const char* v = std::getenv("EDGEFORGE_MAX_IMAGE_PIXELS");
  if (!v || !*v) return kDefault;
  char* end = nullptr;
  const long long n = std::strtoll(v, &end, 10);
  if (end == v || *end != '\0' || n <= 0) throw InputError(std::string("EDGEFORGE_MAX_IMAGE_PIXELS: expected a positive integer, got '") + v + "'");
  return n;
}

torch::Tensor read_png(const std::filesystem::path& path) { return decode_png_from(read_whole_file(path), path.string()); }

torch::Tensor decode_png(const std::string& bytes) { return decode_png_from(bytes, kMemorySource); }

std::string encode_png(const torch::Tensor& hwc) { return encode_png_for(hwc, kMemorySource); }

void write_png(const std::filesystem::path& path, const torch::Tensor& hwc) {
  write_file_atomically(path, encode_png_for(hwc, path.string()));
}

torch::Tensor read_jpeg(const std::filesystem::path& path) { return decode_jpeg_from(read_whole_file(path), path.string()); }

torch::Tensor decode_jpeg(const std::string& bytes) { return decode_jpeg_from(bytes, kMemorySource); }

torch::Tensor read_image(const std::filesystem::path& path) {
  const std::string bytes = read_whole_file(path);
  if (has_png_signature(bytes)) return decode_png_from(bytes, path.string());
  if (has_jpeg_signature(bytes)) return decode_jpeg_from(bytes, path.string());
  fail(path.string(), "unrecognized image format (neither a PNG nor a JPEG signature)");
}

torch::Tensor to_uint8_hwc(const torch::Tensor& chw01) {
  if (!chw01.is_floating_point()) {
    throw std::invalid_argument(std::string("to_uint8_hwc: expected a float image in [0,1], got dtype ") +
                                c10::toString(chw01.scalar_type()));
  }
  const auto chw = chw01.dim() == 2 ? chw01.unsqueeze(0) : chw01;
  if (chw.dim() != 3) throw std::invalid_argument("to_uint8_hwc: expected [C,H,W] or [H,W], got shape " + shape_of(chw01));
  return chw.detach()
      .to(torch::kCPU, torch::kFloat)
      .nan_to_num(0.0)  // NaN has no uint8 value; casting it is undefined
      .clamp(0.0, 1.0)
      .mul(255.0)
      .round()
      .to(torch::kUInt8)
      .permute({1, 2, 0})
      .contiguous();
}

torch::Tensor make_grid(const torch::Tensor& bchw, int64_t cols, int64_t pad, double pad_value) {
  if (bchw.dim() != 4) throw std::invalid_argument("make_grid: expected [B,C,H,W], got shape " + shape_of(bchw));
  if (bchw.size(0) == 0) throw std::invalid_argument("make_grid: empty batch");
  if (cols < 1) throw std::invalid_argument("make_grid: cols must be >= 1, got " + std::to_string(cols));
  if (pad < 0) throw std::invalid_argument("make_grid: pad must be >= 0, got " + std::to_string(pad));
  const int64_t batch = bchw.size(0), channels = bchw.size(1), height = bchw.size(2), width = bchw.size(3);
  const int64_t rows = (batch + cols - 1) / cols;
  auto grid = torch::full({channels, rows * (height + pad) + pad, cols * (width + pad) + pad}, pad_value, bchw.options());
  const auto images = bchw.detach();
  for (int64_t i = 0; i < batch; ++i) {
    const int64_t y = pad + (i / cols) * (height + pad);
    const int64_t x = pad + (i % cols) * (width + pad);
    grid.slice(1, y, y + height).slice(2, x, x + width).copy_(images[i]);
  }
  return grid;
}

}  // namespace ef
