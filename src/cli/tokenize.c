/*
 * kvllm tokenize: the ids a model's tokenizer gives a text, printed as
 * llama.cpp's llama-tokenize prints them, so the two can be compared byte
 * for byte:
 *
 *   default     one line per token: "%6d -> '<piece>'" (the piece's raw
 *               bytes; control tokens show their text)
 *   --ids       "[1, 2, 3]" and a newline
 *   --pieces    one line per token: id, a tab, the piece with bytes that
 *               are not printable ASCII written \xHH (and \\ for a backslash)
 *
 * Only the vocabulary is loaded (kvl_model_load_tokenizer): a GGUF's tensors
 * are never read, so vocabulary-only files work. The text is used as given
 * (llama-tokenize processes escapes like \n unless --no-escape). BOS/EOS are
 * added when the vocabulary asks for BOS and --no-bos is not given, as
 * llama-tokenize decides it. Control tokens written in the text are text
 * unless --parse-special (llama-tokenize of llama.cpp de3ff81 parses them
 * by default; its --no-parse-special matches kvllm's default).
 */
#include "cli/cli.h"
#include "cli/common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: kvllm tokenize [-m MODEL] (-p TEXT | -f FILE|-) [flags]\n"
        "\n"
        "Print the token ids of a text as llama.cpp's llama-tokenize does. Only the\n"
        "vocabulary is loaded: vocabulary-only GGUF files work.\n"
        "\n"
        "  -m, --model PATH     GGUF or llama2.c checkpoint (default: shipped stories260K.gguf)\n"
        "      --tokenizer PATH llama2.c tokenizer (default: beside the model)\n"
        "  -p, --prompt TEXT    the text, as given (no escape processing)\n"
        "  -f, --file PATH      read the text from a file ('-': stdin), byte for byte\n"
        "      --ids            print only the ids: [1, 2, 3]\n"
        "      --pieces         print id <TAB> piece per line (non-ASCII bytes as \\xHH)\n"
        "      --no-bos         do not add BOS (or EOS) even when the vocabulary asks\n"
        "      --parse-special  control tokens written in the text (<|im_start|>) become\n"
        "                       their ids; otherwise (default, or --no-parse-special)\n"
        "                       they are tokenized as text\n"
        "      --show-count     also print 'Total number of tokens: N'\n"
        "  -h, --help\n");
}

typedef struct tok_opts {
    const char *model, *tokenizer, *prompt, *file;
    bool ids, pieces, no_bos, parse_special, show_count;
} tok_opts;

/* 0 ok, 2 usage error (message printed), -1 help printed. */
static int parse(int argc, char **argv, tok_opts *o) {
    static const char *const valued[] = {"-m",       "--model", "--tokenizer", "-p",
                                         "--prompt", "-f",      "--file",      NULL};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return -1;
        }
        bool *flag = !strcmp(a, "--ids")             ? &o->ids
                     : !strcmp(a, "--pieces")        ? &o->pieces
                     : !strcmp(a, "--no-bos")        ? &o->no_bos
                     : !strcmp(a, "--parse-special") ? &o->parse_special
                     : !strcmp(a, "--show-count")    ? &o->show_count
                                                     : NULL;
        if (flag || !strcmp(a, "--no-parse-special")) {
            if (flag)
                *flag = true;
            else
                o->parse_special = false;
            continue;
        }
        if (!kvl_cli_flag_value("tokenize", valued, "the text goes after -p", argc, argv, &i, &v))
            return 2;
        if (!strcmp(a, "-m") || !strcmp(a, "--model"))
            o->model = v;
        else if (!strcmp(a, "--tokenizer"))
            o->tokenizer = v;
        else if (!strcmp(a, "-p") || !strcmp(a, "--prompt"))
            o->prompt = v;
        else
            o->file = v;
    }
    if (o->ids && o->pieces) {
        fprintf(stderr, "kvllm tokenize: --ids and --pieces both choose the output; use one\n");
        return 2;
    }
    if (!!o->prompt == !!o->file) {
        fprintf(stderr, "kvllm tokenize: %s\n",
                o->prompt ? "-p and -f both give the text; use one"
                          : "no text: give -p TEXT or -f FILE (-f - reads stdin)");
        return 2;
    }
    return 0;
}

/* A piece for --pieces: printable ASCII as is, anything else \xHH. */
static void put_escaped(const char *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '\\')
            fputs("\\\\", stdout);
        else if (c >= 0x20 && c < 0x7f)
            putchar(c);
        else
            printf("\\x%02x", c);
    }
}

static void print_ids(const tok_opts *o, const kvl_tokenizer *t, const int32_t *ids, size_t n) {
    if (o->ids) {
        putchar('[');
        for (size_t i = 0; i < n; i++)
            printf(i ? ", %d" : "%d", (int)ids[i]);
        puts("]");
    } else {
        for (size_t i = 0; i < n; i++) {
            size_t len;
            const char *p = kvl_tokenizer_piece_special(t, ids[i], &len);
            if (o->pieces) {
                printf("%d\t", (int)ids[i]);
                put_escaped(p, len);
                putchar('\n');
            } else {
                printf("%6d -> '", (int)ids[i]);
                fwrite(p, 1, len, stdout);
                puts("'");
            }
        }
    }
    if (o->show_count)
        printf("Total number of tokens: %zu\n", n);
}

int kvl_cli_tokenize(int argc, char **argv) {
    tok_opts o = {0};
    int r = parse(argc, argv, &o);
    if (r)
        return r < 0 ? 0 : r;
    kvl_cli_common c;
    kvl_cli_common_defaults(&c);
    c.model = o.model;
    const char *path = kvl_cli_model_path("tokenize", &c);
    if (!path)
        return 2;
    size_t len = 0;
    char *file_text = NULL;
    if (o.file && !(file_text = kvl_cli_read_text("tokenize", o.file, &len)))
        return 1;
    const char *text = file_text ? file_text : o.prompt;
    if (!file_text)
        len = strlen(text);

    kvl_error err = {0};
    kvl_tokenizer *t = NULL;
    kvl_model_params mp = {.tokenizer_path = o.tokenizer, .load = KVL_LOAD_MMAP};
    int rc = 1;
    if (kvl_model_load_tokenizer(path, &mp, &t, &err) != KVL_OK) {
        fprintf(stderr, "kvllm tokenize: %s\n", err.msg);
        goto out;
    }
    if (*kvl_tokenizer_note(t))
        fprintf(stderr, "kvllm tokenize: warning: %s\n", kvl_tokenizer_note(t));
    unsigned flags = (kvl_tokenizer_add_bos(t) && !o.no_bos ? KVL_TOKENIZE_ADD_SPECIAL : 0u) |
                     (o.parse_special ? KVL_TOKENIZE_PARSE_SPECIAL : 0u);
    size_t cap = 2 * len + 3, n = 0; /* the bound kvl_tokenizer_tokenize states */
    int32_t *ids = malloc(cap * sizeof *ids);
    if (!ids) {
        fprintf(stderr, "kvllm tokenize: no memory for %zu ids\n", cap);
        goto out;
    }
    if (kvl_tokenizer_tokenize(t, text, len, flags, ids, cap, &n, &err) != KVL_OK) {
        fprintf(stderr, "kvllm tokenize: %s\n", err.msg);
        free(ids);
        goto out;
    }
    print_ids(&o, t, ids, n);
    free(ids);
    rc = fflush(stdout) == 0 ? 0 : 1;
out:
    kvl_tokenizer_free(t);
    free(file_text);
    return rc;
}
