/* Shared pieces of the model-running subcommands (run, ppl). */
#ifndef KVL_CLI_COMMON_H
#define KVL_CLI_COMMON_H

#include "model/model.h"

/* Path of the shipped default model (stories260K.gguf), looked up in
 * $KVL_SHARED/models, ../shared/models, and beside the executable's
 * checkout; NULL when none exists. Static buffer. */
const char *kvl_cli_default_model(void);

#endif
