/* A tuning run's candidates compiled as several NVRTC programs on parallel
 * threads. NVRTC's time is almost all per instantiation (on a 2-core CI box
 * one program of 1, 8 and 32 gate_cumsum instantiations took 129, 864 and
 * 2884 ms), so splitting a run's candidates shortens its wall time, but by
 * far less than the number of programs: on the 16-core H100 machine 8
 * programs of ~4 took ~1.7 s where one alone took ~0.5 s (a speedup of ~2;
 * tuner.h's model learns the real one). Concurrent tuning runs share one
 * process-wide pool of compile threads (the online CPUs), so that 8 runs
 * meeting 8 cold specializations at once do not start 64 NVRTC threads. */
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

/* Compile threads shared by the tuning runs of a process. */
typedef struct kda__compile_pool {
  int capacity;       /* 0: the online CPUs, read at each reservation */
  _Atomic int in_use; /* threads handed out and not yet released */
} kda__compile_pool;

/* What one run holds: it compiles `threads` programs at once, `taken` of
 * them from pool. taken is 0 when the pool was empty: the run still
 * compiles one program, on its own thread, which it would occupy anyway. */
typedef struct kda__compile_lease {
  kda__compile_pool *pool;
  int taken;
  int threads;
} kda__compile_lease;

/* Reserves min(want, max(1, free)) threads from pool (NULL: the process's),
 * never taking more than the pool has free. Does not block. */
kda__compile_lease kda__compile_pool_reserve(kda__compile_pool *pool, int want);
/* Gives the lease's threads back; a second release does nothing. */
void kda__compile_pool_release(kda__compile_lease *lease);
/* Threads handed out now (NULL: the process's pool); for logs and tests. */
int kda__compile_pool_in_use(kda__compile_pool *pool);
/* The pool's size now (NULL: the process's pool). */
int kda__compile_pool_capacity(kda__compile_pool *pool);

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
