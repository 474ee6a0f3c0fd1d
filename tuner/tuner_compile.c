/* A tuning run's candidates as several NVRTC programs compiled on parallel
 * threads (tuner_compile.h says why). NVRTC is thread-safe for distinct
 * programs; the error message is per thread, so each worker keeps a copy
 * of its own for the calling thread to raise. */
#include "tuner_compile.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "error.h"

static int online_cpus(void) {
  const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  return cpus < 1 ? 1 : cpus > KDA__COMPILE_THREADS_MAX ? KDA__COMPILE_THREADS_MAX : (int)cpus;
}

int kda__tune_compile_threads(int requested) {
  if (requested >= 1) return requested < KDA__COMPILE_THREADS_MAX ? requested : KDA__COMPILE_THREADS_MAX;
  const int cpus = online_cpus();
  return cpus < KDA__COMPILE_THREADS_AUTO_MAX ? cpus : KDA__COMPILE_THREADS_AUTO_MAX;
}

static kda__compile_pool g_pool; /* capacity 0: the online CPUs */

static kda__compile_pool *pool_or_process(kda__compile_pool *pool) {
  return pool != NULL ? pool : &g_pool;
}

int kda__compile_pool_capacity(kda__compile_pool *pool) {
  pool = pool_or_process(pool);
  return pool->capacity > 0 ? pool->capacity : online_cpus();
}

int kda__compile_pool_in_use(kda__compile_pool *pool) {
  return atomic_load(&pool_or_process(pool)->in_use);
}

kda__compile_lease kda__compile_pool_reserve(kda__compile_pool *pool, int want) {
  kda__compile_lease l = {pool_or_process(pool), 0, 1};
  if (want < 1) want = 1;
  const int cap = kda__compile_pool_capacity(l.pool);
  int used = atomic_load(&l.pool->in_use);
  for (;;) {
    const int avail = cap - used;
    l.taken = avail <= 0 ? 0 : avail < want ? avail : want;
    /* On failure used is reloaded: another run took or gave back threads. */
    if (l.taken == 0 || atomic_compare_exchange_weak(&l.pool->in_use, &used, used + l.taken))
      break;
  }
  l.threads = l.taken > 0 ? l.taken : 1;
  return l;
}

void kda__compile_pool_release(kda__compile_lease *lease) {
  if (lease == NULL || lease->pool == NULL) return;
  if (lease->taken > 0) atomic_fetch_sub(&lease->pool->in_use, lease->taken);
  lease->taken = 0;
  lease->pool = NULL;
}

typedef struct worker {
  kda__compile_request req;
  kda__compiled *out;
  kda_status st;
  char *message; /* the worker thread's error, without its "NAME: " prefix */
} worker;

static void compile_one(worker *w) {
  w->st = kda__nvrtc_compile(&w->req, w->out);
  if (w->st != KDA_OK) {
    const char *m = kda__error_message();
    const char *name = kda_status_name(w->st);
    const size_t len = strlen(name);
    if (strncmp(m, name, len) == 0 && strncmp(m + len, ": ", 2) == 0) m += len + 2;
    w->message = strdup(m);
  }
}

static void *compile_thread(void *arg) {
  compile_one(arg);
  return NULL;
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

kda_status kda__tune_programs_compile(const kda__source_set *set, const char *main_name, int arch,
                                      const char *const *names, size_t n, int threads,
                                      kda__tune_programs *p) {
  memset(p, 0, sizeof *p);
  KDA__REQUIRE(n > 0 && names != NULL, KDA_ERROR_INTERNAL, "no candidates to compile");
  const size_t count = threads < 1 ? 1 : (size_t)threads < n ? (size_t)threads : n;
  p->first = calloc(count + 1, sizeof *p->first);
  p->out = calloc(count, sizeof *p->out);
  worker *w = calloc(count, sizeof *w);
  pthread_t *th = calloc(count, sizeof *th);
  char *started = calloc(count, 1);
  if (p->first == NULL || p->out == NULL || w == NULL || th == NULL || started == NULL) {
    free(w);
    free(th);
    free(started);
    kda__tune_programs_free(p);
    return kda__fail(KDA_ERROR_OUT_OF_MEMORY, "out of memory splitting %zu candidates", n);
  }
  p->count = count;
  for (size_t q = 0; q <= count; ++q) p->first[q] = q * n / count;
  for (size_t q = 0; q < count; ++q) {
    w[q].req = (kda__compile_request){set, main_name, arch, names + p->first[q],
                                      p->first[q + 1] - p->first[q]};
    w[q].out = &p->out[q];
  }
  const double t0 = now_ms();
  for (size_t q = 1; q < count; ++q)
    started[q] = pthread_create(&th[q], NULL, compile_thread, &w[q]) == 0;
  compile_one(&w[0]);
  for (size_t q = 1; q < count; ++q) {
    if (started[q]) pthread_join(th[q], NULL);
    else compile_one(&w[q]); /* no thread: here, after the others started */
  }
  p->wall_ms = now_ms() - t0;
  kda_status st = KDA_OK;
  for (size_t q = 0; q < count; ++q) {
    p->cpu_ms += p->out[q].compile_ms;
    if (st == KDA_OK && w[q].st != KDA_OK) {
      st = kda__fail(w[q].st, "%s", w[q].message ? w[q].message : "(no message)");
      if (count > 1) {
        char where[96];
        snprintf(where, sizeof where, " [program %zu of %zu, candidates %zu-%zu]", q + 1, count,
                 p->first[q], p->first[q + 1] - 1);
        kda__append_error(where);
      }
    }
    free(w[q].message);
  }
  free(w);
  free(th);
  free(started);
  if (st != KDA_OK) {
    const double wall = p->wall_ms, cpu = p->cpu_ms;
    kda__tune_programs_free(p);
    p->wall_ms = wall; /* the time spent is still worth reporting */
    p->cpu_ms = cpu;
  }
  return st;
}

size_t kda__tune_programs_of(const kda__tune_programs *p, size_t i) {
  size_t q = 0;
  while (q + 1 < p->count && i >= p->first[q + 1]) ++q;
  return q;
}

const char *kda__tune_programs_lowered(const kda__tune_programs *p, size_t i) {
  const size_t q = kda__tune_programs_of(p, i);
  const size_t k = i - p->first[q];
  return k < p->out[q].num_names ? p->out[q].lowered_names[k] : NULL;
}

void kda__tune_programs_free(kda__tune_programs *p) {
  if (p == NULL) return;
  for (size_t q = 0; p->out != NULL && q < p->count; ++q) kda__compiled_free(&p->out[q]);
  free(p->out);
  free(p->first);
  memset(p, 0, sizeof *p);
}
