/*
 * Command-line front end: one function per subcommand, and strict helpers
 * for parsing flag values (every bad value is an error that names the flag,
 * the value and the accepted range; nothing is guessed).
 */
#ifndef KVL_CLI_H
#define KVL_CLI_H

#include "kvllm.h"

#include <stdbool.h>
#include <stdint.h>

/* Each returns the process exit code (0 ok, 1 runtime error, 2 usage error). */
int kvl_cli_run(int argc, char **argv);
int kvl_cli_ppl(int argc, char **argv);
int kvl_cli_mkmodel(int argc, char **argv);
int kvl_cli_plan(int argc, char **argv);
int kvl_cli_bench(int argc, char **argv);
int kvl_cli_bench_serve(int argc, char **argv); /* kvllm bench serve */
int kvl_cli_serve(int argc, char **argv);
int kvl_cli_chat(int argc, char **argv); /* kvllm chat: an interactive terminal chat */
int kvl_cli_sim(int argc, char **argv);
int kvl_cli_tokenize(int argc, char **argv);

/* Parse helpers: return false and print "kvllm <cmd>: <flag>: ..." to stderr
 * on a bad value. */
bool kvl_cli_int(const char *cmd, const char *flag, const char *s, long long lo, long long hi,
                 long long *out);
bool kvl_cli_float(const char *cmd, const char *flag, const char *s, double lo, double hi,
                   double *out);
/* Byte sizes: "4096", "512MiB", "2GiB", "1.5GB", "80G" (K/M/G/T with or
 * without B; KiB/MiB/GiB/TiB binary; KB/MB/GB/TB decimal; bare K/M/G/T
 * binary), below 2^63. */
bool kvl_cli_bytes(const char *cmd, const char *flag, const char *s, uint64_t *out);
/* The value after a flag: argv[*i + 1], advancing *i; false (with a message)
 * when missing. */
bool kvl_cli_value(const char *cmd, int argc, char **argv, int *i, const char **out);
/* The same for a flag not yet recognised: argv[*i] must be one of known (a
 * NULL-terminated list of the subcommand's flags that take a value) before
 * its value is taken. Otherwise false, with kvl_cli_unknown's message. */
bool kvl_cli_flag_value(const char *cmd, const char *const *known, const char *hint, int argc,
                        char **argv, int *i, const char **out);
/* Print why arg is refused: "unknown flag '--x'" when it starts with '-',
 * else "unexpected argument 'x'" (a stray word), ending with hint (e.g. "the
 * prompt goes after -p") when not NULL. This function can't fail. */
void kvl_cli_unknown(const char *cmd, const char *arg, const char *hint);

#endif
