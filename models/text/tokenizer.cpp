#include "models/text/tokenizer.h"

#include <stdexcept>

namespace ef {

ByteTokenizer::ByteTokenizer(int64_t max_length) : max_length_(max_length) {
  if (max_length < 2) throw std::invalid_argument("tokenizer: max_length must be at least 2 (BOS and EOS), got " + std::to_string(max_length));
}

torch::Tensor ByteTokenizer::encode(const std::string& text) const {
  torch::Tensor ids = torch::full({max_length_}, kPad, torch::kLong);
  auto a = ids.accessor<int64_t, 1>();
  a[0] = kBos;
  int64_t n = 1;
  for (unsigned char c : text) {
    if (n >= max_length_ - 1) break;
    if (c == 0) break;  // a NUL ends the text, as in the padded byte arrays
    a[n++] = c;
  }
  a[n] = kEos;
  return ids;
}

torch::Tensor ByteTokenizer::encode(const std::vector<std::string>& texts) const {
  std::vector<torch::Tensor> rows;
  for (const auto& t : texts) rows.push_back(encode(t));
  return rows.empty() ? torch::empty({0, max_length_}, torch::kLong) : torch::stack(rows);
}

torch::Tensor ByteTokenizer::encode_bytes(const torch::Tensor& bytes) const {
  if (bytes.dim() != 2) throw std::invalid_argument("tokenizer: expected text bytes [B, N], got " + std::to_string(bytes.dim()) + " dimensions");
  torch::Tensor b = bytes.to(torch::kCPU, torch::kUInt8).contiguous();
  torch::Tensor ids = torch::full({b.size(0), max_length_}, kPad, torch::kLong);
  auto src = b.accessor<uint8_t, 2>();
  auto dst = ids.accessor<int64_t, 2>();
  for (int64_t i = 0; i < b.size(0); ++i) {
    dst[i][0] = kBos;
    int64_t n = 1;
    for (int64_t j = 0; j < b.size(1) && src[i][j] != 0 && n < max_length_ - 1; ++j) dst[i][n++] = src[i][j];
    dst[i][n] = kEos;
  }
  return ids.to(bytes.device());
}

std::string ByteTokenizer::decode(const torch::Tensor& ids) const {
  torch::Tensor c = ids.to(torch::kCPU, torch::kLong).contiguous().view(-1);
  auto a = c.accessor<int64_t, 1>();
  std::string out;
  for (int64_t i = 0; i < c.size(0); ++i) {
    if (a[i] == kBos) continue;
    if (a[i] == kEos || a[i] == kPad) break;
    out.push_back(static_cast<char>(a[i]));
  }
  return out;
}

}  // namespace ef
