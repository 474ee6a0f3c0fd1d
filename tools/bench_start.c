/* kda-bench's cold and warm start (bench_start.h). */
#include "bench_start.h"

#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_common.h"
#include "cuda_api.h"
#include "kda/kda.h"

extern char **environ;

/* --child-start: what a fresh server process pays from context creation
 * (on a CUDA context it already has) to its first finished result. */
int child_start(void) {
  const int H = 32, K = 128;
  const int64_t T = 8192;
  const size_t n = (size_t)T * H * K;
  void *g = cuda_alloc(&cu, n * 2), *out = cuda_alloc(&cu, n * 4), *al = cuda_alloc(&cu, 128);
  cu.MemsetD32((CUdeviceptr)(uintptr_t)g, 0x3f803f80u, n / 2);
  cu.MemsetD32((CUdeviceptr)(uintptr_t)al, 0, 32);
  cu.CtxSynchronize();
  double t0 = now_ms();
  kda_context *ctx = NULL;
  kda_options o = kda_options_default();
  o.device = -1;
  o.db_path = getenv("KDA_BENCH_DB");
  kda_ok(kda_context_create(&o, &ctx), "kda_context_create");
  double t_ctx = now_ms() - t0;
  kda_gate_args a = softplus_args(g, out, al, T, H, K);
  kda_ok(kda_gate_chunk_cumsum(ctx, &a, NULL), "first call");
  cu.CtxSynchronize();
  double total = now_ms() - t0;
  kda_stats st = {.struct_size = sizeof st};
  kda_context_get_stats(ctx, &st);
  printf("{\"total_ms\": %.3f, \"context_ms\": %.3f, \"nvrtc_compiles\": %llu, \"compile_ms\": %.3f, "
         "\"tuning_runs\": %llu, \"tune_ms\": %.3f, \"db_cubin_hits\": %llu}\n",
         total, t_ctx, (unsigned long long)st.nvrtc_compiles, st.compile_ms_total,
         (unsigned long long)st.tuning_runs, st.tune_ms_total, (unsigned long long)st.db_cubin_hits);
  kda_context_destroy(ctx);
  return 0;
}

int run_child(char *line, size_t size) {
  char *argv[] = {"kda-bench", "--child-start", NULL};
  int fds[2];
  if (pipe(fds) != 0) return -1;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
  posix_spawn_file_actions_addclose(&fa, fds[0]);
  pid_t pid;
  char self[4096];
  ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
  if (len <= 0) return -1;
  self[len] = 0;
  int rc = posix_spawn(&pid, self, &fa, NULL, argv, environ);
  close(fds[1]);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) return -1;
  FILE *f = fdopen(fds[0], "r");
  line[0] = 0;
  if (!fgets(line, (int)size, f)) line[0] = 0;
  fclose(f);
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}
