/*
 * ckpt_digest.c - the 64-bit checksum of a checkpoint's datasets: a sum over elements, so every
 * rank adds its own part and the total does not depend on the sharding. Its definition is stored
 * in every file (root attribute checksum_algorithm), so it can be checked with numpy.
 */
#include "checkpoint.h"

#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(ADAMPI_NO_CLONES)
#define ADAMPI_DIGEST_CLONES __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#else
#define ADAMPI_DIGEST_CLONES
#endif

const char adampi__ckpt_digest_text[] =
  "checksum = sum mod 2^64 over the elements x_i of the dataset, i in row-major order from 0, "
  "of splitmix64(bits(x_i) XOR i * 0x9E3779B97F4A7C15), bits = the float32 bit pattern as uint64, "
  "splitmix64(z): z ^= z >> 30; z *= 0xBF58476D1CE4E5B9; z ^= z >> 27; z *= 0x94D049BB133111EB; "
  "z ^= z >> 31";

/* The checksum (adampi__ckpt_digest_text) of n elements whose first has index first. HDF5's
 * Fletcher32 filter would need chunked datasets, whose parallel writes measured 8x slower than
 * contiguous ones here; a sum over elements needs no chunks and combines across any sharding
 * exactly. */
ADAMPI_DIGEST_CLONES
uint64_t adampi__ckpt_digest(const float *x, int64_t n, int64_t first)
{
  uint64_t sum = 0;
  for (int64_t k = 0; k < n; k++) {
    uint32_t bits;
    memcpy(&bits, &x[k], 4);
    uint64_t z = (uint64_t)bits ^ ((uint64_t)(first + k) * 0x9E3779B97F4A7C15ull);
    z ^= z >> 30;
    z *= 0xBF58476D1CE4E5B9ull;
    z ^= z >> 27;
    z *= 0x94D049BB133111EBull;
    z ^= z >> 31;
    sum += z;
  }
  return sum;
}
