/* kvllm: the command-line program. Dispatches to one function per subcommand. */
#include "cli/cli.h"

#include <stdio.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f,
            "kvllm %s: LLM inference with a paged, quantized KV cache\n"
            "\n"
            "usage: kvllm <command> [flags]    (kvllm <command> --help for its flags)\n"
            "\n"
            "commands:\n"
            "  run       generate text from a model (default: the shipped stories260K)\n"
            "  ppl       perplexity of a text file, teacher-forced\n"
            "  mkmodel   write a GGUF with random weights in a real architecture's shape\n"
            "  plan      memory planner: KV bytes per token, capacity, what fits\n"
            "  bench     tokens/s of prompt processing and generation (like llama-bench)\n"
            "  bench serve  a serving workload through the engine: throughput, TTFT/TPOT/ITL\n"
            "  serve     OpenAI-compatible HTTP server with streaming, metrics and a KV ledger\n"
            "  chat      an interactive chat on the terminal, multi-turn through the prefix cache\n"

            "  tokenize  the token ids of a text (as llama-tokenize prints them)\n"
            "  sim       the scheduler and KV ledger at data-centre scale, on a cost model\n",
            KVL_VERSION);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version")) {
        printf("kvllm %s\n", KVL_VERSION);
        return 0;
    }
    if (!strcmp(cmd, "run"))
        return kvl_cli_run(argc - 1, argv + 1);
    if (!strcmp(cmd, "ppl"))
        return kvl_cli_ppl(argc - 1, argv + 1);
    if (!strcmp(cmd, "mkmodel"))
        return kvl_cli_mkmodel(argc - 1, argv + 1);
    if (!strcmp(cmd, "plan"))
        return kvl_cli_plan(argc - 1, argv + 1);
    if (!strcmp(cmd, "bench") && argc > 2 && !strcmp(argv[2], "serve"))
        return kvl_cli_bench_serve(argc - 2, argv + 2);
    if (!strcmp(cmd, "bench"))
        return kvl_cli_bench(argc - 1, argv + 1);
    if (!strcmp(cmd, "serve"))
        return kvl_cli_serve(argc - 1, argv + 1);
    if (!strcmp(cmd, "chat"))
        return kvl_cli_chat(argc - 1, argv + 1);
    if (!strcmp(cmd, "tokenize"))
        return kvl_cli_tokenize(argc - 1, argv + 1);
    if (!strcmp(cmd, "sim"))
        return kvl_cli_sim(argc - 1, argv + 1);
    fprintf(stderr, "kvllm: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
