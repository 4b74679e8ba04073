#pragma once

#include <cstddef>
#include <cstdint>

namespace ef {

// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as used by TFRecord.
uint32_t crc32c(const void* data, size_t n);

// TFRecord's masked CRC: storing a CRC of data that itself contains CRCs is
// error-prone, so TFRecord rotates and offsets it.
uint32_t masked_crc32c(const void* data, size_t n);

}  // namespace ef
