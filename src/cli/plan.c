/* kvllm plan: placeholder until its owner lands it (replaced in this session). */
#include "cli/cli.h"

#include <stdio.h>

int kvl_cli_plan(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "kvllm plan: not built yet\n");
    return 1;
}
