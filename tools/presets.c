/* Model presets for `kda-tune prewarm --model`: the gate stage of each
 * model's KDA layers. --tp N divides the heads (H = total / N). */
#include <string.h>

#include "shapes_file.h"

static const model_preset presets[] = {
    /* Kimi Linear (48B-A3B): 32 KDA heads of dimension 128, chunk 64; the
     * raw gate is bf16 with A_log and dt_bias (softplus), cumsum in fp32.
     * Serving meets both packed (varlen) prefill and dense batches. The
     * cumsum is scaled: flash-linear-attention's chunk_kda_fwd passes
     * scale=RCP_LN2 (1/ln 2, for the exp2 of the attention kernels), and a
     * scaled cumsum is another specialization (has_scale). */
    {"kimi-linear", 32, 128, 64, KDA_GATE_SOFTPLUS, 1, KDA_DTYPE_BF16, KDA_DTYPE_F32, 3, 2,
     "Kimi Linear: H = 32/tp, K = 128, chunk 64, softplus gate with dt_bias, bf16 -> f32, "
     "scaled cumsum (fla passes 1/ln 2), dense and varlen"},
};

const model_preset *preset_find(const char *name) {
  for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++)
    if (strcmp(presets[i].name, name) == 0) return &presets[i];
  return NULL;
}

const char *preset_names(void) { return "kimi-linear"; }
