/* SHA-256 (FIPS 180-4), self-contained: the kernel source set is hashed so
 * that a cache key changes whenever any template byte changes. */
#ifndef KDA_SRC_SHA256_H
#define KDA_SRC_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct kda__sha256_ctx {
  uint32_t state[8];
  uint64_t bytes;            /* message length so far */
  unsigned char block[64];   /* pending partial block */
  size_t used;               /* bytes pending in block */
} kda__sha256_ctx;

void kda__sha256_init(kda__sha256_ctx *c);
void kda__sha256_update(kda__sha256_ctx *c, const void *data, size_t n);
void kda__sha256_final(kda__sha256_ctx *c, unsigned char out[32]);

/* One-shot digest of n bytes. */
void kda__sha256(const void *data, size_t n, unsigned char out[32]);

/* Lower-case hex of a digest, NUL-terminated. */
void kda__sha256_hex(const unsigned char d[32], char out[65]);

#endif
