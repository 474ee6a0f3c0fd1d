/* The shapes kda-tune prewarm and lookup take: shape flags, --shapes FILE
 * or --model NAME --tp LIST, expanded by tools/shapes_file.c. */
#include <stdio.h>

#include "kda_tune.h"
#include "shapes_file.h"

int tune_collect_shapes(const tune_args *a, shape_list *list) {
  char err[1024];
  shape_set s;
  shape_set_init(&s);
  int any = 0;
  for (size_t i = 0; i < shape_key_count; i++) {
    const char *v = tune_get(a, shape_keys[i]);
    if (v == NULL) continue;
    any = 1;
    if (shape_set_apply(&s, shape_keys[i], v, err, sizeof err) != 0) {
      tune_error(a, "--%s", err);
      return TUNE_USAGE;
    }
  }
  const char *file = tune_get(a, "shapes");
  if (file != NULL) {
    if (any) {
      tune_error(a, "--shapes FILE replaces the shape flags; give one or the other");
      return TUNE_USAGE;
    }
    if (shapes_file_load(file, list, err, sizeof err) != 0) {
      fprintf(stderr, "kda-tune %s: error: %s\n", a->cmd->name, err);
      return TUNE_USAGE;
    }
    return 0;
  }
  if (!any) {
    tune_error(a, "no shapes: give --heads (and other shape flags), --model NAME [--tp LIST] "
                  "or --shapes FILE");
    return TUNE_USAGE;
  }
  if (shape_set_expand(&s, list, err, sizeof err) != 0) {
    tune_error(a, "%s", err);
    return TUNE_USAGE;
  }
  return 0;
}

