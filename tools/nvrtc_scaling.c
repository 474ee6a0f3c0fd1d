/* kda-nvrtc-scaling: how NVRTC's wall time scales when a tuning run splits
 * its candidates over several programs compiled at once. Compiles the real
 * gate_cumsum template (bf16 -> f32, softplus gate with dt_bias, H=32 K=128
 * chunk 64) for the configs a tuning run would try first (the heuristic and
 * its nearest neighbours in the tuning space), a fixed total of 16
 * instantiations as 1, 2, 4, 8 and 16 programs, through the tuner's own
 * kda__tune_programs_compile. No GPU: NVRTC only.
 *
 * Unlike the other tools it links the library's internal objects, as the
 * tests do: what it measures is the tuner's compile path, which the public
 * API does not expose.
 *
 *   kda-nvrtc-scaling [--arch 90] [--repeat 1]
 *
 * Prints, per row: programs, instantiations per program, wall ms (median
 * of the repeats), summed NVRTC ms, speedup of the wall time over one
 * program of 16, the wall per instantiation of the largest program after
 * the assumed parse (what the tuner's model learns), and what the model's
 * uncalibrated defaults predict for that compile (tuner.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gate_args.h"
#include "kernel_source.h"
#include "spec.h"
#include "tuner.h"
#include "tuner_compile.h"

enum { TOTAL = 16, REPEAT_MAX = 50 };

static int cmp_double(const void *a, const void *b) {
  const double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* TOTAL name expressions: the heuristic config first, then the configs a
 * tuning run ranks nearest to it (tuner_select.c, kda__tune_prune). */
static int names_make(char **names) {
  kda_gate_args a = kda_gate_args_default();
  a.g = (void *)(uintptr_t)0x100000; /* never dereferenced: only the spec is built */
  a.out = (void *)(uintptr_t)0x10000000;
  a.g_dtype = KDA_DTYPE_BF16;
  a.out_dtype = KDA_DTYPE_F32;
  a.batch = 1;
  a.seq_len = 8192;
  a.num_heads = 32;
  a.head_dim = 128;
  a.chunk_size = 64;
  a.gate = KDA_GATE_SOFTPLUS;
  a.A_log = (const float *)(uintptr_t)0x1000;
  a.dt_bias = (const float *)(uintptr_t)0x2000;
  kda__launch_plan plan;
  if (kda__plan_gate_op(KDA__OP_GATE_CHUNK_CUMSUM, &a, &plan) != KDA_OK) return -1;
  kda__spec slot = plan.spec;
  slot.vec_cap = kda__max_vec(&plan.spec);
  static kda__config space[KDA__TUNE_SPACE_MAX];
  size_t hid = 0, ids[TOTAL];
  const size_t n = kda__tune_space(&slot, plan.spec.cfg, space, KDA__TUNE_SPACE_MAX, &hid);
  /* 132 SMs: an H100 SXM, the machine the tuner's defaults come from. */
  if (kda__tune_prune(&slot, space, n, hid, plan.num_chunks, 132, TOTAL, ids) != TOTAL) return -1;
  for (size_t i = 0; i < TOTAL; ++i) {
    kda__spec s = plan.spec;
    s.cfg = space[ids[i]];
    names[i] = malloc(KDA__NAME_MAX);
    if (names[i] == NULL || kda__spec_name(&s, names[i], KDA__NAME_MAX) <= 0) return -1;
  }
  return 0;
}

typedef struct row {
  double wall_ms, nvrtc_ms;
} row;

/* Median wall time of `repeat` compiles of names[0, count) as `programs`
 * programs (with the NVRTC time of that compile). */
static int measure(const kda__source_set *set, int arch, char **names, size_t count,
                   int programs, int repeat, row *out) {
  row runs[REPEAT_MAX];
  double walls[REPEAT_MAX];
  for (int k = 0; k < repeat; ++k) {
    kda__tune_programs p;
    if (kda__tune_programs_compile(set, "gate_cumsum.cu", arch, (const char *const *)names, count,
                                   programs, &p) != KDA_OK) {
      fprintf(stderr, "kda-nvrtc-scaling: %s\n", kda_last_error());
      return -1;
    }
    runs[k] = (row){p.wall_ms, p.cpu_ms};
    walls[k] = p.wall_ms;
    kda__tune_programs_free(&p);
  }
  qsort(walls, (size_t)repeat, sizeof *walls, cmp_double);
  for (int k = 0; k < repeat; ++k)
    if (runs[k].wall_ms == walls[repeat / 2]) *out = runs[k];
  return 0;
}

static void print_row(int programs, size_t count, const row *r, double base_wall) {
  const size_t largest = (count + (size_t)programs - 1) / (size_t)programs;
  const kda__compile_model m = kda__compile_model_default();
  const double inst = (r->wall_ms - m.parse_ms) / (double)largest;
  const double model =
      m.parse_ms + kda__compile_model_inst_ms(&m, (size_t)programs) * (double)largest;
  printf("%8d %13zu %8.0f %9.0f %8.2f %10.0f %13.0f\n", programs, largest, r->wall_ms,
         r->nvrtc_ms, base_wall / r->wall_ms, inst, model);
}

static int usage(FILE *f) {
  fprintf(f, "usage: kda-nvrtc-scaling [--arch N] [--repeat N]\n"
             "  --arch N    compile for sm_N (default 90)\n"
             "  --repeat N  compiles per row, the median is shown (default 1, at most %d)\n",
          REPEAT_MAX);
  return f == stdout ? 0 : 2;
}

int main(int argc, char **argv) {
  int arch = 90, repeat = 1;
  for (int i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) return usage(stdout);
    if (i + 1 < argc && strcmp(argv[i], "--arch") == 0) {
      arch = atoi(argv[++i]);
    } else if (i + 1 < argc && strcmp(argv[i], "--repeat") == 0) {
      repeat = atoi(argv[++i]);
    } else {
      return usage(stderr);
    }
  }
  if (arch < 50 || arch > 200 || repeat < 1 || repeat > REPEAT_MAX) return usage(stderr);
  kda__source_set set;
  if (kda__source_set_load(NULL, &set) != KDA_OK) {
    fprintf(stderr, "kda-nvrtc-scaling: %s\n", kda_last_error());
    return 1;
  }
  char *names[TOTAL] = {0};
  if (names_make(names) != 0) {
    fprintf(stderr, "kda-nvrtc-scaling: could not build the gate_cumsum names\n");
    return 1;
  }
  printf("NVRTC %s, sm_%d, %ld online CPUs, gate_cumsum bf16->f32 softplus bias H=32 K=128 "
         "chunk=64, median of %d\n",
         kda__nvrtc_build_version(), arch, sysconf(_SC_NPROCESSORS_ONLN), repeat);
  int rc = 0;
  row first, one, base;
  /* The process's first compile pays for loading NVRTC's builtins: shown
   * apart, so the rows below compare warm compiles. */
  if (measure(&set, arch, names, 1, 1, 1, &first) != 0) rc = 1;
  if (rc == 0)
    printf("first compile of the process (1 instantiation): %.0f ms wall\n\n", first.wall_ms);
  if (rc == 0 && measure(&set, arch, names, TOTAL, 1, repeat, &base) != 0) rc = 1;
  if (rc == 0 && measure(&set, arch, names, 1, 1, repeat, &one) != 0) rc = 1;
  if (rc == 0) {
    printf("programs  inst/program  wall ms  NVRTC ms  speedup  ms/inst(*)  default model\n");
    print_row(1, 1, &one, one.wall_ms);
    print_row(1, TOTAL, &base, base.wall_ms);
  }
  for (int programs = 2; rc == 0 && programs <= TOTAL; programs *= 2) {
    row r;
    if (measure(&set, arch, names, TOTAL, programs, repeat, &r) != 0) rc = 1;
    else print_row(programs, TOTAL, &r, base.wall_ms);
  }
  if (rc == 0)
    printf("(*) (wall - %.0f ms assumed parse) / instantiations of the largest program; speedup: "
           "over 1 program of the same instantiations\n",
           KDA__TUNE_COMPILE_PARSE_MS);
  for (size_t i = 0; i < TOTAL; ++i) free(names[i]);
  kda__source_set_free(&set);
  return rc;
}
