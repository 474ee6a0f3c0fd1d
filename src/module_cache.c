/* Single-flight cache of loaded kernels. One mutex guards every change to
 * the table; a build (NVRTC compile + module load, tens to hundreds of
 * milliseconds) always runs with the mutex released, so other
 * specializations proceed while it does. Callers of the spec being built
 * wait on that entry's condition variable. Entries are never removed before
 * destroy, so a pointer to one stays valid across unlock/relock.
 *
 * A warm call takes no lock: READY is final (an entry goes BUILDING ->
 * READY or FAILED, FAILED -> BUILDING, never out of READY), an entry's spec,
 * hash and next are written before it is published at its bucket's head
 * (release), and its function and config before its state becomes READY
 * (release). A reader that finds a READY entry (acquire) may use those
 * fields without the mutex; anything else takes the locked path. This keeps
 * the threads of a server that launch on several streams from queueing on
 * one mutex for every call. */
#include "module_cache.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

#define KDA__CACHE_BUCKETS 1024 /* power of two: the index is a mask */

typedef enum kda__entry_state {
  KDA__ENTRY_BUILDING = 0,
  KDA__ENTRY_READY = 1,
  KDA__ENTRY_FAILED = 2
} kda__entry_state;

typedef struct kda__cache_entry {
  struct kda__cache_entry *next;
  kda__spec spec;
  uint64_t hash;
  _Atomic int state; /* kda__entry_state */
  /* Incremented when a build finishes, so a waiter can tell "the build I
   * waited for ended" from "someone started a retry". */
  uint64_t builds_done;
  int waiters; /* callers waiting for the build in flight (for tests) */
  CUmodule module;
  CUfunction function;
  kda__config config; /* chosen by the build (a tuned slot's winner) */
  kda_status fail_status;
  char *fail_message; /* last failed build's message, NULL if none or no memory */
  pthread_cond_t done;
} kda__cache_entry;

struct kda__module_cache {
  pthread_mutex_t lock;
  size_t ready;
  _Atomic(kda__cache_entry *) buckets[KDA__CACHE_BUCKETS];
};

kda_status kda__cache_create(kda__module_cache **out) {
  if (out == NULL) return kda__fail(KDA_ERROR_NULL_POINTER, "kda__cache_create: out is NULL");
  *out = NULL;
  kda__module_cache *c = calloc(1, sizeof *c);
  if (c == NULL) return kda__fail(KDA_ERROR_OUT_OF_MEMORY, "out of memory creating the module cache");
  int rc = pthread_mutex_init(&c->lock, NULL);
  if (rc != 0) {
    free(c);
    return kda__fail(KDA_ERROR_INTERNAL, "pthread_mutex_init failed: error %d", rc);
  }
  *out = c;
  return KDA_OK;
}

void kda__cache_destroy(kda__module_cache *cache, kda__unload_fn unload, void *user) {
  if (cache == NULL) return;
  for (size_t b = 0; b < KDA__CACHE_BUCKETS; ++b) {
    kda__cache_entry *e = atomic_load_explicit(&cache->buckets[b], memory_order_relaxed);
    while (e != NULL) {
      kda__cache_entry *next = e->next;
      if (atomic_load_explicit(&e->state, memory_order_relaxed) == KDA__ENTRY_READY && unload != NULL)
        unload(user, e->module);
      free(e->fail_message);
      pthread_cond_destroy(&e->done);
      free(e);
      e = next;
    }
  }
  pthread_mutex_destroy(&cache->lock);
  free(cache);
}

/* With or without the lock: the chain from a bucket's head only grows at
 * the head, and an entry's spec, hash and next never change once it is
 * there. */
static kda__cache_entry *find(kda__module_cache *cache, const kda__spec *spec, uint64_t hash) {
  for (kda__cache_entry *e = atomic_load_explicit(&cache->buckets[hash & (KDA__CACHE_BUCKETS - 1)],
                                                  memory_order_acquire);
       e; e = e->next)
    if (e->hash == hash && memcmp(&e->spec, spec, sizeof *spec) == 0) return e;
  return NULL;
}

/* The entry of spec if it is READY, found without the lock. */
static kda__cache_entry *find_ready(kda__module_cache *cache, const kda__spec *spec,
                                    uint64_t hash) {
  kda__cache_entry *e = find(cache, spec, hash);
  if (e != NULL && atomic_load_explicit(&e->state, memory_order_acquire) == KDA__ENTRY_READY)
    return e;
  return NULL;
}

/* A READY entry's outputs (either may be NULL). */
static void take(const kda__cache_entry *e, CUfunction *function, kda__config *config) {
  if (function != NULL) *function = e->function;
  if (config != NULL) *config = e->config;
}

/* Caller holds the lock. A new entry starts BUILDING: its creator builds it. */
static kda__cache_entry *insert(kda__module_cache *cache, const kda__spec *spec, uint64_t hash) {
  kda__cache_entry *e = calloc(1, sizeof *e);
  if (e == NULL) return NULL;
  if (pthread_cond_init(&e->done, NULL) != 0) {
    free(e);
    return NULL;
  }
  e->spec = *spec;
  e->hash = hash;
  atomic_init(&e->state, KDA__ENTRY_BUILDING);
  _Atomic(kda__cache_entry *) *head = &cache->buckets[hash & (KDA__CACHE_BUCKETS - 1)];
  e->next = atomic_load_explicit(head, memory_order_relaxed);
  atomic_store_explicit(head, e, memory_order_release);
  return e;
}

/* Either kind of build: exactly one of plain and with_cfg is set. */
typedef struct kda__builder {
  kda__build_fn plain;
  kda__build_cfg_fn with_cfg;
  void *user;
} kda__builder;

/* Runs the build unlocked for an entry this thread marked BUILDING, then
 * publishes the outcome and wakes the waiters. Entered and left with the
 * lock held. */
static kda_status build_entry(kda__module_cache *cache, kda__cache_entry *e,
                              const kda__builder *b, CUfunction *function,
                              kda__config *config) {
  pthread_mutex_unlock(&cache->lock);
  CUmodule module = NULL;
  CUfunction fn = NULL;
  kda__config cfg = e->spec.cfg;
  kda_status s = b->with_cfg ? b->with_cfg(b->user, &e->spec, &module, &fn, &cfg)
                             : b->plain(b->user, &e->spec, &module, &fn);
  /* Copied before relocking so the allocation is outside the lock. */
  char *message = s == KDA_OK ? NULL : strdup(kda__error_message());
  pthread_mutex_lock(&cache->lock);

  e->builds_done++;
  if (s == KDA_OK) {
    e->module = module;
    e->function = fn;
    e->config = cfg;
    atomic_store_explicit(&e->state, KDA__ENTRY_READY, memory_order_release);
    cache->ready++;
    *function = fn;
    if (config != NULL) *config = cfg;
  } else {
    free(e->fail_message);
    e->fail_message = message;
    e->fail_status = s;
    atomic_store_explicit(&e->state, KDA__ENTRY_FAILED, memory_order_relaxed);
  }
  pthread_cond_broadcast(&e->done);
  return s;
}

/* The stored message starts with "KDA_ERROR_X: " (kda__fail's prefix); the
 * waiter's own kda__fail adds it again, so drop the inner one. */
static const char *strip_status(const char *message, kda_status s) {
  if (message == NULL) return "(message lost: out of memory)";
  const char *name = kda_status_name(s);
  size_t n = strlen(name);
  if (strncmp(message, name, n) == 0 && strncmp(message + n, ": ", 2) == 0) return message + n + 2;
  return message;
}

static kda_status cache_get(kda__module_cache *cache, const kda__spec *spec,
                            const kda__builder *b, CUfunction *function, kda__config *config,
                            int *hit) {
  if (hit != NULL) *hit = 0;
  if (cache == NULL || spec == NULL || (b->plain == NULL && b->with_cfg == NULL) ||
      function == NULL)
    return kda__fail(KDA_ERROR_NULL_POINTER, "kda__cache_get: a required argument is NULL");
  *function = NULL;
  const uint64_t hash = kda__spec_hash(spec);
  kda__cache_entry *e = find_ready(cache, spec, hash);
  if (e != NULL) {
    take(e, function, config);
    if (hit != NULL) *hit = 1;
    return KDA_OK;
  }

  pthread_mutex_lock(&cache->lock);
  e = find(cache, spec, hash);
  if (e != NULL && atomic_load_explicit(&e->state, memory_order_relaxed) == KDA__ENTRY_READY) {
    take(e, function, config);
    pthread_mutex_unlock(&cache->lock);
    if (hit != NULL) *hit = 1;
    return KDA_OK;
  }

  kda_status s;
  if (e == NULL) {
    e = insert(cache, spec, hash);
    if (e == NULL) {
      pthread_mutex_unlock(&cache->lock);
      return kda__fail(KDA_ERROR_OUT_OF_MEMORY, "out of memory adding a module cache entry");
    }
    s = build_entry(cache, e, b, function, config);
  } else if (atomic_load_explicit(&e->state, memory_order_relaxed) == KDA__ENTRY_FAILED) {
    /* The previous attempt failed; this caller retries it. */
    atomic_store_explicit(&e->state, KDA__ENTRY_BUILDING, memory_order_relaxed);
    s = build_entry(cache, e, b, function, config);
  } else {
    /* BUILDING by another thread: wait for that build, and only that one. */
    const uint64_t seen = e->builds_done;
    ++e->waiters;
    while (e->builds_done == seen) pthread_cond_wait(&e->done, &cache->lock);
    --e->waiters;
    if (atomic_load_explicit(&e->state, memory_order_relaxed) == KDA__ENTRY_READY) {
      take(e, function, config);
      s = KDA_OK;
    } else {
      s = kda__fail(e->fail_status, "concurrent build of this specialization failed: %s",
                    strip_status(e->fail_message, e->fail_status));
    }
  }
  pthread_mutex_unlock(&cache->lock);
  return s;
}

kda_status kda__cache_get(kda__module_cache *cache, const kda__spec *spec, kda__build_fn build,
                          void *user, CUfunction *function, int *hit) {
  kda__builder b = {build, NULL, user};
  return cache_get(cache, spec, &b, function, NULL, hit);
}

kda_status kda__cache_get_cfg(kda__module_cache *cache, const kda__spec *spec,
                              kda__build_cfg_fn build, void *user, CUfunction *function,
                              kda__config *config, int *hit) {
  kda__builder b = {NULL, build, user};
  return cache_get(cache, spec, &b, function, config, hit);
}

int kda__cache_peek(kda__module_cache *cache, const kda__spec *spec, CUfunction *function) {
  return kda__cache_peek_cfg(cache, spec, function, NULL);
}

int kda__cache_peek_cfg(kda__module_cache *cache, const kda__spec *spec, CUfunction *function,
                        kda__config *config) {
  if (cache == NULL || spec == NULL) return 0;
  const kda__cache_entry *e = find_ready(cache, spec, kda__spec_hash(spec));
  if (e == NULL) return 0;
  take(e, function, config);
  return 1;
}

int kda__cache_waiters(kda__module_cache *cache, const kda__spec *spec) {
  if (cache == NULL || spec == NULL) return 0;
  pthread_mutex_lock(&cache->lock);
  const kda__cache_entry *e = find(cache, spec, kda__spec_hash(spec));
  const int n = e != NULL ? e->waiters : 0;
  pthread_mutex_unlock(&cache->lock);
  return n;
}

size_t kda__cache_size(kda__module_cache *cache) {
  if (cache == NULL) return 0;
  pthread_mutex_lock(&cache->lock);
  size_t n = cache->ready;
  pthread_mutex_unlock(&cache->lock);
  return n;
}
