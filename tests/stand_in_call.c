#include "stand_in_call.h"

#include <stdlib.h>
#include <string.h>

void stand_in_call_init(stand_in_call *c, int H, int K, int chunk, int64_t T, kda_dtype in,
                        kda_gate_kind gate) {
  memset(c, 0, sizeof *c);
  const size_t n = (size_t)T * (size_t)H * (size_t)K;
  c->g = aligned_alloc(256, n * 4 + 256);
  c->out = aligned_alloc(256, n * 4 + 256);
  if (c->g != NULL) memset(c->g, 0x3f, n * 4);
  c->a = kda_gate_args_default();
  c->a.g = c->g;
  c->a.g_dtype = in;
  c->a.out = c->out;
  c->a.batch = 1;
  c->a.seq_len = T;
  c->a.num_heads = H;
  c->a.head_dim = K;
  c->a.chunk_size = chunk;
  c->a.gate = gate;
  if (gate == KDA_GATE_SOFTPLUS) c->a.A_log = c->A_log;
  if (gate == KDA_GATE_LOWER_BOUND) c->a.lower_bound = -5.0f;
}

void stand_in_call_free(stand_in_call *c) {
  free(c->g);
  free(c->out);
  c->g = c->out = NULL;
}
