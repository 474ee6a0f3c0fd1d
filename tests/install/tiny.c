/* The smallest user of the installed package, built with pkg-config. */
#include <kda/kda.h>
#include <stdio.h>

int main(void) {
  if (kda_version_number() != KDA_VERSION_NUMBER) {
    fprintf(stderr, "library %s does not match the header\n", kda_version());
    return 1;
  }
  printf("libkda %s: %s\n", kda_version(), kda_status_name(KDA_ERROR_CAPTURE_COLD));
  return 0;
}
