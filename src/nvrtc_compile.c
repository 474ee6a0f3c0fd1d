/* One NVRTC program per call: the template .cu, every .cuh of the set as an
 * in-memory header, and one name expression per requested instantiation.
 * The result is a CUBIN for the exact architecture, so loading it never
 * involves the driver's PTX JIT. */
#include "nvrtc_compile.h"

#include <nvrtc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"

/* No option that loosens math: the kernels are checked against a float64
 * reference at 2e-5 relative error. -default-device lets the templates'
 * helpers omit __device__ noise without changing code generation. */
#define KDA__OPT_STD "-std=c++17"
#define KDA__OPT_ARCH_PREFIX "--gpu-architecture=sm_"
#define KDA__OPT_DEVICE "-default-device"

const char *kda__nvrtc_options_string(void) {
  return KDA__OPT_STD " " KDA__OPT_ARCH_PREFIX "<arch> " KDA__OPT_DEVICE;
}

void kda__nvrtc_version(int *major, int *minor) {
  int ma = 0, mi = 0;
  if (nvrtcVersion(&ma, &mi) != NVRTC_SUCCESS) ma = mi = 0;
  if (major) *major = ma;
  if (minor) *minor = mi;
}

void kda__compiled_free(kda__compiled *c) {
  if (c == NULL) return;
  free(c->cubin);
  if (c->lowered_names)
    for (size_t i = 0; i < c->num_names; ++i) free(c->lowered_names[i]);
  free(c->lowered_names);
  free(c->log);
  memset(c, 0, sizeof *c);
}

static int ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), m = strlen(suffix);
  return n >= m && strcmp(s + n - m, suffix) == 0;
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static kda_status nvrtc_fail(nvrtcResult r, const char *call, const kda__compile_request *req) {
  kda_status s = r == NVRTC_ERROR_OUT_OF_MEMORY ? KDA_ERROR_OUT_OF_MEMORY : KDA_ERROR_COMPILE;
  return kda__fail(s, "%s failed for %s (sm_%d): %s", call, req->source_name, req->arch,
                   nvrtcGetErrorString(r));
}

/* The program log; NULL when empty or unavailable. */
static char *program_log(nvrtcProgram prog) {
  size_t n = 0;
  if (nvrtcGetProgramLogSize(prog, &n) != NVRTC_SUCCESS || n <= 1) return NULL;
  char *log = malloc(n);
  if (log == NULL) return NULL;
  if (nvrtcGetProgramLog(prog, log) != NVRTC_SUCCESS || log[0] == '\0') {
    free(log);
    return NULL;
  }
  log[n - 1] = '\0';
  return log;
}

static void append_names(const kda__compile_request *req) {
  kda__append_error("\ninstantiations:");
  for (size_t i = 0; i < req->num_names; ++i) {
    kda__append_error("\n  ");
    kda__append_error(req->names[i]);
  }
}

static kda_status check_request(const kda__compile_request *req, kda__compiled *out) {
  if (req == NULL || out == NULL)
    return kda__fail(KDA_ERROR_NULL_POINTER, "kda__nvrtc_compile: request or output is NULL");
  if (req->sources == NULL || req->source_name == NULL || (req->num_names > 0 && req->names == NULL))
    return kda__fail(KDA_ERROR_NULL_POINTER, "kda__nvrtc_compile: request has a NULL field");
  if (req->arch <= 0)
    return kda__fail(KDA_ERROR_INVALID_ARGUMENT, "kda__nvrtc_compile: bad architecture %d",
                     req->arch);
  for (size_t i = 0; i < req->num_names; ++i)
    if (req->names[i] == NULL)
      return kda__fail(KDA_ERROR_NULL_POINTER, "kda__nvrtc_compile: name %zu is NULL", i);
  return KDA_OK;
}

/* Creates the program with the set's headers. */
static kda_status create_program(const kda__compile_request *req, const kda__source *main_src,
                                 nvrtcProgram *prog) {
  const kda__source_set *set = req->sources;
  size_t nh = 0;
  for (size_t i = 0; i < set->count; ++i) nh += ends_with(set->files[i].name, ".cuh");
  const char **headers = calloc(nh ? nh : 1, sizeof *headers);
  const char **include_names = calloc(nh ? nh : 1, sizeof *include_names);
  if (headers == NULL || include_names == NULL) {
    free(headers);
    free(include_names);
    return kda__fail(KDA_ERROR_OUT_OF_MEMORY, "out of memory compiling %s", req->source_name);
  }
  size_t k = 0;
  for (size_t i = 0; i < set->count; ++i) {
    if (!ends_with(set->files[i].name, ".cuh")) continue;
    headers[k] = set->files[i].text;
    include_names[k] = set->files[i].name;
    ++k;
  }
  nvrtcResult r = nvrtcCreateProgram(prog, main_src->text, req->source_name, (int)nh, headers,
                                     include_names);
  free(headers);
  free(include_names);
  if (r != NVRTC_SUCCESS) return nvrtc_fail(r, "nvrtcCreateProgram", req);
  return KDA_OK;
}

/* Copies the cubin and the lowered names out of a compiled program. */
static kda_status collect(nvrtcProgram prog, const kda__compile_request *req, kda__compiled *out) {
  size_t size = 0;
  nvrtcResult r = nvrtcGetCUBINSize(prog, &size);
  if (r != NVRTC_SUCCESS) return nvrtc_fail(r, "nvrtcGetCUBINSize", req);
  if (size == 0)
    return kda__fail(KDA_ERROR_COMPILE, "NVRTC produced an empty CUBIN for %s (sm_%d)",
                     req->source_name, req->arch);
  out->cubin = malloc(size);
  out->lowered_names = calloc(req->num_names ? req->num_names : 1, sizeof *out->lowered_names);
  if (out->cubin == NULL || out->lowered_names == NULL)
    return kda__fail(KDA_ERROR_OUT_OF_MEMORY, "out of memory copying the CUBIN of %s (%zu bytes)",
                     req->source_name, size);
  out->num_names = req->num_names;
  out->cubin_size = size;
  r = nvrtcGetCUBIN(prog, out->cubin);
  if (r != NVRTC_SUCCESS) return nvrtc_fail(r, "nvrtcGetCUBIN", req);
  for (size_t i = 0; i < req->num_names; ++i) {
    const char *lowered = NULL;
    r = nvrtcGetLoweredName(prog, req->names[i], &lowered);
    if (r != NVRTC_SUCCESS || lowered == NULL) {
      return kda__fail(KDA_ERROR_COMPILE, "nvrtcGetLoweredName(%s) failed for %s (sm_%d): %s",
                       req->names[i], req->source_name, req->arch, nvrtcGetErrorString(r));
    }
    out->lowered_names[i] = strdup(lowered);
    if (out->lowered_names[i] == NULL)
      return kda__fail(KDA_ERROR_OUT_OF_MEMORY, "out of memory copying a lowered name");
  }
  return KDA_OK;
}

kda_status kda__nvrtc_compile(const kda__compile_request *req, kda__compiled *out) {
  if (out != NULL) memset(out, 0, sizeof *out);
  KDA__TRY(check_request(req, out));
  const kda__source *main_src = kda__source_find(req->sources, req->source_name);
  if (main_src == NULL)
    return kda__fail(KDA_ERROR_KERNEL_SOURCE, "kernel template %s is not in the source set",
                     req->source_name);

  nvrtcProgram prog = NULL;
  KDA__TRY(create_program(req, main_src, &prog));

  kda_status s = KDA_OK;
  for (size_t i = 0; i < req->num_names && s == KDA_OK; ++i) {
    nvrtcResult r = nvrtcAddNameExpression(prog, req->names[i]);
    if (r != NVRTC_SUCCESS) s = nvrtc_fail(r, "nvrtcAddNameExpression", req);
  }

  if (s == KDA_OK) {
    char arch_opt[64];
    snprintf(arch_opt, sizeof arch_opt, KDA__OPT_ARCH_PREFIX "%d", req->arch);
    const char *opts[] = {KDA__OPT_STD, arch_opt, KDA__OPT_DEVICE};
    double t0 = now_ms();
    nvrtcResult r = nvrtcCompileProgram(prog, (int)(sizeof opts / sizeof opts[0]), opts);
    out->compile_ms = now_ms() - t0;
    char *log = program_log(prog);
    if (r != NVRTC_SUCCESS) {
      s = r == NVRTC_ERROR_OUT_OF_MEMORY ? KDA_ERROR_OUT_OF_MEMORY : KDA_ERROR_COMPILE;
      kda__fail(s, "NVRTC could not compile %s for sm_%d (%s; options: %s)", req->source_name,
                req->arch, nvrtcGetErrorString(r), kda__nvrtc_options_string());
      append_names(req);
      kda__append_error("\nNVRTC log:\n");
      kda__append_error(log ? log : "(empty)");
      free(log);
    } else {
      out->log = log;
      s = collect(prog, req, out);
    }
  }

  nvrtcDestroyProgram(&prog);
  if (s != KDA_OK) {
    double ms = out->compile_ms;
    kda__compiled_free(out);
    out->compile_ms = ms; /* time spent still counts toward the stats */
  }
  return s;
}
