/* Shapes for `kda-tune prewarm`: sets of values (from flags, a shapes file
 * or a model preset) expanded into the specializations to tune.
 *
 * Shapes file format (one shape set per line):
 *
 *   # comment; blank lines are ignored
 *   heads=32 head-dim=128 chunk=64 gate=softplus bias=yes dtype=bf16 tokens=512,8192
 *   model=kimi-linear tp=1,2,4,8 varlen=both
 *
 * Each line is whitespace-separated KEY=VALUE pairs; the keys are the
 * prewarm flags without "--": heads, head-dim, chunk, gate, bias, dtype,
 * out-dtype, varlen, host-rows, chunk-plan, tokens, seqs, scale, reverse,
 * kernel, model, tp, g-align, out-align. Lists (heads, head-dim, chunk, dtype, tokens, tp) are
 * comma-separated and multiply out; bias, varlen, host-rows, chunk-plan,
 * scale and reverse take yes, no or both (host-rows: the varlen
 * specialization of calls that pass cu_seqlens_host, for token counts whose
 * batch fits KDA_MAX_HOST_ROWS; chunk-plan: of calls that pass a
 * kda_chunk_plan). A line
 * needs heads or model. Anything not given takes the preset's value (with
 * model) or the default: head-dim 128, chunk 64, gate softplus, bias yes,
 * dtype bf16, out-dtype f32, varlen no, host-rows no, chunk-plan no, one token count per bucket
 * (512,2048,8192,32768,65536), seqs 8, scale no (a model preset: its own;
 * kimi-linear: yes, as flash-linear-attention calls it), reverse no,
 * g-align and out-align 256 (bytes: the alignment of the calls' g and out;
 * views at an offset have less, and specializations of their own).
 * Errors name the place: "FILE:LINE: ...". */
#ifndef KDA_TOOLS_SHAPES_FILE_H
#define KDA_TOOLS_SHAPES_FILE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "kda/kda.h"

#define SHAPE_LIST_MAX 16

typedef struct shape_set {
  int32_t heads[SHAPE_LIST_MAX], nheads;
  int32_t head_dim[SHAPE_LIST_MAX], nhead_dim;
  int32_t chunk[SHAPE_LIST_MAX], nchunk;
  int32_t dtype[SHAPE_LIST_MAX], ndtype;
  int64_t tokens[SHAPE_LIST_MAX];
  int32_t ntokens;
  int32_t tp[SHAPE_LIST_MAX], ntp;
  int32_t gate;      /* kda_gate_kind; -1 unset */
  int32_t out_dtype; /* -1 unset */
  int32_t bias, varlen, host_rows, chunk_plan, scale, reverse; /* bit 0: no, bit 1: yes; 0 unset */
  int32_t seqs;      /* 0 unset */
  int32_t g_align, out_align; /* bytes, a power of two up to 256; 0 unset (256) */
  int32_t kernel;    /* kda_kernel; -1: from gate */
  const char *model; /* preset name or NULL */
} shape_set;

typedef struct tune_shape {
  kda_kernel kernel;
  kda_gate_args args; /* shape fields only; A_log / dt_bias non-NULL = present */
  int64_t tokens;
  int32_t bucket;
  char label[200];
} tune_shape;

typedef struct shape_list {
  tune_shape *items;
  size_t n, cap;
  /* 0: one shape per specialization and bucket (prewarm tunes a bucket
   * once); 1: one per token count too (lookup: a miss runs a heuristic
   * fitted to the count). Set before expanding. */
  int per_token;
} shape_list;

/* The keys shape_set_apply takes: a shapes file's, and the shape flags of
 * prewarm and lookup (the same names with "--"). */
extern const char *const shape_keys[];
extern const size_t shape_key_count;

void shape_set_init(shape_set *s);
/* Sets key (a flag name without "--") to value. 0, or -1 with a message
 * in err ("unknown key" lists the valid ones). */
int shape_set_apply(shape_set *s, const char *key, const char *value, char *err, size_t err_size);
/* Expands s into list (deduplicated by specialization and bucket). 0 or
 * -1 with a message. */
int shape_set_expand(const shape_set *s, shape_list *list, char *err, size_t err_size);
/* Reads a shapes file into list. 0 or -1 with "FILE:LINE: ..." in err. */
int shapes_file_load(const char *path, shape_list *list, char *err, size_t err_size);
/* The same from an open stream (not closed here); path names it in errors. */
int shapes_stream_load(FILE *f, const char *path, shape_list *list, char *err, size_t err_size);
void shape_list_free(shape_list *list);
/* A shape in the words prewarm prints (its label without the tokens):
 * "gate_chunk_cumsum H=32 K=128 chunk=64 softplus bias bf16->f32 dense";
 * kda-tune list and show describe stored rows the same way. */
void shape_words(kda_kernel kernel, const kda_gate_args *a, char *buf, size_t size);

/* Model presets (presets.c). */
typedef struct model_preset {
  const char *name;
  int32_t total_heads, head_dim, chunk;
  int32_t gate;       /* kda_gate_kind */
  int32_t bias;       /* 1: dt_bias */
  int32_t dtype, out_dtype;
  int32_t varlen;     /* bit 0: dense, bit 1: varlen */
  int32_t scale;      /* bit 0: no scale, bit 1: a scaled cumsum */
  const char *about;
} model_preset;

const model_preset *preset_find(const char *name);
/* "kimi-linear, ..." for messages. */
const char *preset_names(void);

#endif
