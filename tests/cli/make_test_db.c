/* Writes tuning results with trials into a database through the store API,
 * for the kda-tune CLI tests (prewarm --compile-only stores cubins only).
 * Deterministic: fixed times and values. Usage: make_test_db PATH [lookup|long]
 * ("lookup" adds a row under the key kda_db_lookup names for a dense
 * H=16 call of 3000 tokens on the H100, for kda-tune lookup; "long" a row
 * whose spec is longer than a kda_db_record holds, as a hand edit makes). */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "kda/kda_db.h"
#include "store.h"

static int put_keyed(kda__store *s, const kda_db_versions *v, const kda__store_key *key,
                     const char *config, double median, int64_t created) {
  kda__store_record r;
  memset(&r, 0, sizeof r);
  snprintf(r.config, sizeof r.config, "%s", config);
  r.config_id = 3;
  r.median_us = median;
  r.gbps = 1500.0;
  r.max_err = 1.5e-7;
  r.candidates = 4;
  r.rejected = 1;
  r.heuristic_us = median * 1.25;
  r.tune_ms = 812.5;
  r.compile_ms = 402.25;
  r.created_at = created;
  snprintf(r.lib_version, sizeof r.lib_version, "%s", v->lib_version);
  /* Provenance, but for the row "of an older library" (which had none). */
  if (strcmp(v->lib_version, "0.0.9") != 0) {
    snprintf(r.host, sizeof r.host, "tuner-a");
    snprintf(r.driver, sizeof r.driver, "580.159.04 (CUDA 13.0)");
    snprintf(r.source, sizeof r.source, "kda_prewarm");
  }
  snprintf(r.nvrtc_version, sizeof r.nvrtc_version, "%.63s", v->nvrtc_version);
  /* Four timed candidates, one shape left out before timing (tuner.h). */
  kda__store_trial t[5] = {
      {"vec=2,tx=64,seg=8", 1, median * 1.1, median * 1.05, median * 1.2, KDA__TRIAL_OK, NULL},
      {"vec=4,tx=32,seg=8", 3, median, median * 0.98, median * 1.04, KDA__TRIAL_OK, NULL},
      {"vec=8,tx=16,seg=8", 5, -1, -1, -1, KDA__TRIAL_WRONG_RESULT,
       "max error 3.1e-02 above tolerance 2e-05"},
      {"vec=1,tx=128,seg=4", 0, median * 1.25, median * 1.2, median * 1.3, KDA__TRIAL_OK, NULL},
      {"vec=1,tx=16,seg=8", 7, -1, -1, -1, KDA__TRIAL_REJECTED,
       KDA_DB_TRIAL_LEFT_OUT ": PyTorch servers run this shape slower than the tuner measures it"},
  };
  return kda__store_put_result(s, key, &r, t, 5, KDA__PUT_REPLACE, NULL) == KDA_OK ? 0 : 1;
}

static int put(kda__store *s, const kda_db_versions *v, const char *gpu, const char *spec,
               int64_t bucket, const char *lib, double median, int64_t created) {
  kda__store_key key = {gpu, "gate_cumsum", spec, bucket, v->gate_cumsum_hash,
                        "5ace5ace5ace5ace5ace5ace5ace5ace5ace5ace5ace5ace5ace5ace5ace5ace"};
  kda_db_versions w = *v;
  snprintf(w.lib_version, sizeof w.lib_version, "%s", lib);
  return put_keyed(s, &w, &key, "vec=4,tx=32,seg=8", median, created);
}

/* The row a dense H=16 K=128 call of 3000 tokens reads on gpu. */
static int put_lookup_row(kda__store *s, const kda_db_versions *v, const char *gpu) {
  kda_db *db = NULL;
  if (kda_db_open(":memory:", 0, &db) != KDA_OK) return 1;
  kda_gate_args a = kda_gate_args_default();
  a.g_dtype = KDA_DTYPE_BF16;
  a.out_dtype = KDA_DTYPE_F32;
  a.batch = 1;
  a.seq_len = 3000;
  a.num_heads = 16;
  a.head_dim = 128;
  a.gate = KDA_GATE_SOFTPLUS;
  a.dt_bias = (const float *)(uintptr_t)1;
  kda_db_lookup_result r;
  memset(&r, 0, sizeof r);
  r.struct_size = sizeof r;
  kda_status st = kda_db_lookup(db, gpu, KDA_KERNEL_GATE_CHUNK_CUMSUM, &a, &r);
  kda_db_close(db);
  if (st != KDA_OK) return 1;
  kda__store_key key = {gpu, "gate_cumsum", r.spec, r.bucket, r.template_hash, r.space_hash};
  return put_keyed(s, v, &key, r.heuristic, 9.5, 1700000300);
}

int main(int argc, char **argv) {
  if (argc < 2 || argc > 3 ||
      (argc == 3 && strcmp(argv[2], "lookup") != 0 && strcmp(argv[2], "long") != 0)) {
    fprintf(stderr, "usage: make_test_db PATH [lookup|long]\n");
    return 2;
  }
  kda_db_versions v;
  kda__store *s = NULL;
  if (kda_db_current(&v) != KDA_OK || kda__store_open(argv[1], 0, &s) != KDA_OK) {
    fprintf(stderr, "make_test_db: %s\n", kda_last_error());
    return 1;
  }
  const char *h100 = "sm90-pci2330-sms132-l2_52428800", *h200 = "sm90-pci2335-sms132-l2_62914560";
  const char *spec32 = "gate_cumsum in=bf16 out=f32 H=32 K=128 chunk=64 cumsum=1 gate=1 bias=1 "
                       "alog=1 scale=0 reverse=0 varlen=0 idx=i32 veccap=8";
  const char *spec8 = "gate_cumsum in=bf16 out=f32 H=8 K=128 chunk=64 cumsum=1 gate=1 bias=1 "
                      "alog=1 scale=0 reverse=0 varlen=1 idx=i32 veccap=8";
  int rc = kda__store_put_gpu(s, h100, "NVIDIA H100 80GB HBM3", 3000.0) != KDA_OK;
  rc |= kda__store_put_gpu(s, h200, "NVIDIA H200", -1) != KDA_OK;
  rc |= put(s, &v, h100, spec32, 1, v.lib_version, 12.5, 1700000000);
  rc |= put(s, &v, h100, spec8, 2, v.lib_version, 7.25, 1700000100);
  rc |= put(s, &v, h200, spec32, 1, v.lib_version, 10.75, 1700000200);
  rc |= put(s, &v, h100, spec32, 3, "0.0.9", 40.5, 1600000000); /* stale: older library */
  if (argc == 3 && strcmp(argv[2], "lookup") == 0) rc |= put_lookup_row(s, &v, h100);
  if (argc == 3 && strcmp(argv[2], "long") == 0) {
    char spec[1024];
    snprintf(spec, sizeof spec, "%s %0600d", spec32, 0);
    rc |= put(s, &v, h100, spec, 1, v.lib_version, 12.5, 1700000400); /* row id 5 */
  }
  kda__store_close(s);
  if (rc) fprintf(stderr, "make_test_db: %s\n", kda_last_error());
  return rc;
}
