/* Compilation without a device: the same specialization a call would use,
 * compiled for a named architecture. Serves build boxes and CI. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chunk_plan.h"
#include "error.h"
#include "gate_args.h"
#include "kernel_source.h"
#include "nvrtc_compile.h"
#include "tuner.h"

kda_status kda__offline_spec(kda_kernel kernel, const kda_gate_args *args, kda__spec *out) {
  KDA__REQUIRE(args != NULL, KDA_ERROR_NULL_POINTER, "kda_compile_offline: args is NULL");
  kda__spec spec;
  if (kernel == KDA_KERNEL_CHUNK_INDICES) {
    KDA__REQUIRE(args->cu_seqlens_dtype == KDA_DTYPE_I32 || args->cu_seqlens_dtype == KDA_DTYPE_I64,
                 KDA_ERROR_UNSUPPORTED_DTYPE, "kda_compile_offline: cu_seqlens_dtype %d",
                 (int)args->cu_seqlens_dtype);
    KDA__TRY(kda__check_chunk_size(args->chunk_size));
    spec = kda__chunk_builder_spec(args->cu_seqlens_dtype, args->chunk_size,
                                   args->chunk_plan != NULL);
  } else {
    KDA__REQUIRE(kernel == KDA_KERNEL_GATE_CHUNK_CUMSUM || kernel == KDA_KERNEL_CHUNK_LOCAL_CUMSUM ||
                     kernel == KDA_KERNEL_GATE,
                 KDA_ERROR_INVALID_ARGUMENT, "kda_compile_offline: kernel %d unknown", (int)kernel);
    /* Stand-in addresses, far apart, so validation and the heuristic see
     * what a real call would. NULL is aligned for the widest access; an
     * address below 256 is a shape's view offset ("g-align=16
     * out-align=8", as kda_prewarm and kda_db_lookup read it), kept on the
     * stand-in: as given, g at 16 and out at 8 would overlap and be
     * refused as an in-place call. Real addresses are checked as given. */
    kda_gate_args a = *args;
    if ((uintptr_t)a.g < 256) a.g = (const void *)(uintptr_t)((UINT64_C(1) << 40) + (uintptr_t)a.g);
    if ((uintptr_t)a.out < 256) a.out = (void *)(uintptr_t)((UINT64_C(1) << 44) + (uintptr_t)a.out);
    if (!a.A_log && a.gate == KDA_GATE_SOFTPLUS) a.A_log = (const float *)(uintptr_t)(UINT64_C(1) << 46);
    if (a.cu_seqlens && !a.chunk_indices && !a.chunk_plan)
      a.chunk_indices = (const int32_t *)(uintptr_t)(UINT64_C(1) << 47);
    if (!a.cu_seqlens && a.num_seqs > 0 && !a.chunk_plan) {
      /* A varlen shape described without pointers. */
      a.cu_seqlens = (const void *)(uintptr_t)(UINT64_C(1) << 45);
      a.chunk_indices = (const int32_t *)(uintptr_t)(UINT64_C(1) << 47);
    }
    kda__launch_plan plan;
    const kda__op op = kernel == KDA_KERNEL_GATE_CHUNK_CUMSUM   ? KDA__OP_GATE_CHUNK_CUMSUM
                       : kernel == KDA_KERNEL_CHUNK_LOCAL_CUMSUM ? KDA__OP_CHUNK_LOCAL_CUMSUM
                                                                 : KDA__OP_GATE;
    void *host_seqlens = NULL;
    KDA__TRY(kda__shape_host_seqlens(&a, &host_seqlens));
    const kda_status st = kda__plan_gate_op(op, &a, &plan);
    free(host_seqlens);
    KDA__TRY(st);
    spec = plan.spec;
  }
  *out = spec;
  return KDA_OK;
}

kda_status kda_compile_offline(kda_kernel kernel, const kda_gate_args *args, int32_t arch,
                               double *compile_ms) {
  KDA__REQUIRE(args != NULL, KDA_ERROR_NULL_POINTER, "kda_compile_offline: args is NULL");
  KDA__REQUIRE(arch >= 50 && arch <= 200, KDA_ERROR_INVALID_ARGUMENT,
               "kda_compile_offline: arch %d is not a compute capability x 10 (e.g. 90)", arch);
  kda__spec spec;
  KDA__TRY(kda__offline_spec(kernel, args, &spec));
  kda__source_set sources;
  const char *dir = getenv("KDA_KERNEL_DIR");
  KDA__TRY(kda__source_set_load(dir && *dir ? dir : NULL, &sources));
  char name[KDA__NAME_MAX];
  kda_status st = kda__spec_name(&spec, name, sizeof name) > 0
                      ? KDA_OK
                      : kda__fail(KDA_ERROR_INTERNAL, "specialization name too long");
  if (st == KDA_OK) {
    const char *names[1] = {name};
    kda__compile_request req = {&sources, kda__spec_source_name(&spec), arch, names, 1};
    kda__compiled out;
    memset(&out, 0, sizeof out);
    st = kda__nvrtc_compile(&req, &out);
    if (st == KDA_OK && compile_ms) *compile_ms = out.compile_ms;
    kda__compiled_free(&out);
  }
  kda__source_set_free(&sources);
  return st;
}
