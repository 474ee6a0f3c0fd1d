/* kda_db_lookup: what a kernel call takes from the tuning database, from
 * the GPU's identity alone (kda-tune lookup). The keys come from the same
 * functions a context's calls use (tuner/tuner_call.c); the row and the
 * cubin are looked up as a context looks them up (tuner/tuner.c). */
#include <stdlib.h>
#include <string.h>

#include "db_internal.h"
#include "error.h"
#include "kernel_source.h"
#include "tuner.h"

/* 1/2/0 as kda_db_lookup_result.cubin_stored says; built_by gets the
 * cubin's NVRTC build. */
static int32_t cubin_state(kda_db *db, const kda__tune_keys *keys, const char *config,
                           char *built_by, size_t built_by_size);

static void lookup_cubin(kda_db *db, const kda__tune_keys *keys, const char *config,
                         kda_db_lookup_result *out) {
  out->cubin_stored = cubin_state(db, keys, config, out->cubin_nvrtc, sizeof out->cubin_nvrtc);
}

static int32_t cubin_state(kda_db *db, const kda__tune_keys *keys, const char *config,
                           char *built_by, size_t built_by_size) {
  kda__cubin_key ck;
  memset(&ck, 0, sizeof ck);
  kda__tune_cubin_key(keys, config, &ck);
  int found = 0, tampered = 0;
  void *blob = NULL;
  size_t size = 0;
  int32_t state = 0;
  if (kda__store_lookup_cubin(db->store, &ck, &found, &blob, &size, &tampered) == KDA_OK && found) {
    state = 1;
    kda__db_copy(built_by, built_by_size, keys->nvrtc);
  } else if (!tampered &&
             kda__store_lookup_cubin_other_build(db->store, &ck, &found, &blob, &size, &tampered,
                                                 built_by, built_by_size) == KDA_OK &&
             found) {
    state = 2;
  } else {
    built_by[0] = '\0';
  }
  free(blob);
  return state;
}

static kda_status lookup(kda_db *db, const kda_device_info *info, kda__op op,
                         const kda_gate_args *f, kda__tune_call *call,
                         kda_db_lookup_result *out) {
  kda__source_set sources;
  const char *dir = getenv("KDA_KERNEL_DIR");
  KDA__TRY(kda__source_set_load(dir && *dir ? dir : NULL, &sources));
  kda_status st = kda__tune_call_keys(info, info->cc_major * 10 + info->cc_minor, &sources, op, f,
                                      call);
  kda__source_set_free(&sources);
  KDA__TRY(st);
  out->bucket = call->slot.bucket;
  kda_token_bucket_range(out->bucket, &out->tokens_lo, &out->tokens_hi);
  out->vec_cap = call->slot.vec_cap;
  kda__db_copy(out->spec, sizeof out->spec, call->keys.spec);
  kda__db_copy(out->template_hash, sizeof out->template_hash, call->keys.template_hash);
  kda__db_copy(out->space_hash, sizeof out->space_hash, call->keys.space_hash);
  kda__config_text(&call->heuristic, out->heuristic, sizeof out->heuristic);
  kda__db_copy(out->config, sizeof out->config, out->heuristic);

  kda__store_key key;
  kda__tune_result_key(&call->keys, &key);
  kda__store_record rec;
  memset(&rec, 0, sizeof rec);
  int found = 0;
  KDA__TRY(kda__store_lookup_result(db->store, &key, &found, &rec));
  if (found) {
    kda__db_record_from(db, &key, &rec, &out->record);
    kda__config c;
    if (kda__config_parse(rec.config, &c) == 0 && kda__tune_call_has(call, &c)) {
      out->found = 1;
      kda__db_copy(out->config, sizeof out->config, rec.config);
    } else {
      out->ignored = 1;
    }
  }
  lookup_cubin(db, &call->keys, out->config, out);
  kda__config offline;
  if (!out->found && out->cubin_stored == 0 &&
      kda__tune_offline_heuristic(&call->slot, call->heuristic, &offline)) {
    char built_by[160];
    kda__config_text(&offline, out->offline_config, sizeof out->offline_config);
    out->offline_cubin_stored =
        cubin_state(db, &call->keys, out->offline_config, built_by, sizeof built_by);
  }
  return KDA_OK;
}

kda_status kda_db_lookup(kda_db *db, const char *gpu_key, kda_kernel kernel,
                         const kda_gate_args *shape, kda_db_lookup_result *out) {
  KDA__REQUIRE(db != NULL && gpu_key != NULL && shape != NULL && out != NULL,
               KDA_ERROR_NULL_POINTER, "kda_db_lookup: NULL argument");
  KDA__REQUIRE(shape->struct_size == sizeof *shape, KDA_ERROR_BAD_OPTIONS,
               "kda_db_lookup: kda_gate_args.struct_size is %u, expected %zu",
               shape->struct_size, sizeof *shape);
  KDA__REQUIRE(out->struct_size == sizeof *out, KDA_ERROR_BAD_OPTIONS,
               "kda_db_lookup: kda_db_lookup_result.struct_size is %u, expected %zu",
               out->struct_size, sizeof *out);
  memset(out, 0, sizeof *out);
  out->struct_size = sizeof *out;
  kda_device_info info;
  KDA__REQUIRE(kda__store_gpu_key_parse(gpu_key, &info) == 0, KDA_ERROR_INVALID_ARGUMENT,
               "kda_db_lookup: '%s' is not a GPU key (kda_db_gpu_key writes them, e.g. "
               "sm90-pci2330-sms132-l2_52428800)", gpu_key);
  kda__op op = KDA__OP_GATE;
  kda_gate_args a;
  void *host_seqlens = NULL;
  KDA__TRY(kda__tune_shape_call(kernel, shape, &op, &a, &host_seqlens));
  kda_gate_args f;
  kda__tune_stand_in_args(op, &a, &f); /* keeps g's and out's offsets: a view's keys */
  kda__tune_call *call = malloc(sizeof *call);
  kda_status st = call != NULL ? lookup(db, &info, op, &f, call, out)
                               : kda__fail(KDA_ERROR_OUT_OF_MEMORY, "kda_db_lookup: out of memory");
  free(call);
  free(host_seqlens);
  return st;
}
