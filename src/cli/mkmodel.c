/* kvllm mkmodel: placeholder until its owner lands it (replaced in this session). */
#include "cli/cli.h"

#include <stdio.h>

int kvl_cli_mkmodel(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "kvllm mkmodel: not built yet\n");
    return 1;
}
