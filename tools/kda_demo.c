/* kda-demo: the main job in one program. On a GPU machine it runs a packed
 * varlen batch through the layer entry point (device chunk table, fused
 * gate + cumsum) and checks the result against a float64 CPU computation.
 * Without a GPU it says so and still compiles every kernel for sm_90 with
 * NVRTC, so the run proves the toolchain works. Uses only the public API,
 * plus libcuda (loaded at run time, tools/cuda_api.h) for device memory. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cuda_api.h"
#include "kda/kda.h"

static cuda_api cu;
static int have_cuda;

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int compile_only(void) {
  const kda_kernel kernels[] = {KDA_KERNEL_GATE_CHUNK_CUMSUM, KDA_KERNEL_CHUNK_LOCAL_CUMSUM,
                                KDA_KERNEL_GATE};
  const char *names[] = {"gate_chunk_cumsum", "chunk_local_cumsum", "gate"};
  int failed = 0;
  for (int varlen = 0; varlen < 2; ++varlen)
    for (int k = 0; k < 3; ++k) {
      if (varlen && kernels[k] == KDA_KERNEL_GATE) continue;
      kda_gate_args a = kda_gate_args_default();
      a.g_dtype = KDA_DTYPE_BF16;
      a.batch = varlen ? 1 : 4;
      a.seq_len = 8192;
      a.num_heads = 32;
      a.head_dim = 128;
      a.gate = kernels[k] == KDA_KERNEL_CHUNK_LOCAL_CUMSUM ? KDA_GATE_NONE : KDA_GATE_SOFTPLUS;
      if (varlen) {
        a.cu_seqlens_dtype = KDA_DTYPE_I32;
        a.num_seqs = 8;
        a.num_chunks = kda_chunk_indices_capacity(a.seq_len, a.num_seqs, a.chunk_size);
      }
      double ms = 0;
      kda_status st = kda_compile_offline(kernels[k], &a, 90, &ms);
      printf("  sm_90 %-20s %-6s H=32 K=128 bf16->f32: %s (%.0f ms)\n", names[k],
             varlen ? "varlen" : "dense", kda_status_name(st), ms);
      if (st != KDA_OK) {
        printf("%s\n", kda_last_error());
        failed = 1;
      }
    }
  double ms = 0;
  kda_gate_args a = kda_gate_args_default();
  kda_status st = kda_compile_offline(KDA_KERNEL_CHUNK_INDICES, &a, 90, &ms);
  printf("  sm_90 %-20s %-6s: %s (%.0f ms)\n", "chunk_indices", "i32", kda_status_name(st), ms);
  return failed || st != KDA_OK;
}

static void *dev_upload(const void *src, size_t n) {
  return src ? cuda_upload(&cu, src, n) : cuda_alloc(&cu, n);
}

static uint16_t to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  u += 0x7fff + ((u >> 16) & 1);
  return (uint16_t)(u >> 16);
}

static double from_bf16(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

static int run_on_gpu(kda_context *ctx) {
  enum { N = 8, H = 32, K = 128, BT = 64 };
  const int32_t lens[N] = {1, 17, 63, 64, 65, 1000, 2048, 4095};
  int32_t cu_h[N + 1] = {0};
  for (int i = 0; i < N; ++i) cu_h[i + 1] = cu_h[i] + lens[i];
  const int64_t T = cu_h[N];
  const size_t n = (size_t)T * H * K;
  uint16_t *g = malloc(n * 2);
  float *out = malloc(n * 4), A_log[H], *bias = malloc(sizeof(float) * H * K);
  srand(1);
  for (size_t i = 0; i < n; ++i) g[i] = to_bf16((float)(rand() / (double)RAND_MAX * 6 - 3));
  for (int h = 0; h < H; ++h) A_log[h] = (float)log(1 + 15.0 * rand() / RAND_MAX);
  for (int i = 0; i < H * K; ++i) bias[i] = (float)(rand() / (double)RAND_MAX * 2 - 1);

  size_t ws_bytes = kda_layer_workspace_size(T, N, BT);
  void *d_g = dev_upload(g, n * 2), *d_out = dev_upload(NULL, n * 4);
  void *d_a = dev_upload(A_log, sizeof A_log), *d_b = dev_upload(bias, sizeof(float) * H * K);
  void *d_cu = dev_upload(cu_h, sizeof cu_h), *d_ws = dev_upload(NULL, ws_bytes);
  kda_gate_args a = kda_gate_args_default();
  a.g = d_g;
  a.g_dtype = KDA_DTYPE_BF16;
  a.out = d_out;
  a.batch = 1;
  a.seq_len = T;
  a.num_heads = H;
  a.head_dim = K;
  a.gate = KDA_GATE_SOFTPLUS;
  a.A_log = d_a;
  a.dt_bias = d_b;
  a.cu_seqlens = d_cu;
  a.cu_seqlens_dtype = KDA_DTYPE_I32;
  a.num_seqs = N;
  /* As flash-linear-attention's chunk_kda_fwd calls it (scale=RCP_LN2, for
   * the exp2 of the attention kernels), and as the kimi-linear preset
   * prewarms it. */
  a.scale = (float)(1.0 / log(2.0));
  a.has_scale = 1;
  double t0 = now_ms();
  kda_status st = kda_layer_gate_fwd(ctx, &a, d_ws, ws_bytes, NULL);
  cu.CtxSynchronize();
  double cold = now_ms() - t0;
  t0 = now_ms();
  for (int i = 0; i < 100 && st == KDA_OK; ++i) st = kda_layer_gate_fwd(ctx, &a, d_ws, ws_bytes, NULL);
  cu.CtxSynchronize();
  double warm = (now_ms() - t0) / 100;
  if (st != KDA_OK) {
    fprintf(stderr, "kda_layer_gate_fwd: %s\n", kda_last_error());
    return 1;
  }
  cuda_download(&cu, out, d_out, n * 4);
  double worst = 0;
  for (int s = 0; s < N; ++s)
    for (int hk = 0; hk < H * K; ++hk) {
      double acc = 0;
      for (int t = cu_h[s]; t < cu_h[s + 1]; ++t) {
        if ((t - cu_h[s]) % BT == 0) acc = 0;
        double z = from_bf16(g[(size_t)t * H * K + hk]) + bias[hk];
        double sp = z > 20 ? z : log1p(exp(z));
        acc += -exp((double)A_log[hk / K]) * sp;
        const double ref = (double)a.scale * acc;
        double err = fabs(out[(size_t)t * H * K + hk] - ref) / (1 + fabs(ref));
        if (!(err <= worst)) worst = err;
      }
    }
  kda_stats stats = {.struct_size = sizeof stats};
  kda_context_get_stats(ctx, &stats);
  printf("varlen layer: %d sequences, %lld tokens, H=%d K=%d, bf16 -> f32, cumsum scaled by 1/ln 2\n",
         N, (long long)T, H, K);
  printf("  first call (compile + run): %.1f ms, then %.1f us per call (host-timed)\n", cold,
         warm * 1e3);
  printf("  NVRTC compiles: %llu (%.0f ms), stored cubins loaded: %llu (%llu compiled by another "
         "NVRTC build), launches: %llu\n",
         (unsigned long long)stats.nvrtc_compiles, stats.compile_ms_total,
         (unsigned long long)stats.db_cubin_hits,
         (unsigned long long)stats.db_cubin_other_nvrtc_hits, (unsigned long long)stats.launches);
  printf("  max relative error vs float64: %.2e (budget 2e-5): %s\n", worst,
         worst <= 2e-5 ? "OK" : "FAILED");
  return worst <= 2e-5 ? 0 : 1;
}

int main(int argc, char **argv) {
  const char *db = NULL;
  for (int i = 1; i < argc; ++i) {
    if (!strcmp(argv[i], "--db") && i + 1 < argc && argv[i + 1][0] != '\0') {
      db = argv[++i];
    } else {
      fprintf(stderr, "usage: kda-demo [--db PATH]\n"
                      "  --db PATH  the tuning database (default: the library's, e.g. "
                      "~/.cache/kda/tune.db)\n");
      return strcmp(argv[i], "--help") == 0 ? 0 : 2;
    }
  }
  printf("libkda %s (header %d.%d.%d)\n", kda_version(), KDA_VERSION_MAJOR, KDA_VERSION_MINOR,
         KDA_VERSION_PATCH);
  if (kda_version_number() != KDA_VERSION_NUMBER) {
    fprintf(stderr, "library %s does not match this header\n", kda_version());
    return 1;
  }
  kda_context *ctx = NULL;
  kda_options opts = kda_options_default();
  opts.db_path = db; /* NULL: the library's default path */
  char why[512];
  /* Like a server that owns its CUDA context: make device 0's primary
   * context current, then bind the libkda context to it (device = -1). */
  have_cuda = cuda_api_load(&cu, 0, why, sizeof why) == 0;
  if (have_cuda) opts.device = -1;
  kda_status st = kda_context_create(&opts, &ctx);
  if (st == KDA_ERROR_NO_DRIVER || st == KDA_ERROR_NO_DEVICE) {
    printf("NO GPU: %s\n", kda_last_error());
    printf("Running no kernel. Compiling the kernels with NVRTC for sm_90 instead:\n");
    return compile_only();
  }
  if (st != KDA_OK) {
    fprintf(stderr, "kda_context_create: %s\n", kda_last_error());
    return 1;
  }
  kda_device_info info = {.struct_size = sizeof info};
  kda_context_get_device_info(ctx, &info);
  printf("GPU: %s (sm_%d%d, %d SMs)\n", info.name, info.cc_major, info.cc_minor, info.sm_count);
  int rc = run_on_gpu(ctx);
  kda_context_destroy(ctx);
  return rc;
}
