/* Locating the shipped model for commands run without -m. */
#include "cli/common.h"
#include "engine/config.h"
#include "cli/cli.h"
#include "engine/kv_check.h"
#include "kv/kv_policy.h"

#include <limits.h>
#include <string.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static bool exists(const char *p) { return access(p, R_OK) == 0; }

const char *kvl_cli_default_model(void) {
    static char buf[PATH_MAX + 64];
    const char *name = "models/stories260K.gguf";
    const char *env = getenv("KVL_SHARED");
    if (env && *env) {
        snprintf(buf, sizeof buf, "%s/%s", env, name);
        if (exists(buf))
            return buf;
    }
    const char *rel[] = {"../shared/", "shared/", "../../shared/"};
    for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) {
        snprintf(buf, sizeof buf, "%s%s", rel[i], name);
        if (exists(buf))
            return buf;
    }
    /* beside the checkout the executable was built in: <repo>/build/kvllm */
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        for (int up = 0; up < 3; up++) {
            char *s = strrchr(exe, '/');
            if (!s)
                break;
            *s = '\0';
            snprintf(buf, sizeof buf, "%s/../shared/%s", exe, name);
            if (exists(buf))
                return buf;
        }
    }
    return NULL;
}

void kvl_cli_kv_defaults(kvl_cli_kv_opts *o) {
    memset(o, 0, sizeof *o);
    o->p = kvl_kv_cache_defaults();
    o->policy.sinks = KVL_KV_POLICY_DEFAULT_SINKS;
}

void kvl_cli_kv_policy_usage(FILE *f) {
    fprintf(f,
            "      --kv-policy P     what the cache keeps at its token budget: full (default),\n"
            "                        window (the most recent positions), sinks (the first\n"
            "                        --kv-sinks positions + the most recent), h2o (sinks +\n"
            "                        recent + the blocks with the most attention mass) or\n"
            "                        snapkv (a prompt over the budget cut to the blocks its\n"
            "                        last queries attend to most); docs/eviction.md\n"
            "      --kv-budget-tokens N  positions a sequence holds at most (not full)\n"
            "      --kv-sinks N      sink positions, rounded up to whole blocks (default %d;\n"
            "                        h2o and snapkv: 0, see docs/eviction.md)\n"
            "      --kv-heavy F      h2o: share of the non-sink budget kept by attention mass,\n"
            "                        0 < F < 1 (default %.1f; the rest is the recent window)\n"
            "      --kv-obs-window N snapkv: the prompt's last N queries score the blocks\n"
            "                        (default %d)\n"
            "      --kv-score S      h2o: rank blocks by the mean attention per query that\n"
            "                        saw them (mean, default) or by its sum (sum, H2O's)\n"
            "      --kv-mass-stride N  h2o: only every N-th query position adds attention\n"
            "                        mass, 1..block size (default %d)\n"
            "      --kv-pool N       snapkv: rank a block by the best of the N blocks\n"
            "                        centred on it, N odd (default %d: none)\n",
            KVL_KV_POLICY_DEFAULT_SINKS, (double)KVL_KV_POLICY_DEFAULT_HEAVY,
            KVL_KV_POLICY_DEFAULT_OBS_WINDOW, KVL_KV_POLICY_DEFAULT_MASS_STRIDE,
            KVL_KV_POLICY_DEFAULT_POOL);
}

/* --kv-policy, --kv-budget-tokens, --kv-sinks, --kv-heavy, --kv-obs-window,
 * --kv-score, --kv-mass-stride, --kv-pool: as kvl_cli_kv_flag (the ranges
 * that depend on the block size are checked by kvl_kv_policy_check). */
static int kv_policy_flag(const char *cmd, int argc, char **argv, int *i, kvl_cli_kv_opts *o) {
    const char *a = argv[*i], *v;
    if (strcmp(a, "--kv-policy") && strcmp(a, "--kv-budget-tokens") && strcmp(a, "--kv-sinks") &&
        strcmp(a, "--kv-heavy") && strcmp(a, "--kv-obs-window") && strcmp(a, "--kv-score") &&
        strcmp(a, "--kv-mass-stride") && strcmp(a, "--kv-pool"))
        return 0;
    if (!o->policy_ok) {
        fprintf(stderr,
                "kvllm %s: %s: this subcommand keeps full KV; kvllm run and kvllm ppl "
                "take it\n",
                cmd, a);
        return -1;
    }
    if (!kvl_cli_value(cmd, argc, argv, i, &v))
        return -1;
    long long n;
    if (!strcmp(a, "--kv-policy")) {
        if (!kvl_kv_policy_parse(v, &o->policy.kind)) {
            fprintf(stderr,
                    "kvllm %s: --kv-policy: '%s' is not full, window, sinks, h2o or snapkv\n", cmd,
                    v);
            return -1;
        }
        if (!o->sinks_set) /* the scored policies keep no sink block unless asked */
            o->policy.sinks = kvl_kv_policy_scored(&o->policy) ? 0 : KVL_KV_POLICY_DEFAULT_SINKS;
    } else if (!strcmp(a, "--kv-heavy")) {
        char *end = NULL;
        const double f = strtod(v, &end);
        if (end == v || *end || !(f > 0.0 && f < 1.0)) {
            fprintf(stderr, "kvllm %s: --kv-heavy: '%s' is not a number in (0, 1)\n", cmd, v);
            return -1;
        }
        o->policy.heavy = (float)f;
    } else if (!strcmp(a, "--kv-score")) {
        if (strcmp(v, "sum") && strcmp(v, "mean")) {
            fprintf(stderr, "kvllm %s: --kv-score: '%s' is not sum or mean\n", cmd, v);
            return -1;
        }
        o->policy.score = !strcmp(v, "sum") ? KVL_KV_SCORE_SUM : KVL_KV_SCORE_MEAN;
    } else if (!strcmp(a, "--kv-mass-stride") || !strcmp(a, "--kv-pool")) {
        if (!kvl_cli_int(cmd, a, v, 1, KVL_MAX_CTX, &n))
            return -1;
        if (!strcmp(a, "--kv-pool"))
            o->policy.pool = (int32_t)n;
        else
            o->policy.mass_stride = (int32_t)n;
    } else if (!strcmp(a, "--kv-obs-window")) {
        if (!kvl_cli_int(cmd, a, v, 1, KVL_MAX_CTX, &n))
            return -1;
        o->policy.obs_window = (int32_t)n;
    } else if (!kvl_cli_int(cmd, a, v, !strcmp(a, "--kv-sinks") ? 0 : 1, KVL_MAX_CTX, &n))
        return -1;
    else if (!strcmp(a, "--kv-sinks")) {
        o->policy.sinks = (int32_t)n;
        o->sinks_set = true;
    } else
        o->policy.budget_tokens = (int32_t)n;
    return 1;
}

void kvl_cli_kv_usage(FILE *f) {
    fprintf(
        f,
        "      --kv-layout L     paged (default) or contiguous (one max-length region per\n"
        "                        sequence, the pre-paging baseline)\n"
        "      --kv-mem SIZE     KV budget: bytes (512MiB, 2GiB) or N%% of available memory\n"
        "                        (default: exactly what the sequences' full contexts need)\n"
        "      --block-size N    positions per KV block, 1..%d (default 16; 32 when K is int4)\n"
        "      --kv-type F       K and V cache format: %s\n"
        "                        (default: f32 for f32 weights and the contiguous layout,\n"
        "                        else f16)\n"
        "      --kv-type-k F     K cache format only\n"
        "      --kv-type-v F     V cache format only\n"
        "      --kv-check        before running, measure the chosen formats against f32 and\n"
        "                        f16 KV on this model (KL divergence, top-1) and warn when\n"
        "                        they cost too much\n"
        "      --prefix-tier T   off (default), host or file: cached prefix blocks evicted\n"
        "                        from the pool go to the swap area (--swap-mem; file: the\n"
        "                        --swap-file) and come back on a hit (run, serve, bench serve)\n",
        KVL_KV_MAX_BLOCK_SIZE, kvl_kv_format_names());
}

static long long mem_available(void) { return kvl_proc_kb("/proc/meminfo", "MemAvailable"); }

int kvl_cli_load_flag(const char *cmd, int argc, char **argv, int *i, kvl_load_mode *out) {
    if (strcmp(argv[*i], "--load"))
        return 0;
    const char *v;
    if (!kvl_cli_value(cmd, argc, argv, i, &v))
        return -1;
    static const char *const names[] = {"auto", "mmap", "huge"};
    static const kvl_load_mode modes[] = {KVL_LOAD_AUTO, KVL_LOAD_MMAP, KVL_LOAD_HUGE};
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++)
        if (!strcmp(v, names[k])) {
            *out = modes[k];
            return 1;
        }
    fprintf(stderr, "kvllm %s: --load: '%s' is not auto, mmap or huge\n", cmd, v);
    return -1;
}

int kvl_cli_kv_flag(const char *cmd, int argc, char **argv, int *i, kvl_cli_kv_opts *o) {
    const char *a = argv[*i], *v;
    if (!strcmp(a, "--kv-check")) {
        o->check = true;
        return 1;
    }
    int pr = kv_policy_flag(cmd, argc, argv, i, o);
    if (pr != 0)
        return pr;
    if (!strcmp(a, "--prefix-tier")) {
        if (!o->tier_ok) {
            fprintf(stderr,
                    "kvllm %s: --prefix-tier: this subcommand has no prefix cache tier (it "
                    "keeps no swap area); run, serve and bench serve take it\n",
                    cmd);
            return -1;
        }
        if (!kvl_cli_value(cmd, argc, argv, i, &v))
            return -1;
        if (!kvl_prefix_tier_parse(v, &o->prefix_tier)) {
            fprintf(stderr, "kvllm %s: --prefix-tier: '%s' is not off, host or file\n", cmd, v);
            return -1;
        }
        return 1;
    }
    bool is_k = !strcmp(a, "--kv-type-k"), is_v = !strcmp(a, "--kv-type-v"),
         both = !strcmp(a, "--kv-type");
    if (strcmp(a, "--kv-layout") && strcmp(a, "--kv-mem") && strcmp(a, "--block-size") && !is_k &&
        !is_v && !both)
        return 0;
    if (!kvl_cli_value(cmd, argc, argv, i, &v))
        return -1;
    if (!strcmp(a, "--kv-layout")) {
        if (!strcmp(v, "paged"))
            o->p.layout = KVL_KV_LAYOUT_PAGED;
        else if (!strcmp(v, "contiguous"))
            o->p.layout = KVL_KV_LAYOUT_CONTIGUOUS;
        else {
            fprintf(stderr, "kvllm %s: --kv-layout: '%s' is not paged or contiguous\n", cmd, v);
            return -1;
        }
    } else if (!strcmp(a, "--kv-mem")) {
        size_t n = strlen(v);
        if (n > 1 && v[n - 1] == '%') {
            char num[64];
            snprintf(num, sizeof num, "%.*s", (int)(n - 1), v);
            double pct;
            if (!kvl_cli_float(cmd, a, num, 0.01, 100, &pct))
                return -1;
            o->mem_fraction = pct / 100.0;
        } else {
            uint64_t b;
            if (!kvl_cli_bytes(cmd, a, v, &b))
                return -1;
            if (b == 0) {
                fprintf(stderr, "kvllm %s: --kv-mem: 0 bytes holds no KV block\n", cmd);
                return -1;
            }
            o->p.budget = (size_t)b;
            o->mem_fraction = 0;
        }
    } else if (!strcmp(a, "--block-size")) {
        long long bs;
        if (!kvl_cli_int(cmd, a, v, 1, KVL_KV_MAX_BLOCK_SIZE, &bs))
            return -1;
        o->p.block_size = (int32_t)bs;
    } else {
        kvl_kv_format fmt;
        if (!kvl_kv_format_parse(v, &fmt)) {
            fprintf(stderr, "kvllm %s: %s: '%s' is not a KV format (%s)\n", cmd, a, v,
                    kvl_kv_format_names());
            return -1;
        }
        if (is_k || both) {
            o->p.k_fmt = fmt;
            o->k_set = true;
        }
        if (is_v || both) {
            o->p.v_fmt = fmt;
            o->v_set = true;
        }
    }
    return 1;
}

/* The default budget: what max_seqs sequences of need_ctx positions take
 * (paged: the store's max_ctx becomes need_ctx, as the request never goes
 * further), or max_seqs full regions of max_ctx (contiguous), within
 * KVL_CLI_KV_MEM_CAP of MemAvailable. *capped: the paged budget was cut to
 * that. */
static bool default_budget(const char *cmd, const kvl_hparams *hp, kvl_kv_cache_params *p,
                           int32_t need_ctx, bool *capped) {
    kvl_kv_cache_params q = *p;
    if (q.layout == KVL_KV_LAYOUT_PAGED)
        p->max_ctx = q.max_ctx = need_ctx;
    kvl_error err;
    if (kvl_kv_cache_default_budget(hp, &q, &p->budget, &err)) {
        fprintf(stderr, "kvllm %s: %s\n", cmd, err.msg);
        return false;
    }
    *capped = false;
    const long long avail = mem_available();
    if (avail <= 0)
        return true; /* unknown: nothing to cap by */
    const double cap = (double)avail * KVL_CLI_KV_MEM_CAP;
    if ((double)p->budget <= cap)
        return true;
    if (q.layout == KVL_KV_LAYOUT_CONTIGUOUS) {
        fprintf(stderr,
                "kvllm %s: contiguous KV: %d sequence%s of the full %d-position context need %zu "
                "bytes, more than %.0f%% of available memory (%lld bytes); use --ctx or the "
                "paged layout\n",
                cmd, (int)q.max_seqs, q.max_seqs == 1 ? "" : "s", (int)q.max_ctx, p->budget,
                100 * KVL_CLI_KV_MEM_CAP, avail);
        return false;
    }
    p->budget = (size_t)cap;
    *capped = true;
    return true;
}

bool kvl_cli_kv_params(const char *cmd, const kvl_cli_kv_opts *o, const kvl_model *m,
                       int32_t max_seqs, int32_t max_ctx, int32_t need_ctx, FILE *note,
                       kvl_kv_cache_params *out) {
    const kvl_hparams *hp = &m->hp;
    kvl_kv_cache_params p = o->p;
    kvl_kv_format dflt = kvl_engine_default_kv_format(m, p.layout);
    if (!o->k_set)
        p.k_fmt = dflt;
    if (!o->v_set)
        p.v_fmt = dflt;
    p.max_seqs = max_seqs;
    p.max_ctx = max_ctx;
    if (o->mem_fraction > 0) {
        long long avail = mem_available();
        if (avail <= 0) {
            fprintf(stderr, "kvllm %s: --kv-mem: cannot read MemAvailable from /proc/meminfo\n",
                    cmd);
            return false;
        }
        p.budget = (size_t)((double)avail * o->mem_fraction);
    }
    if (p.budget == 0) {
        bool capped = false;
        if (need_ctx < 1 || need_ctx > max_ctx)
            need_ctx = max_ctx;
        if (!default_budget(cmd, hp, &p, need_ctx, &capped))
            return false;
        char cut[64] = "";
        if (capped)
            snprintf(cut, sizeof cut, ", cut to %.0f%% of available memory",
                     100 * KVL_CLI_KV_MEM_CAP);
        if (note && p.layout == KVL_KV_LAYOUT_PAGED)
            fprintf(note,
                    "kvllm %s: KV budget %zu bytes: what %d sequence%s of %d positions need (the "
                    "request; the context is %d)%s; --kv-mem sets another\n",
                    cmd, p.budget, (int)max_seqs, max_seqs == 1 ? "" : "s", (int)need_ctx,
                    (int)max_ctx, cut);
    }
    *out = p;
    return true;
}

bool kvl_cli_kv_check(const char *cmd, const kvl_cli_kv_opts *o, const kvl_model *m,
                      kvl_pool *pool) {
    if (!o->check)
        return true;
    kvl_kv_cache_params p;
    if (!kvl_cli_kv_params(cmd, o, m, 1, 1, 1, NULL, &p))
        return false;
    kvl_kv_check_report r;
    kvl_error err;
    if (kvl_kv_check(m, p.k_fmt, p.v_fmt, pool, &r, &err)) {
        fprintf(stderr, "kvllm %s: --kv-check: %s\n", cmd, err.msg);
        return false;
    }
    kvl_kv_check_print(&r, stderr);
    return true;
}

void kvl_cli_common_defaults(kvl_cli_common *c) {
    memset(c, 0, sizeof *c);
    c->load = KVL_LOAD_AUTO;
    kvl_cli_kv_defaults(&c->kvo);
}

int kvl_cli_common_flag(const char *cmd, int argc, char **argv, int *i, kvl_cli_common *c) {
    int r = kvl_cli_load_flag(cmd, argc, argv, i, &c->load);
    if (r == 0)
        r = kvl_cli_kv_flag(cmd, argc, argv, i, &c->kvo);
    if (r != 0)
        return r;
    const char *a = argv[*i], *v;
    if (!strcmp(a, "--check-tensors")) {
        c->check_tensors = true;
        return 1;
    }
    bool model = !strcmp(a, "-m") || !strcmp(a, "--model"), tok = !strcmp(a, "--tokenizer"),
         thr = !strcmp(a, "-t") || !strcmp(a, "--threads");
    if (!model && !tok && !thr)
        return 0;
    if (!kvl_cli_value(cmd, argc, argv, i, &v))
        return -1;
    if (model)
        c->model = v;
    else if (tok)
        c->tokenizer = v;
    else if (!kvl_cli_int(cmd, a, v, 1, KVL_POOL_MAX_THREADS, &c->threads))
        return -1;
    return 1;
}

const char *kvl_cli_model_path(const char *cmd, const kvl_cli_common *c) {
    const char *p = c->model ? c->model : kvl_cli_default_model();
    if (!p)
        fprintf(stderr,
                "kvllm %s: no -m given and the shipped model "
                "(../shared/models/stories260K.gguf) was not found; set KVL_SHARED\n",
                cmd);
    return p;
}

int kvl_cli_chat_template_flag(const char *cmd, int argc, char **argv, int *i, const char **out) {
    if (strcmp(argv[*i], "--chat-template"))
        return 0;
    const char *v;
    kvl_chat_template t;
    kvl_error err;
    if (!kvl_cli_value(cmd, argc, argv, i, &v))
        return -1;
    if (kvl_chat_template_parse(v, &t, &err)) {
        fprintf(stderr, "kvllm %s: --chat-template: %s\n", cmd, err.msg);
        return -1;
    }
    *out = v;
    return 1;
}

int kvl_cli_sampler_flag(const char *cmd, const char *a, const char *v, kvl_sampler_params *sp) {
    static const struct {
        const char *flag;
        double lo, hi;
    } fl[] = {{"--temp", 0, 100},
              {"--top-p", 1e-6, 1},
              {"--min-p", 0, 1},
              {"--repeat-penalty", 1e-6, 10},
              {"--presence-penalty", -2, 2},
              {"--frequency-penalty", -2, 2}};
    float *fdst[] = {
        &sp->temperature,      &sp->top_p, &sp->min_p, &sp->repeat_penalty, &sp->presence_penalty,
        &sp->frequency_penalty};
    for (size_t i = 0; i < sizeof fl / sizeof fl[0]; i++) {
        double fv;
        if (strcmp(a, fl[i].flag))
            continue;
        if (!kvl_cli_float(cmd, a, v, fl[i].lo, fl[i].hi, &fv))
            return -1;
        *fdst[i] = (float)fv;
        return 1;
    }
    long long iv;
    if (!strcmp(a, "--top-k") || !strcmp(a, "--repeat-last-n")) {
        bool k = a[2] == 't';
        if (!kvl_cli_int(cmd, a, v, 0, k ? KVL_MAX_VOCAB : 1 << 20, &iv))
            return -1;
        *(k ? &sp->top_k : &sp->repeat_last_n) = (int32_t)iv;
        return 1;
    }
    if (strcmp(a, "-s") && strcmp(a, "--seed"))
        return 0;
    if (!kvl_cli_int(cmd, a, v, 0, INT64_MAX, &iv))
        return -1;
    sp->seed = (uint64_t)iv;
    return 1;
}

void kvl_cli_engine_kv_opts(const kvl_cli_kv_opts *kvo, long long threads, kvl_engine_params *ep) {
    const kvl_kv_cache_params *kp = &kvo->p;
    ep->n_threads = (int32_t)threads;
    ep->kv_layout = kp->layout;
    ep->kv_type_k = kvo->k_set ? kvl_kv_format_get(kp->k_fmt)->name : NULL;
    ep->kv_type_v = kvo->v_set ? kvl_kv_format_get(kp->v_fmt)->name : NULL;
    ep->kv_mem = kp->budget;
    ep->kv_mem_fraction = kvo->mem_fraction;
    ep->block_size = kp->block_size;
}

void kvl_cli_engine_kv(const kvl_cli_common *c, kvl_engine_params *ep) {
    kvl_cli_engine_kv_opts(&c->kvo, c->threads, ep);
}

char *kvl_cli_read_text(const char *cmd, const char *path, size_t *len) {
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    if (!f) {
        fprintf(stderr, "kvllm %s: -f: cannot open '%s'\n", cmd, path);
        return NULL;
    }
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n - 1, f);
        if (n < cap - 1)
            break;
        if (cap >= ((size_t)64 << 20)) {
            fprintf(stderr, "kvllm %s: -f: '%s' is larger than 64 MiB\n", cmd, path);
            free(buf);
            buf = NULL;
            break;
        }
        char *t = realloc(buf, cap * 2);
        if (!t)
            free(buf);
        buf = t;
        cap *= 2;
    }
    if (buf && ferror(f)) {
        fprintf(stderr, "kvllm %s: -f: read error on '%s'\n", cmd, path);
        free(buf);
        buf = NULL;
    }
    if (f != stdin)
        fclose(f);
    if (buf) {
        buf[n] = '\0';
        if (len)
            *len = n;
    }
    return buf;
}
