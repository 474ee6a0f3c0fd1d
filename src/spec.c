/* Specializations: their names for NVRTC, their legal block configurations,
 * and the built-in heuristic that picks one before (or without) tuning. */
#include "spec.h"

#include <stdio.h>
#include <string.h>

#include "error.h"

/* Registers are the limit on rows x channels a thread holds: v[L][VEC]
 * floats plus the raw loads. 64 keeps every legal config spill-free. */
#define KDA__MAX_VALUES_PER_THREAD 64

static int is_pow2(int32_t v) { return v > 0 && (v & (v - 1)) == 0; }

static int dtype_bytes(int32_t dt) {
  switch (dt) {
    case KDA_DTYPE_F16:
    case KDA_DTYPE_BF16:
      return 2;
    case KDA_DTYPE_I64:
      return 8;
    default:
      return 4;
  }
}

const char *kda__spec_source_name(const kda__spec *spec) {
  return spec->kernel == KDA__KERNEL_CHUNK_INDICES ? "chunk_indices.cu" : "gate_cumsum.cu";
}

int kda__spec_name(const kda__spec *spec, char *buf, size_t size) {
  int n;
  if (spec->kernel == KDA__KERNEL_CHUNK_INDICES) {
    /* varlen 3: the chunk plan's builder (kda_chunk_plan_build). */
    n = snprintf(buf, size, "kda::build_chunk_%s<%d,%d,%d>",
                 spec->varlen == 3 ? "plan" : "indices", spec->idx_dtype, spec->chunk,
                 spec->cfg.tx);
  } else {
    n = snprintf(buf, size,
                 "kda::gate_cumsum<%d,%d,%d,%d,%d,%d,%d,%d,%d,%d,%d,%d,%d,%d,%d,%d>",
                 spec->in_dtype, spec->out_dtype, spec->heads, spec->head_dim, spec->chunk,
                 spec->cumsum, spec->gate, spec->has_bias, spec->has_alog, spec->has_scale,
                 spec->reverse, spec->varlen, spec->idx_dtype, spec->cfg.vec, spec->cfg.tx,
                 spec->cfg.seg);
  }
  return (n < 0 || (size_t)n >= size) ? -1 : n;
}

static const char *dtype_name(int32_t dt) {
  static const char *names[] = {"f32", "f16", "bf16", "i32", "i64"};
  return (dt >= 0 && dt <= 4) ? names[dt] : "?";
}

int kda__spec_describe(const kda__spec *spec, char *buf, size_t size) {
  static const char *gates[] = {"none", "softplus", "lower_bound"};
  int n;
  if (spec->kernel == KDA__KERNEL_CHUNK_INDICES) {
    n = snprintf(buf, size, "%s idx=%s chunk=%d threads=%d",
                 spec->varlen == 3 ? "chunk_plan" : "chunk_indices", dtype_name(spec->idx_dtype),
                 spec->chunk, spec->cfg.tx);
  } else {
    const char *kind = !spec->cumsum ? "gate" : spec->gate ? "gate_chunk_cumsum" : "chunk_local_cumsum";
    n = snprintf(buf, size,
                 "%s %s->%s H=%d K=%d chunk=%d gate=%s bias=%d alog=%d scale=%d reverse=%d "
                 "varlen=%d idx=%s vec=%d tx=%d seg=%d",
                 kind, dtype_name(spec->in_dtype), dtype_name(spec->out_dtype), spec->heads,
                 spec->head_dim, spec->chunk,
                 (spec->gate >= 0 && spec->gate <= 2) ? gates[spec->gate] : "?", spec->has_bias,
                 spec->has_alog, spec->has_scale, spec->reverse, spec->varlen,
                 dtype_name(spec->idx_dtype), spec->cfg.vec, spec->cfg.tx, spec->cfg.seg);
  }
  return (n < 0 || (size_t)n >= size) ? -1 : n;
}

uint64_t kda__spec_hash(const kda__spec *spec) {
  /* Eight bytes a step: every warm call hashes its spec for the module
   * cache, and a byte-wise FNV-1a over the spec's 80 bytes was 80 dependent
   * multiplies, the largest item of the library's own host cost (perf of
   * `kda-bench --host-only` on the tests' stand-in driver). The hash only
   * picks a bucket of the in-memory cache; nothing stores it. */
  enum { WORDS = (sizeof(kda__spec) + 7) / 8 };
  uint64_t w[WORDS] = {0};
  memcpy(w, spec, sizeof *spec);
  uint64_t h = 0x9e3779b97f4a7c15ull;
  for (int i = 0; i < WORDS; ++i) {
    h = (h ^ w[i]) * 0xff51afd7ed558ccdull;
    h ^= h >> 32;
  }
  h *= 0xc4ceb9fe1a85ec53ull;
  return h ^ (h >> 29);
}

int kda__host_granule(int chunk) { return chunk / 8 > 8 ? chunk / 8 : 8; }

int kda__config_threads(const kda__spec *spec) {
  if (spec->kernel == KDA__KERNEL_CHUNK_INDICES) return spec->cfg.tx;
  return spec->cfg.tx * spec->cfg.seg;
}

int kda__max_vec(const kda__spec *spec) {
  const int hk = spec->heads * spec->head_dim;
  for (int v = 8; v > 1; v >>= 1)
    if (hk % v == 0) return v;
  return 1;
}

int kda__spec_sums_in_double(const kda__spec *spec) {
  return spec->kernel != KDA__KERNEL_CHUNK_INDICES && spec->cumsum && spec->gate == KDA_GATE_NONE;
}

kda_status kda__config_check(const kda__spec *spec) {
  const kda__config *c = &spec->cfg;
  if (spec->kernel == KDA__KERNEL_CHUNK_INDICES) {
    KDA__REQUIRE(c->tx >= 32 && c->tx <= 1024 && c->tx % 32 == 0 && c->vec == 1 && c->seg == 1,
                 KDA_ERROR_INVALID_ARGUMENT,
                 "chunk_indices config needs 32..1024 threads in whole warps (got tx=%d vec=%d seg=%d)",
                 c->tx, c->vec, c->seg);
    return KDA_OK;
  }
  const int hk = spec->heads * spec->head_dim;
  KDA__REQUIRE(c->vec == 1 || c->vec == 2 || c->vec == 4 || c->vec == 8,
               KDA_ERROR_INVALID_ARGUMENT, "vec=%d is not 1, 2, 4 or 8", c->vec);
  KDA__REQUIRE(hk % c->vec == 0, KDA_ERROR_INVALID_ARGUMENT, "vec=%d does not divide H*K=%d",
               c->vec, hk);
  KDA__REQUIRE(is_pow2(c->tx) && c->tx <= 256, KDA_ERROR_INVALID_ARGUMENT,
               "tx=%d is not a power of two in [1, 256]", c->tx);
  KDA__REQUIRE(is_pow2(c->seg) && c->seg <= spec->chunk, KDA_ERROR_INVALID_ARGUMENT,
               "seg=%d is not a power of two in [1, chunk=%d]", c->seg, spec->chunk);
  KDA__REQUIRE(c->tx * c->seg <= 1024, KDA_ERROR_INVALID_ARGUMENT,
               "tx*seg=%d threads exceed 1024", c->tx * c->seg);
  const int rows = spec->chunk / c->seg;
  KDA__REQUIRE(rows * c->vec <= KDA__MAX_VALUES_PER_THREAD, KDA_ERROR_INVALID_ARGUMENT,
               "chunk/seg*vec=%d values per thread exceed %d", rows * c->vec,
               KDA__MAX_VALUES_PER_THREAD);
  /* The plain cumsum keeps its segment totals in double (gate_cumsum.cu,
   * WIDE): 8 bytes a value in shared memory, kept within 32 KB. */
  KDA__REQUIRE(!kda__spec_sums_in_double(spec) || c->seg == 1 ||
                   c->tx * c->seg * c->vec <= KDA__MAX_WIDE_TOTALS,
               KDA_ERROR_INVALID_ARGUMENT,
               "tx*seg*vec=%d double totals of the plain cumsum exceed %d", c->tx * c->seg * c->vec,
               KDA__MAX_WIDE_TOTALS);
  /* Modes 2 (host rows) and 3 (a chunk plan) pack short chunks at granules. */
  KDA__REQUIRE((spec->varlen != 2 && spec->varlen != 3) || rows <= kda__host_granule(spec->chunk),
               KDA_ERROR_INVALID_ARGUMENT,
               "chunk/seg=%d rows per segment exceed the %d-row granule of a packed varlen launch",
               rows, kda__host_granule(spec->chunk));
  return KDA_OK;
}

static int pow2_ceil(int v) {
  int p = 1;
  while (p < v) p <<= 1;
  return p;
}

kda__config kda__config_heuristic(const kda__spec *spec) {
  /* One block of 1024 threads: the fill of the table, not the scan, is the
   * work, and it is spread over the block. */
  kda__config c = {1, 1024, 1};
  if (spec->kernel == KDA__KERNEL_CHUNK_INDICES) return c;
  const int hk = spec->heads * spec->head_dim;
  /* Widest access that divides a row and stays within 16 bytes. */
  int vec = kda__max_vec(spec);
  while (vec > 1 && vec * dtype_bytes(spec->in_dtype) > 16) vec >>= 1;
  /* Four rows per thread: four 16-byte loads in flight, 32 values held;
   * more rows cost registers and occupancy (chunk 128 at 8 rows ran at
   * half the bandwidth on an H100). */
  int rows = spec->chunk < 4 ? spec->chunk : 4;
  int seg = spec->chunk / rows;
  int tx = pow2_ceil((hk + vec - 1) / vec);
  /* 128 channels x 16 segments (256 threads) won the tuning of every
   * large shape on an H100 (bench/results, v3); 512 threads were 1-2%
   * slower there and 10-30% slower on small shapes. */
  if (tx > 16) tx = 16;
  while (tx * seg > 1024) tx >>= 1;
  while (kda__spec_sums_in_double(spec) && tx * seg * vec > KDA__MAX_WIDE_TOTALS && tx > 1) tx >>= 1;
  c.vec = vec;
  c.tx = tx;
  c.seg = seg;
  return c;
}

kda__config kda__config_fit_grid(const kda__spec *spec, kda__config c, int64_t num_chunks,
                                 int sm_count) {
  if (spec->kernel == KDA__KERNEL_CHUNK_INDICES || sm_count <= 0) return c;
  /* A small batch gives few blocks, and a block's rows are processed one
   * after another on one SM: narrow the blocks (fewer channels each, down
   * to one warp) while there are fewer blocks than a quarter of the SMs.
   * The H100 probe (bench/results/probe-*-pairs.json) put the fastest block
   * shape at 64-256 blocks on 132 SMs: narrowing further, to two blocks
   * per SM, cost 6-7% at T=512 H=32 and T=2048 H=8 and 14% at T=512 H=4. */
  kda__spec s = *spec;
  s.cfg = c;
  while (kda__grid_starves_sms(kda__spec_grid(&s, num_chunks), sm_count) && s.cfg.tx > 1 &&
         s.cfg.tx * s.cfg.seg > 32)
    s.cfg.tx >>= 1;
  /* A large grid (6 or more blocks per SM) at chunk 64 takes 8 rows per
   * thread, not 4: the tuner chose 16 x 8 over the heuristic's 16 x 16 for
   * every such row of the v20 and v21 runs at T=2048-8192 (0.3-2% faster;
   * at T=32768 the two were within 0.1%), and through the varlen table the
   * probe read 16 x 8 0.2 us (8 sequences) to 2 us (128 sequences) ahead,
   * since a segment wholly past a chunk's end loads nothing
   * (docs/perf-notes.md, seventh session). With 7 candidates in its budget
   * the tuner did not always reach it. Measured with this rule in two full
   * runs (eighth session): every row of 16M elements or more but two ran
   * 16 x 8, the table rows no longer depend on the tuner's pick, and the
   * dense T=32768 rows moved by at most 0.2%. */
  if (spec->chunk == 64 && s.cfg.seg == 16 &&
      kda__spec_grid(&s, num_chunks) >= 6 * (uint64_t)sm_count) {
    kda__spec t = s;
    t.cfg.seg = 8;
    if (kda__config_check(&t) == KDA_OK) s.cfg = t.cfg;
  }
  return s.cfg;
}

size_t kda__config_space(const kda__spec *spec, kda__config *out, size_t cap) {
  size_t n = 0;
  kda__spec s = *spec;
  if (spec->kernel == KDA__KERNEL_CHUNK_INDICES) {
    for (int tx = 32; tx <= 1024; tx <<= 1) {
      if (n < cap) out[n] = (kda__config){1, tx, 1};
      ++n;
    }
    return n;
  }
  const int hk = spec->heads * spec->head_dim;
  const int width = pow2_ceil(hk);
  for (int vec = 8; vec >= 1; vec >>= 1) {
    for (int tx = 1; tx <= 256; tx <<= 1) {
      /* A block wider than the row leaves threads idle. */
      if (tx * vec > width && tx > 1) continue;
      for (int seg = 1; seg <= spec->chunk; seg <<= 1) {
        s.cfg = (kda__config){vec, tx, seg};
        if (tx * seg < 32 && !(tx * vec >= width && seg == spec->chunk)) continue;
        kda_status st = kda__config_check(&s);
        if (st != KDA_OK) continue;
        if (n < cap) out[n] = s.cfg;
        ++n;
      }
    }
  }
  return n;
}

int kda__grid_starves_sms(uint64_t grid, int sm_count) {
  return sm_count > 0 && grid * 4 < (uint64_t)sm_count;
}

uint64_t kda__spec_grid(const kda__spec *spec, int64_t num_chunks) {
  if (spec->kernel == KDA__KERNEL_CHUNK_INDICES) return 1;
  const int64_t hk = (int64_t)spec->heads * spec->head_dim;
  const int64_t per_block = (int64_t)spec->cfg.tx * spec->cfg.vec;
  const int64_t ncb = (hk + per_block - 1) / per_block;
  return (uint64_t)(num_chunks * ncb);
}
