/* A gate call for tests on the stand-in driver (tests/fake_cuda): its
 * "device" memory is host memory, and it reads no buffer, so the call's
 * tensors are plain allocations with room for a view's offset. */
#ifndef KDA_TESTS_STAND_IN_CALL_H
#define KDA_TESTS_STAND_IN_CALL_H

#include <stdint.h>

#include "kda/kda.h"

typedef struct stand_in_call {
  kda_gate_args a; /* dense, batch 1; A_log for softplus, a lower bound for the other */
  void *g, *out;
  float A_log[64];
  float dt_bias[64 * 256]; /* not set in a: a test that wants it points a.dt_bias here */
} stand_in_call;

/* H <= 64 heads of K <= 256, T tokens, g of dtype in (bytes 0x3f). */
void stand_in_call_init(stand_in_call *c, int H, int K, int chunk, int64_t T, kda_dtype in,
                        kda_gate_kind gate);
void stand_in_call_free(stand_in_call *c);

#endif
