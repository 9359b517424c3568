/*
 * kvllm plan: the memory planner's front end. Parses flags, builds a
 * kvl_plan_request (named shape or GGUF file, devices, weight type, K/V
 * formats, block size, reserve), and prints what fits as text, JSON
 * (--json) and an SVG chart (--svg FILE).
 *
 * Invariants: every number printed comes from a kvl_plan_* function (the
 * same ones the engine's start-up report uses) and is formatted by
 * kvl_plan_fmt_*, so text, JSON and SVG agree. Bad flags and values exit 2
 * with a message naming the flag, the value and the accepted range; a file
 * that cannot be read exits 1; an answer of "does NOT fit" exits 3
 * (PLAN_EXIT_NO_FIT), so scripts can branch on it.
 *
 * Three stages: parse (flags -> opts), compute (opts -> a plan: request,
 * result, tables, the reverse question and its format ladder), render (the
 * plan as SVG, JSON or text). Rendering does no arithmetic beyond sums and
 * divisions for display.
 *
 * Must not: do capacity arithmetic of its own beyond summing for display,
 * exit() (it returns the code to main), or leave a file open.
 */
#include "cli/cli.h"
#include "plan/catalog.h"
#include "plan/planner.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CMD "plan"
#define MAX_ROWS 16
#define PLAN_EXIT_NO_FIT 3

static void usage(FILE *f) {
    fprintf(f,
            "usage: kvllm plan (--model NAME | -m FILE.gguf) (--device NAME[,NAME..] | --mem "
            "SIZE[,SIZE..]) [flags]\n"
            "\n"
            "How much KV cache fits, for how many users, at what context; and the reverse.\n"
            "\n"
            "  --model NAME        a named shape (--list-models)\n"
            "  -m FILE             a llama GGUF file: shape from its metadata, weight bytes from "
            "its tensors\n"
            "  --device NAME,..    named devices (--list-devices), e.g. H100-80GB or "
            "H100-80GB,A100-80GB\n"
            "  --mem SIZE,..       devices given by memory: 24GiB, 80GB (decimal), 1073741824\n"
            "  --devices N         N devices of the single --device/--mem given (1..%d)\n"
            "  --weights TYPE      " KVL_PLAN_WEIGHT_NAMES "\n"
            "                      (default f16; with -m: the file's own tensors; q4_k_m /\n"
            "                      q5_k_m: llama.cpp's mixes, as mkmodel writes them)\n"
            "  --kv-type X         K and V cache format: %s (default f16)\n"
            "  --kv-type-k X       K format only\n"
            "  --kv-type-v X       V format only\n"
            "  --block-size N      KV block size in tokens (1..%d, default 16, 32 when K is int4)\n"
            "  --reserve R         per device, for activations and runtime: 10%% (default) or "
            "2GiB\n"
            "  --context C         context per sequence, 1..%d (default: the model's)\n"
            "  --users N           concurrent sequences; with --context: memory needed and what "
            "fits\n"
            "  --json              machine-readable output\n"
            "  --svg FILE          memory vs context chart and a stacked bar, as SVG\n"
            "  --list-models       the named shapes and their sources\n"
            "  --list-devices      the named devices and the bytes used for each\n"
            "\n"
            "exit status: 0 it fits (or nothing was asked), 3 it does NOT fit (--users x\n"
            "--context over the memory, or the weights alone over it), 2 bad flags, 1 a file\n"
            "that cannot be read or written\n"
            "\n"
            "example: kvllm plan --model Llama-3-8B --device H100-80GB --users 32 --context "
            "8192\n",
            KVL_PLAN_MAX_DEVICES, kvl_kv_format_names(), KVL_MAX_BLOCK_SIZE, KVL_MAX_CTX);
}

static void list_models(void) {
    size_t n;
    const kvl_model_shape *s = kvl_catalog_shapes(&n);
    printf("%-16s %6s %6s %6s %5s %6s %6s %7s %7s  %s\n", "name", "layers", "heads", "kv_hd",
           "hdim", "dim", "ffn", "vocab", "context", "source");
    for (size_t i = 0; i < n; i++)
        printf("%-16s %6lld %6lld %6lld %5lld %6lld %6lld %7lld %7lld  %s%s\n", s[i].name,
               (long long)s[i].hp.n_layers, (long long)s[i].hp.n_heads,
               (long long)s[i].hp.n_kv_heads, (long long)s[i].hp.head_dim, (long long)s[i].hp.dim,
               (long long)s[i].hp.ffn_dim, (long long)s[i].hp.n_vocab, (long long)s[i].hp.ctx_len,
               s[i].source, s[i].tied_embd ? " (tied embeddings)" : "");
}

static void list_devices(void) {
    size_t n;
    char a[48], g[32];
    const kvl_catalog_device *d = kvl_catalog_devices(&n);
    printf("%-14s %18s %11s %8s %11s  %s\n", "name", "bytes", "GiB", "GB/s", "bf16 TFLOP/s",
           "source");
    for (size_t i = 0; i < n; i++)
        printf("%-14s %18s %11s %8.0f %11.1f  %s; %s\n", d[i].name,
               kvl_plan_fmt_int(d[i].bytes, a, sizeof a), kvl_plan_fmt_gib(d[i].bytes, g, sizeof g),
               d[i].bandwidth / 1e9, d[i].flops_bf16 / 1e12, d[i].source, d[i].spec_source);
}

/* Everything the flags say. */
typedef struct {
    const char *model, *file, *device, *mem, *svg, *reserve;
    long long n_devices; /* 0: not given */
    bool have_w, json, list_models, list_devices;
    kvl_type wtype;
    bool k_m; /* --weights q4_k_m / q5_k_m */
    kvl_kv_format k, v;
    long long block;
    long long context, users; /* 0: not given */
} opts;

static bool parse_fmt(const char *flag, const char *s, kvl_kv_format *out) {
    if (kvl_kv_format_parse(s, out))
        return true;
    fprintf(stderr, "kvllm plan: %s: unknown KV format '%s' (use %s)\n", flag, s,
            kvl_kv_format_names());
    return false;
}

/* 0 ok, 2 usage error, -1 --help */
static int parse(int argc, char **argv, opts *o) {
    *o = (opts){.wtype = KVL_TYPE_F16, .k = KVL_KV_FMT_F16, .v = KVL_KV_FMT_F16, .block = 0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h"))
            return -1;
        else if (!strcmp(a, "--json"))
            o->json = true;
        else if (!strcmp(a, "--list-models"))
            o->list_models = true;
        else if (!strcmp(a, "--list-devices"))
            o->list_devices = true;
        else if (!strcmp(a, "--model")) {
            if (!kvl_cli_value(CMD, argc, argv, &i, &o->model))
                return 2;
        } else if (!strcmp(a, "-m")) {
            if (!kvl_cli_value(CMD, argc, argv, &i, &o->file))
                return 2;
        } else if (!strcmp(a, "--device")) {
            if (!kvl_cli_value(CMD, argc, argv, &i, &o->device))
                return 2;
        } else if (!strcmp(a, "--mem")) {
            if (!kvl_cli_value(CMD, argc, argv, &i, &o->mem))
                return 2;
        } else if (!strcmp(a, "--svg")) {
            if (!kvl_cli_value(CMD, argc, argv, &i, &o->svg))
                return 2;
        } else if (!strcmp(a, "--reserve")) {
            if (!kvl_cli_value(CMD, argc, argv, &i, &o->reserve))
                return 2;
        } else if (!strcmp(a, "--devices")) {
            if (!kvl_cli_value(CMD, argc, argv, &i, &v) ||
                !kvl_cli_int(CMD, a, v, 1, KVL_PLAN_MAX_DEVICES, &o->n_devices))
                return 2;
        } else if (!strcmp(a, "--block-size")) {
            if (!kvl_cli_value(CMD, argc, argv, &i, &v) ||
                !kvl_cli_int(CMD, a, v, 1, KVL_MAX_BLOCK_SIZE, &o->block))
                return 2;
        } else if (!strcmp(a, "--context")) {
            if (!kvl_cli_value(CMD, argc, argv, &i, &v) ||
                !kvl_cli_int(CMD, a, v, 1, KVL_MAX_CTX, &o->context))
                return 2;
        } else if (!strcmp(a, "--users")) {
            if (!kvl_cli_value(CMD, argc, argv, &i, &v) ||
                !kvl_cli_int(CMD, a, v, 1, 1LL << 24, &o->users))
                return 2;
        } else if (!strcmp(a, "--weights")) {
            if (!kvl_cli_value(CMD, argc, argv, &i, &v))
                return 2;
            if (!kvl_plan_parse_weights(v, &o->wtype, &o->k_m)) {
                fprintf(
                    stderr,
                    "kvllm plan: --weights: unknown weight type '%s' (use " KVL_PLAN_WEIGHT_NAMES
                    ")\n",
                    v);
                return 2;
            }
            o->have_w = true;
        } else if (!strcmp(a, "--kv-type")) {
            if (!kvl_cli_value(CMD, argc, argv, &i, &v) || !parse_fmt(a, v, &o->k))
                return 2;
            o->v = o->k;
        } else if (!strcmp(a, "--kv-type-k")) {
            if (!kvl_cli_value(CMD, argc, argv, &i, &v) || !parse_fmt(a, v, &o->k))
                return 2;
        } else if (!strcmp(a, "--kv-type-v")) {
            if (!kvl_cli_value(CMD, argc, argv, &i, &v) || !parse_fmt(a, v, &o->v))
                return 2;
        } else {
            fprintf(stderr, "kvllm plan: unknown flag '%s' (kvllm plan --help lists them)\n", a);
            return 2;
        }
    }
    return 0;
}

/* Fill r->dev_bytes and names from --device / --mem / --devices. */
static int parse_devices(const opts *o, kvl_plan_request *r, const char **names) {
    if (o->device && o->mem) {
        fprintf(stderr, "kvllm plan: --device and --mem: give one of them, not both\n");
        return 2;
    }
    const char *list = o->device ? o->device : o->mem;
    const char *flag = o->device ? "--device" : "--mem";
    if (!list) {
        fprintf(stderr, "kvllm plan: no memory given: use --device NAME (--list-devices) or "
                        "--mem SIZE\n");
        return 2;
    }
    char buf[1024];
    if (strlen(list) >= sizeof buf) {
        fprintf(stderr, "kvllm plan: %s: list longer than %zu characters\n", flag, sizeof buf - 1);
        return 2;
    }
    strcpy(buf, list);
    int n = 0;
    char *save = NULL;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (n >= KVL_PLAN_MAX_DEVICES) {
            fprintf(stderr, "kvllm plan: %s: more than %d devices\n", flag, KVL_PLAN_MAX_DEVICES);
            return 2;
        }
        if (o->device) {
            const kvl_catalog_device *d = kvl_catalog_device_find(t);
            if (!d) {
                fprintf(stderr,
                        "kvllm plan: --device: unknown device '%s' (kvllm plan "
                        "--list-devices; or --mem SIZE)\n",
                        t);
                return 2;
            }
            r->dev_bytes[n] = d->bytes;
            names[n] = d->name;
        } else {
            uint64_t b;
            if (!kvl_cli_bytes(CMD, "--mem", t, &b))
                return 2;
            if (b == 0 || b > (uint64_t)1 << 50) {
                fprintf(stderr, "kvllm plan: --mem: '%s' is outside [1 B, 1 PiB]\n", t);
                return 2;
            }
            r->dev_bytes[n] = (size_t)b;
            names[n] = NULL;
        }
        n++;
    }
    if (n == 0) {
        fprintf(stderr, "kvllm plan: %s: '%s' names no device\n", flag, list);
        return 2;
    }
    if (o->n_devices) {
        if (n != 1 && n != o->n_devices) {
            fprintf(stderr,
                    "kvllm plan: --devices %lld: %s lists %d devices; give one device "
                    "with --devices, or a list\n",
                    o->n_devices, flag, n);
            return 2;
        }
        for (int i = 1; i < o->n_devices; i++) {
            r->dev_bytes[i] = r->dev_bytes[0];
            names[i] = names[0];
        }
        n = (int)o->n_devices;
    }
    r->n_devices = n;
    return 0;
}

static int parse_reserve(const char *s, kvl_plan_request *r) {
    r->reserve_frac = 0.10;
    r->reserve_bytes = 0;
    if (!s)
        return 0;
    size_t len = strlen(s);
    if (len > 0 && s[len - 1] == '%') {
        char num[64];
        double pct;
        if (len - 1 >= sizeof num) {
            fprintf(stderr, "kvllm plan: --reserve: '%s' is not a percentage\n", s);
            return 2;
        }
        memcpy(num, s, len - 1);
        num[len - 1] = 0;
        if (!kvl_cli_float(CMD, "--reserve", num, 0.0, 99.0, &pct))
            return 2;
        r->reserve_frac = pct / 100.0;
        return 0;
    }
    uint64_t b;
    if (!kvl_cli_bytes(CMD, "--reserve", s, &b))
        return 2;
    r->reserve_frac = 0;
    r->reserve_bytes = (size_t)b;
    return 0;
}

/* ---- compute ----------------------------------------------------------- */

typedef struct {
    size_t ctx[MAX_ROWS];
    int n_ctx;
    size_t batch[KVL_PLAN_SVG_MAX_BATCH];
    int n_batch;
} tables;

/* Everything the renderers show, computed once. */
typedef struct {
    const opts *o;
    kvl_plan_request r;
    const char *dev_names[KVL_PLAN_MAX_DEVICES]; /* NULL for --mem devices */
    char devdesc[160];
    const char *wlabel;
    kvl_plan_result res;
    size_t hk, hv;    /* K and V bytes per (head, block) */
    double tok_bytes; /* block_bytes / block_size */
    size_t context;   /* --context or the model's */
    size_t users;     /* --users, 0 when not given */
    size_t max_seqs;  /* at context */
    tables t;
    bool reverse; /* --users and --context: the reverse question */
    kvl_plan_need need;
    /* the formats asked for, then the ladder (each pair once) */
    int n_f;
    kvl_plan_need fneed[KVL_PLAN_N_LADDER + 1];
    kvl_kv_format fk[KVL_PLAN_N_LADDER + 1], fv[KVL_PLAN_N_LADDER + 1];
    size_t fbb[KVL_PLAN_N_LADDER + 1];
    bool sug;
    kvl_kv_format sk, sv;
    size_t kv_bar;
    char kv_bar_label[64];
} plan;

static const char *fmt_name(kvl_kv_format f) { return kvl_kv_format_name(f); }

/* Insert v into the sorted array a of *n (capacity cap) unless present. */
static void insert_sorted(size_t *a, int *n, int cap, size_t v) {
    int i = 0;
    while (i < *n && a[i] < v)
        i++;
    if ((i < *n && a[i] == v) || *n >= cap)
        return;
    memmove(a + i + 1, a + i, (size_t)(*n - i) * sizeof *a);
    a[i] = v;
    (*n)++;
}

/* Trade-off rows: ten halvings of the longest context (the model's or the
 * one asked for) down to 128 tokens, plus the context asked for; users: 1, 4, 16, 64 and the
 * number asked for. */
static void make_tables(const kvl_plan_request *r, size_t context, size_t users, tables *t) {
    size_t top = (size_t)r->shape.hp.ctx_len > context ? (size_t)r->shape.hp.ctx_len : context;
    t->n_ctx = 0;
    for (int k = 9; k >= 0; k--)
        if (top >> k >= (top < 128 ? 1 : 128))
            insert_sorted(t->ctx, &t->n_ctx, MAX_ROWS, top >> k);
    insert_sorted(t->ctx, &t->n_ctx, MAX_ROWS, context);
    static const size_t base[] = {1, 4, 16, 64};
    t->n_batch = 0;
    for (size_t i = 0; i < 4; i++)
        insert_sorted(t->batch, &t->n_batch, KVL_PLAN_SVG_MAX_BATCH, base[i]);
    if (users)
        insert_sorted(t->batch, &t->n_batch, KVL_PLAN_SVG_MAX_BATCH, users);
}

/* The shape (named or from -m) and the weight bytes. */
static int load_shape(const opts *o, plan *p) {
    kvl_error err;
    kvl_plan_request *r = &p->r;
    if (o->model) {
        const kvl_model_shape *s = kvl_catalog_shape_find(o->model);
        if (!s) {
            fprintf(stderr,
                    "kvllm plan: --model: unknown model '%s' (kvllm plan "
                    "--list-models; or -m FILE.gguf)\n",
                    o->model);
            return 2;
        }
        r->shape = *s;
    } else {
        kvl_gguf *g = NULL;
        if (kvl_gguf_open(o->file, &g, &err) != KVL_OK) {
            fprintf(stderr, "kvllm plan: -m: %s\n", err.msg);
            return 1;
        }
        const char *base = strrchr(o->file, '/');
        snprintf(r->shape.name, sizeof r->shape.name, "%s", base ? base + 1 : o->file);
        kvl_status st = kvl_plan_shape_from_gguf(g, &r->shape, &r->weight_bytes, &err);
        kvl_gguf_free(g);
        if (st) {
            fprintf(stderr, "kvllm plan: -m %s: %s\n", o->file, err.msg);
            return 1;
        }
    }
    p->wlabel = "as stored in the file";
    if (o->model || o->have_w) {
        if (kvl_plan_weight_bytes_mix(&r->shape, o->wtype, o->k_m, &r->weight_bytes, &err)) {
            fprintf(stderr, "kvllm plan: %s\n", err.msg);
            return 1;
        }
        static char label[16];
        snprintf(label, sizeof label, "%s%s", kvl_type_name(o->wtype), o->k_m ? "_m" : "");
        p->wlabel = label;
    }
    return 0;
}

/* "1 x H100-80GB", "2 x 24.00 GiB" or "3 devices". */
static void describe_devices(plan *p) {
    const kvl_plan_request *r = &p->r;
    const char *const *nm = p->dev_names;
    char a[48];
    bool same = true;
    for (int i = 1; i < r->n_devices; i++)
        same = same && r->dev_bytes[i] == r->dev_bytes[0] &&
               ((!nm[i] && !nm[0]) || (nm[i] && nm[0] && !strcmp(nm[i], nm[0])));
    if (same)
        snprintf(p->devdesc, sizeof p->devdesc, "%d x %s", r->n_devices,
                 nm[0] ? nm[0] : kvl_plan_fmt_gib(r->dev_bytes[0], a, sizeof a));
    else
        snprintf(p->devdesc, sizeof p->devdesc, "%d devices", r->n_devices);
}

/* The reverse question: the formats asked for, then each other pair of the
 * ladder, and the suggestion. */
static int compute_need(plan *p) {
    kvl_error err;
    const kvl_plan_request *r = &p->r;
    if (kvl_plan_need_for(r, p->users, p->context, &p->need, &err)) {
        fprintf(stderr, "kvllm plan: %s\n", err.msg);
        return 2;
    }
    p->n_f = 0;
    for (int i = -1; i < KVL_PLAN_N_LADDER; i++) {
        kvl_plan_request q = *r;
        if (i >= 0) {
            kvl_plan_format_ladder(i, &q.k_fmt, &q.v_fmt);
            if (q.k_fmt == r->k_fmt && q.v_fmt == r->v_fmt)
                continue;
        }
        int n = p->n_f;
        if (kvl_plan_need_for(&q, p->users, p->context, &p->fneed[n], &err) ||
            kvl_plan_kv_block_bytes(&q.shape, q.k_fmt, q.v_fmt, q.block_size, &p->fbb[n], &err)) {
            fprintf(stderr, "kvllm plan: %s\n", err.msg);
            return 2;
        }
        p->fk[n] = q.k_fmt;
        p->fv[n] = q.v_fmt;
        p->n_f++;
    }
    p->sk = p->sv = KVL_KV_FMT_F16;
    p->sug = kvl_plan_suggest_format(r, p->users, p->context, &p->sk, &p->sv);
    return 0;
}

/* opts -> plan. Returns 0 or the exit status after printing why. */
static int compute(const opts *o, plan *p) {
    memset(p, 0, sizeof *p);
    p->o = o;
    kvl_plan_request *r = &p->r;
    int rc;
    if ((rc = parse_devices(o, r, p->dev_names)) || (rc = parse_reserve(o->reserve, r)))
        return rc;
    r->k_fmt = o->k;
    r->v_fmt = o->v;
    r->block_size = kvl_kv_block_size((int)o->block, o->k, o->v);
    if ((rc = load_shape(o, p)))
        return rc;
    char a[48], b[48];
    for (int i = 0; i < r->n_devices; i++) {
        size_t res_b = kvl_plan_device_reserve(r, r->dev_bytes[i]);
        if (res_b >= r->dev_bytes[i]) {
            fprintf(stderr,
                    "kvllm plan: --reserve: %s per device is %s B, not below the %s B of "
                    "device %d\n",
                    o->reserve ? o->reserve : "10%", kvl_plan_fmt_int(res_b, a, sizeof a),
                    kvl_plan_fmt_int(r->dev_bytes[i], b, sizeof b), i);
            return 2;
        }
    }
    kvl_error err;
    if (kvl_plan_compute(r, &p->res, &err)) {
        fprintf(stderr, "kvllm %s\n", err.msg);
        return 2; /* only the flags can make a request invalid here */
    }
    p->context = o->context ? (size_t)o->context : (size_t)r->shape.hp.ctx_len;
    p->users = (size_t)o->users;
    make_tables(r, p->context, p->users, &p->t);
    p->reverse = o->users && o->context;
    if (p->reverse && (rc = compute_need(p)))
        return rc;
    p->kv_bar = p->reverse ? p->need.kv_bytes : p->res.cap.n_blocks * p->res.cap.block_bytes;
    if (p->reverse)
        snprintf(p->kv_bar_label, sizeof p->kv_bar_label, "KV %zu x %zu tok", p->users, p->context);
    else
        snprintf(p->kv_bar_label, sizeof p->kv_bar_label, "KV (full capacity)");
    describe_devices(p);
    /* head_dim and block size were validated by kvl_plan_compute */
    kvl_plan_kv_head_block_bytes(r->k_fmt, KVL_KV_ROLE_K, r->shape.hp.head_dim, r->block_size,
                                 &p->hk, NULL);
    kvl_plan_kv_head_block_bytes(r->v_fmt, KVL_KV_ROLE_V, r->shape.hp.head_dim, r->block_size,
                                 &p->hv, NULL);
    p->tok_bytes = (double)p->res.cap.block_bytes / r->block_size;
    p->max_seqs = kvl_plan_max_seqs(&p->res.cap, p->context);
    return 0;
}

/* The answer to the question asked: does NOT fit when the reverse question
 * fails, or when the weights alone exceed the usable memory. */
static bool plan_fits(const plan *p) { return p->res.weights_fit && (!p->reverse || p->need.fits); }

/* ---- render: SVG ------------------------------------------------------- */

static int render_svg(const plan *p, const char *path) {
    const kvl_plan_request *r = &p->r;
    kvl_plan_svg in = {.req = r,
                       .res = &p->res,
                       .ctx_max = p->t.ctx[p->t.n_ctx - 1],
                       .kv_bar = p->kv_bar,
                       .kv_bar_label = p->kv_bar_label};
    char title[512];
    snprintf(title, sizeof title, "%s on %s: weights %s, K %s / V %s, block %d", r->shape.name,
             p->devdesc, p->o->model || p->o->have_w ? p->wlabel : "from file", fmt_name(r->k_fmt),
             fmt_name(r->v_fmt), r->block_size);
    in.title = title;
    in.n_batch = p->t.n_batch;
    memcpy(in.batch, p->t.batch, sizeof p->t.batch);
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "kvllm plan: --svg: cannot write '%s': %s\n", path, strerror(errno));
        return 1;
    }
    kvl_error err;
    kvl_status st = kvl_plan_svg_write(f, &in, &err);
    if (fclose(f) != 0 && !st)
        st = kvl_errorf(&err, KVL_E_IO, "plan: svg: closing '%s' failed", path);
    if (st) {
        fprintf(stderr, "kvllm plan: --svg %s: %s\n", path, err.msg);
        return 1;
    }
    return 0;
}

/* ---- render: JSON ------------------------------------------------------ */

static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static const char *jbool(bool b) { return b ? "true" : "false"; }

/* "model", "weights", "devices" and the memory totals. */
static void json_head(FILE *f, const plan *p) {
    const kvl_plan_request *r = &p->r;
    const kvl_model_shape *s = &r->shape;
    fprintf(f, "{\n  \"model\": {\"name\": ");
    json_str(f, s->name);
    fprintf(f, ", \"source\": ");
    json_str(f, s->source ? s->source : p->o->file);
    fprintf(f,
            ", \"n_layers\": %lld, \"n_heads\": %lld, \"n_kv_heads\": %lld, \"head_dim\": "
            "%lld, \"dim\": %lld, \"ffn_dim\": %lld, \"n_vocab\": %lld, \"ctx_len\": %lld, "
            "\"tied_embd\": %s, \"qkv_bias\": %s},\n",
            (long long)s->hp.n_layers, (long long)s->hp.n_heads, (long long)s->hp.n_kv_heads,
            (long long)s->hp.head_dim, (long long)s->hp.dim, (long long)s->hp.ffn_dim,
            (long long)s->hp.n_vocab, (long long)s->hp.ctx_len, jbool(s->tied_embd),
            jbool(s->qkv_bias));
    fprintf(f, "  \"weights\": {\"type\": ");
    json_str(f, p->o->model || p->o->have_w ? p->wlabel : "file");
    fprintf(f, ", \"bytes\": %zu},\n  \"devices\": [", r->weight_bytes);
    for (int i = 0; i < r->n_devices; i++) {
        fprintf(f, "%s{\"name\": ", i ? ", " : "");
        json_str(f, p->dev_names[i] ? p->dev_names[i] : "mem");
        fprintf(f, ", \"bytes\": %zu, \"reserve\": %zu}", r->dev_bytes[i],
                kvl_plan_device_reserve(r, r->dev_bytes[i]));
    }
    const kvl_plan_result *res = &p->res;
    fprintf(f,
            "],\n  \"mem_total\": %zu, \"reserve_total\": %zu, \"usable\": %zu, "
            "\"weights_fit\": %s, \"kv_budget\": %zu,\n",
            res->mem_total, res->reserve_total, res->usable, jbool(res->weights_fit),
            res->kv_budget);
}

/* "need": the reverse question and the format ladder. */
static void json_need(FILE *f, const plan *p) {
    const kvl_plan_need *n = &p->need;
    fprintf(f,
            ",\n  \"need\": {\"users\": %zu, \"context\": %zu, \"kv_bytes\": %zu, "
            "\"total_bytes\": %zu, \"fits\": %s, \"short_by\": %zu, \"max_seqs\": %zu, "
            "\"max_context\": %zu, \"devices_needed\": %d,\n    \"formats\": [",
            p->users, p->context, n->kv_bytes, n->total_bytes, jbool(n->fits), n->short_by,
            n->max_seqs, n->max_context, n->devices_needed);
    for (int i = 0; i < p->n_f; i++)
        fprintf(f,
                "%s\n      {\"k\": \"%s\", \"v\": \"%s\", \"bytes_per_token\": %.4f, "
                "\"kv_bytes\": %zu, \"total_bytes\": %zu, \"fits\": %s, \"max_seqs\": "
                "%zu, \"max_context\": %zu}",
                i ? "," : "", fmt_name(p->fk[i]), fmt_name(p->fv[i]),
                (double)p->fbb[i] / p->r.block_size, p->fneed[i].kv_bytes, p->fneed[i].total_bytes,
                jbool(p->fneed[i].fits), p->fneed[i].max_seqs, p->fneed[i].max_context);
    fprintf(f, "],\n    \"suggested_format\": ");
    if (p->sug)
        fprintf(f, "{\"k\": \"%s\", \"v\": \"%s\"}", fmt_name(p->sk), fmt_name(p->sv));
    else
        fprintf(f, "null");
    fprintf(f, "}");
}

static void render_json(FILE *f, const plan *p) {
    const kvl_plan_request *r = &p->r;
    const kvl_plan_capacity *cap = &p->res.cap;
    size_t ctx_len = (size_t)r->shape.hp.ctx_len;
    json_head(f, p);
    fprintf(f,
            "  \"kv\": {\"k\": \"%s\", \"v\": \"%s\", \"block_size\": %d, "
            "\"k_head_block_bytes\": %zu, \"v_head_block_bytes\": %zu, \"block_bytes\": %zu, "
            "\"bytes_per_token\": %.4f},\n",
            fmt_name(r->k_fmt), fmt_name(r->v_fmt), r->block_size, p->hk, p->hv, cap->block_bytes,
            p->tok_bytes);
    fprintf(f, "  \"capacity\": {\"blocks\": %zu, \"tokens\": %zu},\n", cap->n_blocks,
            cap->n_tokens);
    fprintf(f, "  \"context\": %zu, \"over_model_context\": %s, \"max_seqs_at_context\": %zu,\n",
            p->context, jbool(p->context > ctx_len), p->max_seqs);
    fprintf(f, "  \"longest_context\": [");
    for (int i = 0; i < p->t.n_batch; i++) {
        size_t mc = kvl_plan_max_context(cap, p->t.batch[i]);
        fprintf(f, "%s{\"users\": %zu, \"tokens\": %zu, \"over_model_context\": %s}", i ? ", " : "",
                p->t.batch[i], mc, jbool(mc > ctx_len));
    }
    fprintf(f, "],\n  \"tradeoff\": [");
    for (int i = 0; i < p->t.n_ctx; i++) {
        size_t nb = kvl_plan_blocks_for_tokens(p->t.ctx[i], r->block_size);
        fprintf(f,
                "%s\n    {\"context\": %zu, \"blocks_per_seq\": %zu, \"kv_bytes_per_seq\": "
                "%zu, \"max_seqs\": %zu, \"over_model_context\": %s}",
                i ? "," : "", p->t.ctx[i], nb, nb * cap->block_bytes,
                kvl_plan_max_seqs(cap, p->t.ctx[i]), jbool(p->t.ctx[i] > ctx_len));
    }
    fprintf(f, "\n  ]");
    if (p->reverse)
        json_need(f, p);
    fprintf(f, ",\n  \"fits\": %s\n}\n", jbool(plan_fits(p)));
}

/* ---- render: text ------------------------------------------------------ */

#define TBL_COLS 7
#define TBL_ROWS 16
#define TBL_CELL 40

/* A text table whose columns widen to their longest cell, so the largest
 * accepted values (--context 16,777,216, a petabyte of devices) stay
 * aligned; below that it prints exactly at the minimum widths. */
typedef struct {
    int n_cols, n_rows;
    const char *head[TBL_COLS];
    int min_w[TBL_COLS]; /* < 0: left-aligned, |min_w| wide */
    char cell[TBL_ROWS][TBL_COLS][TBL_CELL];
    const char *note[TBL_ROWS]; /* printed after the row, or NULL */
} tbl;

static void tbl_print(const tbl *t) {
    int w[TBL_COLS];
    for (int c = 0; c < t->n_cols; c++) {
        w[c] = abs(t->min_w[c]);
        if ((int)strlen(t->head[c]) > w[c])
            w[c] = (int)strlen(t->head[c]);
        for (int i = 0; i < t->n_rows; i++)
            if ((int)strlen(t->cell[i][c]) > w[c])
                w[c] = (int)strlen(t->cell[i][c]);
    }
    for (int i = -1; i < t->n_rows; i++) {
        for (int c = 0; c < t->n_cols; c++) {
            const char *v = i < 0 ? t->head[c] : t->cell[i][c];
            printf(t->min_w[c] < 0 ? "%s%-*s" : "%s%*s", c ? " " : "", w[c], v);
        }
        printf("%s\n", i >= 0 && t->note[i] ? t->note[i] : "");
    }
}

/* model, weights, memory, reserve, KV budget */
static void text_memory(const plan *p) {
    const kvl_plan_request *r = &p->r;
    const kvl_plan_result *res = &p->res;
    const kvl_model_shape *s = &r->shape;
    char a[48], b[48], c[48], d[48];
    printf("model      %s: %lld layers, %lld heads, %lld KV heads", s->name,
           (long long)s->hp.n_layers, (long long)s->hp.n_heads, (long long)s->hp.n_kv_heads);
    if (s->hp.n_kv_heads == s->hp.n_heads)
        printf(" (MHA)");
    else if (s->hp.n_kv_heads == 1)
        printf(" (MQA)");
    else
        printf(" (GQA %lld:1)", (long long)(s->hp.n_heads / s->hp.n_kv_heads));
    printf(", head_dim %lld, dim %lld, ffn %lld, vocab %lld, context %lld\n",
           (long long)s->hp.head_dim, (long long)s->hp.dim, (long long)s->hp.ffn_dim,
           (long long)s->hp.n_vocab, (long long)s->hp.ctx_len);
    printf("           source: %s\n", s->source ? s->source : p->o->file);
    if (p->o->model || p->o->have_w) {
        size_t np = 0;
        kvl_plan_n_params(s, &np, NULL);
        printf("weights    %s: %s params -> %s B (%s)\n", p->wlabel,
               kvl_plan_fmt_int(np, a, sizeof a), kvl_plan_fmt_int(r->weight_bytes, b, sizeof b),
               kvl_plan_fmt_gib(r->weight_bytes, c, sizeof c));
    } else {
        printf("weights    %s: %s B (%s)\n", p->wlabel,
               kvl_plan_fmt_int(r->weight_bytes, b, sizeof b),
               kvl_plan_fmt_gib(r->weight_bytes, c, sizeof c));
    }
    printf("memory     %s = %s B (%s)\n", p->devdesc, kvl_plan_fmt_int(res->mem_total, a, sizeof a),
           kvl_plan_fmt_gib(res->mem_total, b, sizeof b));
    if (r->reserve_bytes)
        printf("reserve    %s B per device = %s B (%s)\n",
               kvl_plan_fmt_int(r->reserve_bytes, d, sizeof d),
               kvl_plan_fmt_int(res->reserve_total, a, sizeof a),
               kvl_plan_fmt_gib(res->reserve_total, b, sizeof b));
    else
        printf("reserve    %g%% per device = %s B (%s)\n", r->reserve_frac * 100.0,
               kvl_plan_fmt_int(res->reserve_total, a, sizeof a),
               kvl_plan_fmt_gib(res->reserve_total, b, sizeof b));
    if (res->weights_fit)
        printf("KV budget  memory - weights - reserve = %s B (%s)\n",
               kvl_plan_fmt_int(res->kv_budget, a, sizeof a),
               kvl_plan_fmt_gib(res->kv_budget, b, sizeof b));
    else
        printf("KV budget  0: weights %s + reserve %s exceed memory %s\n",
               kvl_plan_fmt_gib(r->weight_bytes, a, sizeof a),
               kvl_plan_fmt_gib(res->reserve_total, b, sizeof b),
               kvl_plan_fmt_gib(res->mem_total, c, sizeof c));
}

/* Describe one (head, block) of format f in role r: "16 x 128 x 1 B + 16 x 4 B scales". */
static void head_block_desc(kvl_kv_format f, kvl_kv_role role, const kvl_plan_request *r, char *buf,
                            size_t n) {
    const kvl_kv_format_info *fi = kvl_kv_format_get(f);
    const kvl_kv_overhead *o = &fi->ovh[role];
    int B = r->block_size;
    long long D = (long long)r->shape.hp.head_dim;
    int w = fi->elem_bits >= 8
                ? snprintf(buf, n, "%d tok x %lld dims x %u B", B, D, fi->elem_bits / 8)
                : snprintf(buf, n, "%d tok x %lld dims x %u/8 B", B, D, fi->elem_bits);
    if (w < 0 || (size_t)w >= n)
        return;
    if (o->head_block)
        snprintf(buf + w, n - (size_t)w, " + %u B scale", o->head_block);
    else if (o->token)
        snprintf(buf + w, n - (size_t)w, " + %d tok x %u B scale/zero", B, o->token);
    else if (o->channel)
        snprintf(buf + w, n - (size_t)w, " + %lld dims x %u B scale/zero", D, o->channel);
}

#define OVER_CTX "  (over the model's context)"

/* the KV block, capacity, and the context and users tables */
static void text_kv(const plan *p) {
    const kvl_plan_request *r = &p->r;
    const kvl_plan_capacity *cap = &p->res.cap;
    const kvl_model_shape *s = &r->shape;
    size_t ctx_len = (size_t)s->hp.ctx_len;
    char a[48], b[48], c[48], desc[128];
    printf("\nKV cache   K %s, V %s, blocks of %d tokens\n", fmt_name(r->k_fmt), fmt_name(r->v_fmt),
           r->block_size);
    head_block_desc(r->k_fmt, KVL_KV_ROLE_K, r, desc, sizeof desc);
    printf("  K per head per block: %s = %zu B\n", desc, p->hk);
    head_block_desc(r->v_fmt, KVL_KV_ROLE_V, r, desc, sizeof desc);
    printf("  V per head per block: %s = %zu B\n", desc, p->hv);
    printf("  block: %lld layers x %lld KV heads x (%zu + %zu) B = %s B\n",
           (long long)s->hp.n_layers, (long long)s->hp.n_kv_heads, p->hk, p->hv,
           kvl_plan_fmt_int(cap->block_bytes, a, sizeof a));
    printf("  per token: %s B / %d = %.2f B", a, r->block_size, p->tok_bytes);
    unsigned bits = kvl_kv_format_get(r->k_fmt)->elem_bits;
    if (p->hk % (size_t)r->block_size == 0 && p->hv % (size_t)r->block_size == 0 &&
        r->k_fmt == r->v_fmt && bits >= 16)
        printf("  (= 2 x %lld x %lld x %lld x %u B)", (long long)s->hp.n_layers,
               (long long)s->hp.n_kv_heads, (long long)s->hp.head_dim, bits / 8);
    printf("\n");
    printf("KV capacity %s blocks x %d = %s tokens\n", kvl_plan_fmt_int(cap->n_blocks, a, sizeof a),
           r->block_size, kvl_plan_fmt_int(cap->n_tokens, b, sizeof b));
    printf("at context %s: %s concurrent sequences (%s blocks each)%s\n",
           kvl_plan_fmt_int(p->context, a, sizeof a), kvl_plan_fmt_int(p->max_seqs, b, sizeof b),
           kvl_plan_fmt_int(kvl_plan_blocks_for_tokens(p->context, r->block_size), c, sizeof c),
           p->context > ctx_len ? OVER_CTX : "");

    tbl t = {.n_cols = 4,
             .head = {"context", "blocks/seq", "KV/seq MiB", "max seqs"},
             .min_w = {10, 12, 14, 12}};
    for (int i = 0; i < p->t.n_ctx; i++) {
        size_t nb = kvl_plan_blocks_for_tokens(p->t.ctx[i], r->block_size);
        kvl_plan_fmt_int(p->t.ctx[i], t.cell[i][0], TBL_CELL);
        kvl_plan_fmt_int(nb, t.cell[i][1], TBL_CELL);
        snprintf(t.cell[i][2], TBL_CELL, "%.2f", (double)nb * (double)cap->block_bytes / 1048576.0);
        kvl_plan_fmt_int(kvl_plan_max_seqs(cap, p->t.ctx[i]), t.cell[i][3], TBL_CELL);
        t.note[i] = p->t.ctx[i] > ctx_len ? OVER_CTX : NULL;
    }
    t.n_rows = p->t.n_ctx;
    printf("\n");
    tbl_print(&t);

    tbl u = {.n_cols = 2, .head = {"users", "longest context"}, .min_w = {10, 16}};
    for (int i = 0; i < p->t.n_batch; i++) {
        size_t mc = kvl_plan_max_context(cap, p->t.batch[i]);
        kvl_plan_fmt_int(p->t.batch[i], u.cell[i][0], TBL_CELL);
        kvl_plan_fmt_int(mc, u.cell[i][1], TBL_CELL);
        u.note[i] = mc > ctx_len ? OVER_CTX : NULL;
    }
    u.n_rows = p->t.n_batch;
    printf("\n");
    tbl_print(&u);
}

/* what would make it fit (the reverse question failed) */
static void text_remedies(const plan *p) {
    const kvl_plan_request *r = &p->r;
    const kvl_plan_need *need = &p->need;
    char a[48], b[48];
    printf("\nto make it fit:\n");
    if (p->sug)
        printf("  KV format:    --kv-type-k %s --kv-type-v %s\n", fmt_name(p->sk), fmt_name(p->sv));
    else
        printf("  KV format:    none of the listed formats is enough alone\n");
    if (!p->res.weights_fit)
        printf("  the weights alone (%s) exceed the usable memory (%s)\n",
               kvl_plan_fmt_gib(r->weight_bytes, a, sizeof a),
               kvl_plan_fmt_gib(p->res.usable, b, sizeof b));
    printf("  fewer users:  %s users at %s tokens\n", kvl_plan_fmt_int(need->max_seqs, a, sizeof a),
           kvl_plan_fmt_int(p->context, b, sizeof b));
    printf("  shorter:      %s tokens for %zu users\n",
           kvl_plan_fmt_int(need->max_context, a, sizeof a), p->users);
    /* smaller weights, when the shape's formula gives smaller ones */
    static const kvl_type wq[] = {KVL_TYPE_Q8_0, KVL_TYPE_Q4_0};
    for (int i = 0; i < 2; i++) {
        kvl_plan_request q = *r;
        kvl_plan_need qn;
        if (kvl_plan_weight_bytes(&q.shape, wq[i], &q.weight_bytes, NULL) ||
            q.weight_bytes >= r->weight_bytes ||
            kvl_plan_need_for(&q, p->users, p->context, &qn, NULL))
            continue;
        if (qn.fits)
            printf("  weights:      --weights %s (%s) fits\n", kvl_type_name(wq[i]),
                   kvl_plan_fmt_gib(q.weight_bytes, a, sizeof a));
        else
            printf("  weights:      --weights %s (%s) is still short by %s\n", kvl_type_name(wq[i]),
                   kvl_plan_fmt_gib(q.weight_bytes, a, sizeof a),
                   kvl_plan_fmt_gib(qn.short_by, b, sizeof b));
    }
    if (need->devices_needed > 0)
        printf("  more devices: %d x the smallest device given (weights and KV split "
               "evenly, reserve on each)\n",
               need->devices_needed);
    else
        printf("  more devices: over %d devices\n", KVL_PLAN_MAX_DEVICES);
}

/* the reverse question, the format table and the remedies */
static void text_need(const plan *p) {
    const kvl_plan_request *r = &p->r;
    const kvl_plan_need *need = &p->need;
    char a[48], b[48], c[48], d[48], e[48];
    printf("\nneed       %zu users x %s tokens: KV %zu x %s blocks x %s B = %s B (%s)\n", p->users,
           kvl_plan_fmt_int(p->context, a, sizeof a), p->users,
           kvl_plan_fmt_int(kvl_plan_blocks_for_tokens(p->context, r->block_size), b, sizeof b),
           kvl_plan_fmt_int(p->res.cap.block_bytes, c, sizeof c),
           kvl_plan_fmt_int(need->kv_bytes, d, sizeof d),
           kvl_plan_fmt_gib(need->kv_bytes, e, sizeof e));
    printf("           weights %s + KV %s + reserve %s = %s",
           kvl_plan_fmt_gib(r->weight_bytes, a, sizeof a),
           kvl_plan_fmt_gib(need->kv_bytes, b, sizeof b),
           kvl_plan_fmt_gib(p->res.reserve_total, c, sizeof c),
           kvl_plan_fmt_gib(need->total_bytes, d, sizeof d));
    if (need->fits)
        printf(" <= %s: fits\n", kvl_plan_fmt_gib(p->res.mem_total, a, sizeof a));
    else
        printf(" > %s: does NOT fit (short by %s)\n",
               kvl_plan_fmt_gib(p->res.mem_total, a, sizeof a),
               kvl_plan_fmt_gib(need->short_by, b, sizeof b));
    tbl t = {.n_cols = 7,
             .head = {"KV format K/V", "B/token", "KV needed", "total", "fits", "max users",
                      "longest ctx"},
             .min_w = {-20, 12, 12, 12, 5, 10, 12}};
    for (int i = 0; i < p->n_f; i++) {
        const kvl_plan_need *n = &p->fneed[i];
        snprintf(t.cell[i][0], TBL_CELL, "%s/%s%s", fmt_name(p->fk[i]), fmt_name(p->fv[i]),
                 i == 0 ? " *" : "");
        snprintf(t.cell[i][1], TBL_CELL, "%.2f", (double)p->fbb[i] / r->block_size);
        kvl_plan_fmt_gib(n->kv_bytes, t.cell[i][2], TBL_CELL);
        kvl_plan_fmt_gib(n->total_bytes, t.cell[i][3], TBL_CELL);
        snprintf(t.cell[i][4], TBL_CELL, "%s", n->fits ? "yes" : "no");
        kvl_plan_fmt_int(n->max_seqs, t.cell[i][5], TBL_CELL);
        kvl_plan_fmt_int(n->max_context, t.cell[i][6], TBL_CELL);
    }
    t.n_rows = p->n_f;
    printf("\n");
    tbl_print(&t);
    printf("(* = the formats asked for)\n");
    if (!need->fits)
        text_remedies(p);
}

static void render_text(const plan *p) {
    char a[48], b[48], c[48];
    text_memory(p);
    text_kv(p);
    if (p->reverse)
        text_need(p);
    printf("\nstacked bar: weights %s, %s %s, reserve %s\n",
           kvl_plan_fmt_gib(p->r.weight_bytes, a, sizeof a), p->kv_bar_label,
           kvl_plan_fmt_gib(p->kv_bar, b, sizeof b),
           kvl_plan_fmt_gib(p->res.reserve_total, c, sizeof c));
    if (p->o->svg)
        printf("svg        %s\n", p->o->svg);
}

/* ---- main -------------------------------------------------------------- */

int kvl_cli_plan(int argc, char **argv) {
    opts o;
    int rc = parse(argc, argv, &o);
    if (rc == -1) {
        usage(stdout);
        return 0;
    }
    if (rc)
        return rc;
    if (o.list_models || o.list_devices) {
        if (o.list_models)
            list_models();
        if (o.list_devices)
            list_devices();
        return 0;
    }
    if (!!o.model == !!o.file) {
        fprintf(stderr, "kvllm plan: give exactly one of --model NAME (--list-models) and -m "
                        "FILE.gguf\n");
        return 2;
    }
    plan *p = malloc(sizeof *p);
    if (!p) {
        fprintf(stderr, "kvllm plan: out of memory\n");
        return 1;
    }
    rc = compute(&o, p);
    if (!rc && o.svg)
        rc = render_svg(p, o.svg);
    if (!rc) {
        if (o.json)
            render_json(stdout, p);
        else
            render_text(p);
        rc = plan_fits(p) ? 0 : PLAN_EXIT_NO_FIT;
    }
    free(p);
    return rc;
}
