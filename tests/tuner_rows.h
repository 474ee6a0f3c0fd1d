/* A context's tuning-database rows, written the way a tuning run on a GPU
 * would have: for tests on the stand-in driver, which cannot tune. */
#ifndef KDA_TESTS_TUNER_ROWS_H
#define KDA_TESTS_TUNER_ROWS_H

#include "context_internal.h"
#include "gate_args.h"
#include "tuner.h"

/* The slot keys a context computes for a dense shape, the way kda_prewarm's
 * lookup and kda_db_lookup do (tuner/tuner_call.c): stand-in pointers, the
 * heuristic fitted to the device, the slot and its candidate space.
 * *other (if not NULL) is a config of the space that is not the heuristic;
 * *bucket the slot's. */
void tr_slot_keys(kda_context *ctx, kda__op op, const kda_gate_args *shape, kda__tune_keys *keys,
                  kda__config *other, int *bucket);

/* Writes a winner row of cfg for the keys through the context's own store. */
void tr_put_winner(kda_context *ctx, const kda__tune_keys *keys, const kda__config *cfg,
                   double median_us);

/* The context's counters (kda_context_get_stats, asserted to succeed). */
kda_stats tr_stats(kda_context *ctx);

#endif
