/* A tuning run's candidates compiled as several NVRTC programs on parallel
 * threads. NVRTC's time is almost all per instantiation (on a 2-core CI box
 * one program of 1, 8 and 32 gate_cumsum instantiations took 129, 864 and
 * 2884 ms), so k programs of n/k instantiations each take about 1/k of the
 * wall time where k cores are free, and a run of the same budget can try
 * about k times more candidates. */
#ifndef KDA_TUNER_TUNER_COMPILE_H
#define KDA_TUNER_TUNER_COMPILE_H

#include <stddef.h>

#include "kda/kda.h"
#include "kernel_source.h"
#include "nvrtc_compile.h"

#define KDA__COMPILE_THREADS_AUTO_MAX 8
#define KDA__COMPILE_THREADS_MAX 64

typedef struct kda__tune_programs {
  size_t count;       /* programs */
  size_t *first;      /* count + 1: program p compiles names [first[p], first[p+1]) */
  kda__compiled *out; /* per program */
  double wall_ms;     /* of the whole compile, threads included */
  double cpu_ms;      /* sum of the programs' NVRTC times */
} kda__tune_programs;

/* Threads for a context: requested >= 1 (at most KDA__COMPILE_THREADS_MAX),
 * or 0 for the online CPUs, at most KDA__COMPILE_THREADS_AUTO_MAX. */
int kda__tune_compile_threads(int requested);
/* How many of `threads` programs really run at once: at most the online
 * CPUs (the budget model's divisor; more programs than CPUs only queue). */
int kda__tune_compile_parallelism(int threads);

/* Splits names[0, n) into min(threads, n) contiguous programs whose sizes
 * differ by at most one, each compiling main_name from set for sm_<arch>,
 * and compiles them at once: program 0 on the calling thread, the others
 * on threads of their own (on the calling thread, after, where a thread
 * cannot be started). On failure every program is freed and the first
 * failing program's status is returned with its message (NVRTC log
 * included) as the calling thread's error. */
kda_status kda__tune_programs_compile(const kda__source_set *set, const char *main_name, int arch,
                                      const char *const *names, size_t n, int threads,
                                      kda__tune_programs *p);

/* The program compiling name i. */
size_t kda__tune_programs_of(const kda__tune_programs *p, size_t i);
/* The mangled name of name i, for cuModuleGetFunction in its program. */
const char *kda__tune_programs_lowered(const kda__tune_programs *p, size_t i);
void kda__tune_programs_free(kda__tune_programs *p);

#endif
