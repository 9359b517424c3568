/*
 * kvllm sim: the real scheduler and KV ledger at data-centre scale, each
 * step priced by the simulated executor (docs/sim.md); and
 * kvllm sim calibrate: measure this CPU's rates for `--device cpu`.
 *
 * A run is one or more (policy, rate) pairs over the same workload seed;
 * every pair is a fresh scheduler and ledger. Reports: a text block for a
 * single pair, a table for several, plus --json and --csv files.
 */
#include "cli/cli.h"
#include "cli/sim_calib.h"
#include "model/gguf.h"
#include "plan/catalog.h"
#include "plan/planner.h"
#include "sim/sim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_RATES 64

typedef struct sim_opts {
    const char *model, *file, *device, *calib, *json, *csv, *steps, *svg, *svg_kv;
    kvl_type wtype;
    kvl_kv_format kv_fmt;
    int32_t tp, block_size, max_seqs, max_batch_tokens, max_ctx;
    uint64_t kv_mem;
    double mem_util, mbu, mfu, overhead, slo, slo_ttft, slo_tpot;
    bool policies[4];
    bool no_buddy, prefix_cache, no_prefix_cache, split_prefill;
    int32_t shared_prefix;
    kvl_preempt_mode preempt;
    uint64_t swap_mem;
    double rates[MAX_RATES];
    int n_rates;
    kvl_sim_workload w;
} sim_opts;

static void usage(FILE *f) {
    fprintf(
        f, "usage: kvllm sim (--model NAME | -m FILE.gguf) --device NAME [flags]\n"
           "       kvllm sim calibrate -o FILE [-t THREADS] [-m FILE.gguf (its forward passes)]\n"
           "\n"
           "The real scheduler and KV ledger (metadata only) on a virtual clock; each step\n"
           "priced as max(FLOPs / (flops x mfu), bytes / (bandwidth x mbu)) + overhead.\n"
           "\n"
           "model and device:\n"
           "  --model NAME          a catalogue shape (kvllm plan --list-models)\n"
           "  -m FILE.gguf          the shape of a GGUF file\n"
           "  --type T              weight type: f16 (default), bf16, f32, q8_0, q4_0\n"
           "  --kv-type F           KV format of K and V (default f16)\n"
           "  --device NAME         A100-40GB, A100-80GB, H100-80GB, H200-141GB, L40S-48GB,\n"
           "                        L4-24GB, RTX4090-24GB, or cpu (with --calib FILE)\n"
           "  --calib FILE          rates measured by kvllm sim calibrate\n"
           "  --tp N                tensor-parallel devices (default 1)\n"
           "  --mbu X --mfu X       fractions of peak bandwidth / FLOP/s (GPU default 0.8 / 0.5)\n"
           "  --overhead S|vllm     seconds per step (GPU default 0.002; vllm: 0.0082, the\n"
           "                        Python vLLM engine's CPU work per step, docs/sim.md)\n"
           "KV and scheduler:\n"
           "  --kv-mem BYTES        KV budget (default: devices x --mem-util - weights)\n"
           "  --mem-util F          fraction of device memory usable (default 0.9)\n"
           "  --block-size N        16   --max-seqs N 256   --max-batch-tokens N 2048\n"
           "  --ctx N               max context (default: the model's)\n"
           "  --policy P[,P..]      paged, max, oracle, pow2, or all (default paged)\n"
           "  --alloc A             where max/oracle/pow2 place reservations: buddy (default,\n"
           "                        the paper's Orca) or blocks (any free blocks)\n"
           "  --prefix-cache        the engine's prefix cache on the scheduler (default off;\n"
           "                        on with sessions, prefix ids or --shared-prefix)\n"
           "  --no-prefix-cache     off even then (what the cache saves, by comparison)\n"
           "  --split-prefill       price a step mixing prompt chunks and decodes as two steps\n"
           "                        (vLLM's 2023 prompt-only steps; each pays the overhead)\n"
           "  --preempt MODE        recompute (default), swap or auto (the engine's cost rule)\n"
           "  --swap-mem BYTES      host swap area for swap preemption (default 0: none);\n"
           "                        copies priced at the device's host link\n"
           "  --shared-prefix N     every prompt starts with the same N tokens (implies\n"
           "                        --prefix-cache)\n"
           "workload:\n"
           "  --workload W          sharegpt (default), alpaca, fixed:P,O,\n"
           "                        uniform:P0-P1,O0-O1, trace:FILE (rows 'arrival prompt output\n"
           "                        [prefix_id [prefix_len]]': same id, same first tokens)\n"
           "  --prefix-len K        a trace row's shared length when it gives an id only\n"
           "  --sessions T          multi-turn: each arrival starts a session of up to T turns\n"
           "                        (turn k's prompt: the conversation so far + a new message;\n"
           "                        --rate and --requests count sessions)\n"
           "  --think S             mean think time between a turn's end and the next (default\n"
           "                        0, exponential)\n"
           "  --rate R | --rates R1,R2,..   requests/s (default 1)\n"
           "  --arrival A           poisson (default), gamma:CV, burst\n"
           "  --duration S          seconds of arrivals (default 600)\n"
           "  --requests N          exactly N requests instead\n"
           "  --seed N              (default 1)\n"
           "reports:\n"
           "  --json FILE  --csv FILE  --steps FILE (one line per step)\n"
           "  --svg FILE            normalized latency vs rate, one line per policy\n"
           "  --svg-kv FILE         KV slots over time (one policy and rate): tokens,\n"
           "                        + fragmentation, + reserved, + buddy rounding\n"
           "  --steps FILE columns: end_s step_s requests tokens prefill decode occupancy\n"
           "                        tokens frag reserved rounding (KV as fractions of the slots)\n"
           "  --slo S               normalized latency (s/token) for the sustainable-rate summary\n"
           "                        of a sweep (default 0.5)\n"
           "  --slo-ttft S --slo-tpot S   goodput's SLOs in seconds (default 1 and 0.1)\n");
}

/* ---- flags ---------------------------------------------------------------- */

static bool parse_workload(const char *v, kvl_sim_workload *w) {
    int a, b, c, d;
    if (!strcasecmp(v, "sharegpt"))
        w->lengths = KVL_SIM_LEN_SHAREGPT;
    else if (!strcasecmp(v, "alpaca"))
        w->lengths = KVL_SIM_LEN_ALPACA;
    else if (sscanf(v, "fixed:%d,%d", &a, &b) == 2) {
        w->lengths = KVL_SIM_LEN_FIXED;
        w->prompt_lo = w->prompt_hi = a;
        w->output_lo = w->output_hi = b;
    } else if (sscanf(v, "uniform:%d-%d,%d-%d", &a, &b, &c, &d) == 4) {
        w->lengths = KVL_SIM_LEN_UNIFORM;
        w->prompt_lo = a, w->prompt_hi = b, w->output_lo = c, w->output_hi = d;
    } else if (!strncmp(v, "trace:", 6) && v[6]) {
        w->lengths = KVL_SIM_LEN_TRACE;
        w->trace_path = v + 6;
    } else {
        fprintf(stderr,
                "kvllm sim: --workload '%s': want sharegpt, alpaca, fixed:P,O, "
                "uniform:P0-P1,O0-O1 or trace:FILE\n",
                v);
        return false;
    }
    return true;
}

static bool parse_list(const char *flag, const char *v, sim_opts *o) {
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", v);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        if (!strcmp(flag, "--policy")) {
            kvl_sched_reserve p;
            if (!strcasecmp(tok, "all")) {
                for (int i = 0; i < 4; i++)
                    o->policies[i] = true;
            } else if (kvl_sim_policy_parse(tok, &p)) {
                o->policies[p] = true;
            } else {
                fprintf(stderr, "kvllm sim: --policy '%s': want paged, max, oracle, pow2 or all\n",
                        tok);
                return false;
            }
        } else {
            double r;
            if (o->n_rates == MAX_RATES) {
                fprintf(stderr, "kvllm sim: --rates: at most %d rates\n", MAX_RATES);
                return false;
            }
            if (!kvl_cli_float("sim", flag, tok, 1e-6, 1e6, &r))
                return false;
            o->rates[o->n_rates++] = r;
        }
    }
    return true;
}

static const char *const k_value_flags[] = {
    "--model",    "-m",         "--type",       "--kv-type",       "--device",
    "--calib",    "--tp",       "--mbu",        "--mfu",           "--overhead",
    "--kv-mem",   "--mem-util", "--block-size", "--max-seqs",      "--max-batch-tokens",
    "--ctx",      "--policy",   "--workload",   "--rate",          "--rates",
    "--arrival",  "--duration", "--requests",   "--seed",          "--json",
    "--csv",      "--steps",    "--slo",        "--svg",           "--svg-kv",
    "--alloc",    "--slo-ttft", "--slo-tpot",   "--shared-prefix", "--preempt",
    "--swap-mem", "--sessions", "--think",      "--prefix-len",    NULL};

static int parse(int argc, char **argv, sim_opts *o) {
    memset(o, 0, sizeof *o);
    o->wtype = KVL_TYPE_F16;
    o->kv_fmt = KVL_KV_FMT_F16;
    o->tp = 1;
    o->block_size = 16;
    o->max_seqs = 256;
    o->max_batch_tokens = 2048;
    o->mem_util = 0.9;
    o->mbu = o->mfu = o->overhead = -1;
    o->slo = 0.5;
    o->slo_ttft = 1.0;
    o->slo_tpot = 0.1;
    o->preempt = KVL_PREEMPT_RECOMPUTE;
    o->w = kvl_sim_workload_defaults();
    bool any_policy = false;
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i], *v;
        long long x;
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            usage(stdout);
            return -1;
        }
        if (!strcmp(f, "--split-prefill")) {
            o->split_prefill = true;
            continue;
        }
        if (!strcmp(f, "--prefix-cache") || !strcmp(f, "--no-prefix-cache")) {
            o->prefix_cache = !strcmp(f, "--prefix-cache");
            o->no_prefix_cache = !o->prefix_cache;
            continue;
        }
        if (!kvl_cli_flag_value("sim", k_value_flags, "kvllm sim --help", argc, argv, &i, &v))
            return 2;
        if (!strcmp(f, "--model"))
            o->model = v;
        else if (!strcmp(f, "-m"))
            o->file = v;
        else if (!strcmp(f, "--type")) {
            if (!kvl_type_parse(v, &o->wtype)) {
                fprintf(stderr, "kvllm sim: --type '%s': want f32, f16, bf16, q8_0 or q4_0\n", v);
                return 2;
            }
        } else if (!strcmp(f, "--kv-type")) {
            if (!kvl_kv_format_parse(v, &o->kv_fmt)) {
                fprintf(stderr, "kvllm sim: --kv-type '%s': want one of %s\n", v,
                        kvl_kv_format_names());
                return 2;
            }
        } else if (!strcmp(f, "--device"))
            o->device = v;
        else if (!strcmp(f, "--calib"))
            o->calib = v;
        else if (!strcmp(f, "--json"))
            o->json = v;
        else if (!strcmp(f, "--csv"))
            o->csv = v;
        else if (!strcmp(f, "--steps"))
            o->steps = v;
        else if (!strcmp(f, "--svg"))
            o->svg = v;
        else if (!strcmp(f, "--svg-kv"))
            o->svg_kv = v;
        else if (!strcmp(f, "--tp")) {
            if (!kvl_cli_int("sim", f, v, 1, 64, &x))
                return 2;
            o->tp = (int32_t)x;
        } else if (!strcmp(f, "--mbu")) {
            if (!kvl_cli_float("sim", f, v, 1e-3, 1, &o->mbu))
                return 2;
        } else if (!strcmp(f, "--mfu")) {
            if (!kvl_cli_float("sim", f, v, 1e-3, 1, &o->mfu))
                return 2;
        } else if (!strcmp(f, "--overhead")) {
            if (!strcasecmp(v, "vllm")) /* the Python engine's, a sourced estimate */
                o->overhead = kvl_sim_constant_get("vllm_cpu_step_overhead_s");
            else if (!kvl_cli_float("sim", f, v, 0, 10, &o->overhead))
                return 2;
        } else if (!strcmp(f, "--kv-mem")) {
            if (!kvl_cli_bytes("sim", f, v, &o->kv_mem))
                return 2;
        } else if (!strcmp(f, "--mem-util")) {
            if (!kvl_cli_float("sim", f, v, 0.01, 1, &o->mem_util))
                return 2;
        } else if (!strcmp(f, "--block-size")) {
            if (!kvl_cli_int("sim", f, v, 1, 4096, &x))
                return 2;
            o->block_size = (int32_t)x;
        } else if (!strcmp(f, "--max-seqs")) {
            if (!kvl_cli_int("sim", f, v, 1, 65536, &x))
                return 2;
            o->max_seqs = (int32_t)x;
        } else if (!strcmp(f, "--max-batch-tokens")) {
            if (!kvl_cli_int("sim", f, v, 1, 1 << 20, &x))
                return 2;
            o->max_batch_tokens = (int32_t)x;
        } else if (!strcmp(f, "--ctx")) {
            if (!kvl_cli_int("sim", f, v, 1, KVL_MAX_CTX, &x))
                return 2;
            o->max_ctx = (int32_t)x;
        } else if (!strcmp(f, "--policy")) {
            if (!any_policy)
                memset(o->policies, 0, sizeof o->policies);
            any_policy = true;
            if (!parse_list(f, v, o))
                return 2;
        } else if (!strcmp(f, "--rate") || !strcmp(f, "--rates")) {
            if (!parse_list(f, v, o))
                return 2;
        } else if (!strcmp(f, "--workload")) {
            if (!parse_workload(v, &o->w))
                return 2;
        } else if (!strcmp(f, "--arrival")) {
            if (!strcasecmp(v, "poisson"))
                o->w.arrivals = KVL_SIM_ARR_POISSON;
            else if (!strcasecmp(v, "burst"))
                o->w.arrivals = KVL_SIM_ARR_BURST;
            else if (!strncasecmp(v, "gamma:", 6)) {
                o->w.arrivals = KVL_SIM_ARR_GAMMA;
                if (!kvl_cli_float("sim", "--arrival gamma:CV", v + 6, 1e-3, 100, &o->w.cv))
                    return 2;
            } else {
                fprintf(stderr, "kvllm sim: --arrival '%s': want poisson, gamma:CV or burst\n", v);
                return 2;
            }
        } else if (!strcmp(f, "--duration")) {
            if (!kvl_cli_float("sim", f, v, 1e-3, 1e7, &o->w.duration_s))
                return 2;
        } else if (!strcmp(f, "--requests")) {
            if (!kvl_cli_int("sim", f, v, 1, 100000000, &x))
                return 2;
            o->w.n_requests = x;
        } else if (!strcmp(f, "--seed")) {
            if (!kvl_cli_int("sim", f, v, 0, INT64_MAX, &x))
                return 2;
            o->w.seed = (uint64_t)x;
        } else if (!strcmp(f, "--slo")) {
            if (!kvl_cli_float("sim", f, v, 1e-6, 1e6, &o->slo))
                return 2;
        } else if (!strcmp(f, "--slo-ttft") || !strcmp(f, "--slo-tpot")) {
            if (!kvl_cli_float("sim", f, v, 0, 1e6,
                               !strcmp(f, "--slo-ttft") ? &o->slo_ttft : &o->slo_tpot))
                return 2;
        } else if (!strcmp(f, "--preempt")) {
            if (!kvl_preempt_mode_parse(v, &o->preempt)) {
                fprintf(stderr, "kvllm sim: --preempt '%s': want recompute, swap or auto\n", v);
                return 2;
            }
        } else if (!strcmp(f, "--swap-mem")) {
            if (!kvl_cli_bytes("sim", f, v, &o->swap_mem))
                return 2;
        } else if (!strcmp(f, "--sessions")) {
            if (!kvl_cli_int("sim", f, v, 1, 1000, &x))
                return 2;
            o->w.turns = (int32_t)x;
        } else if (!strcmp(f, "--think")) {
            if (!kvl_cli_float("sim", f, v, 0, 1e6, &o->w.think_s))
                return 2;
        } else if (!strcmp(f, "--prefix-len")) {
            if (!kvl_cli_int("sim", f, v, 1, KVL_MAX_CTX, &x))
                return 2;
            o->w.prefix_len = (int32_t)x;
        } else if (!strcmp(f, "--shared-prefix")) {
            if (!kvl_cli_int("sim", f, v, 0, KVL_MAX_CTX, &x))
                return 2;
            o->shared_prefix = (int32_t)x;
        } else if (!strcmp(f, "--alloc")) {
            if (strcasecmp(v, "buddy") && strcasecmp(v, "blocks")) {
                fprintf(stderr, "kvllm sim: --alloc '%s': want buddy or blocks\n", v);
                return 2;
            }
            o->no_buddy = !strcasecmp(v, "blocks");
        }
    }
    if (!any_policy)
        o->policies[KVL_RESERVE_PAGED] = true;
    if (o->n_rates == 0)
        o->rates[o->n_rates++] = o->w.rate;
    if (!o->model == !o->file) {
        fprintf(stderr, "kvllm sim: give one of --model NAME or -m FILE.gguf\n");
        return 2;
    }
    if (!o->device) {
        fprintf(stderr,
                "kvllm sim: --device is required (a catalogue name, or cpu --calib FILE)\n");
        return 2;
    }
    return 0;
}

/* ---- setup ---------------------------------------------------------------- */

static int setup(const sim_opts *o, kvl_sim_params *p, size_t *weight_bytes) {
    kvl_error err;
    kvl_model_shape shape;
    if (o->model) {
        const kvl_model_shape *s = kvl_catalog_shape_find(o->model);
        if (!s) {
            fprintf(stderr, "kvllm sim: --model: unknown model '%s' (kvllm plan --list-models)\n",
                    o->model);
            return 2;
        }
        shape = *s;
    } else {
        kvl_gguf *g = NULL;
        if (kvl_gguf_open(o->file, &g, &err)) {
            fprintf(stderr, "kvllm sim: -m: %s\n", err.msg);
            return 1;
        }
        memset(&shape, 0, sizeof shape);
        snprintf(shape.name, sizeof shape.name, "%s", o->file);
        size_t wb;
        kvl_status st = kvl_plan_shape_from_gguf(g, &shape, &wb, &err);
        kvl_gguf_free(g);
        if (st) {
            fprintf(stderr, "kvllm sim: -m %s: %s\n", o->file, err.msg);
            return 1;
        }
    }
    kvl_sim_device dev;
    kvl_status st;
    if (!strcasecmp(o->device, "cpu")) {
        if (!o->calib) {
            fprintf(stderr, "kvllm sim: --device cpu needs --calib FILE (kvllm sim calibrate -o "
                            "FILE)\n");
            return 2;
        }
        st = kvl_sim_device_from_file(o->calib, &dev, &err);
    } else {
        st = kvl_sim_device_from_catalog(o->device, &dev, &err);
    }
    if (st) {
        fprintf(stderr, "kvllm %s\n", err.msg);
        return st == KVL_E_INVALID ? 2 : 1;
    }
    if (o->mbu > 0)
        dev.mbu = o->mbu;
    if (o->mfu > 0)
        dev.mfu = o->mfu;
    if (o->overhead >= 0)
        dev.step_overhead_s = o->overhead;
    double kv_tok;
    if ((st = kvl_plan_weight_bytes(&shape, o->wtype, weight_bytes, &err)) ||
        (st =
             kvl_plan_kv_token_bytes(&shape, o->kv_fmt, o->kv_fmt, o->block_size, &kv_tok, &err))) {
        fprintf(stderr, "kvllm sim: %s\n", err.msg);
        return 2;
    }
    *p = kvl_sim_defaults();
    if ((st = kvl_sim_cost_init(&shape, o->wtype, kv_tok, &dev, o->tp, true, &p->cost, &err))) {
        fprintf(stderr, "kvllm %s\n", err.msg);
        return 2;
    }
    p->kv_fmt = o->kv_fmt;
    p->block_size = o->block_size;
    p->max_seqs = o->max_seqs;
    p->max_batch_tokens = o->max_batch_tokens;
    p->max_ctx = o->max_ctx;
    p->buddy = !o->no_buddy;
    /* sessions and prefix ids are for the prefix cache: on unless refused */
    bool keyed = o->w.turns > 1 || o->w.lengths == KVL_SIM_LEN_TRACE;
    p->prefix_cache = !o->no_prefix_cache && (o->prefix_cache || keyed);
    p->shared_prefix = o->no_prefix_cache ? 0 : o->shared_prefix;
    p->preempt = o->preempt;
    p->swap_mem = (size_t)o->swap_mem;
    p->split_prefill = o->split_prefill;
    p->slo_ttft = o->slo_ttft;
    p->slo_tpot = o->slo_tpot;
    if (o->kv_mem) {
        p->kv_budget = (size_t)o->kv_mem;
    } else {
        double usable = (double)dev.bytes * o->mem_util * o->tp;
        if (usable <= (double)*weight_bytes) {
            fprintf(stderr, "kvllm sim: weights %zu bytes do not fit %d x %s at --mem-util %.2f\n",
                    *weight_bytes, (int)o->tp, dev.name, o->mem_util);
            return 1;
        }
        p->kv_budget = (size_t)(usable - (double)*weight_bytes);
    }
    return 0;
}

/* ---- chart ---------------------------------------------------------------- */

/* Normalized latency (y, clipped at ymax) against rate (x), one polyline
 * per policy; res[k * n_rates + i] is policy k at rate i. */
static void write_svg(FILE *f, const sim_opts *o, const kvl_sim_result *res, const char *title) {
    static const char *const colour[4] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e"};
    const double W = 640, H = 400, L = 70, R = 130, T = 40, B = 50, ymax = 1.0;
    double xmax = 0;
    for (int i = 0; i < o->n_rates; i++)
        xmax = o->rates[i] > xmax ? o->rates[i] : xmax;
    fprintf(f,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%g\" height=\"%g\" "
            "font-family=\"sans-serif\" font-size=\"12\">\n"
            "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
            "<text x=\"%g\" y=\"20\" font-size=\"14\">%s</text>\n",
            W, H, L, title);
    double pw = W - L - R, ph = H - T - B;
    fprintf(f,
            "<rect x=\"%g\" y=\"%g\" width=\"%g\" height=\"%g\" fill=\"none\" "
            "stroke=\"black\"/>\n",
            L, T, pw, ph);
    for (int k = 0; k <= 4; k++) {
        double yv = ymax * k / 4, y = T + ph - ph * k / 4, xv = xmax * k / 4, x = L + pw * k / 4;
        fprintf(f, "<text x=\"%g\" y=\"%g\" text-anchor=\"end\">%.2f</text>\n", L - 6, y + 4, yv);
        fprintf(f, "<text x=\"%g\" y=\"%g\" text-anchor=\"middle\">%.3g</text>\n", x, T + ph + 18,
                xv);
    }
    fprintf(f, "<text x=\"%g\" y=\"%g\" text-anchor=\"middle\">request rate (req/s)</text>\n",
            L + pw / 2, H - 10);
    fprintf(f,
            "<text x=\"15\" y=\"%g\" transform=\"rotate(-90 15 %g)\" text-anchor=\"middle\">"
            "normalized latency (s/token, clipped at %.1f)</text>\n",
            T + ph / 2, T + ph / 2, ymax);
    int row = 0;
    for (int k = 0; k < 4; k++) {
        if (!o->policies[k])
            continue;
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", colour[k]);
        for (int i = 0; i < o->n_rates; i++) {
            const kvl_sim_result *r = &res[k * o->n_rates + i];
            double y = r->norm_latency < ymax ? r->norm_latency : ymax;
            fprintf(f, "%.1f,%.1f ", L + pw * o->rates[i] / xmax, T + ph - ph * y / ymax);
        }
        fprintf(f, "\"/>\n<text x=\"%g\" y=\"%g\" fill=\"%s\">%s</text>\n", W - R + 10,
                T + 16 + 18 * row++, colour[k], kvl_sim_policy_name((kvl_sched_reserve)k));
    }
    fprintf(f, "</svg>\n");
}

/* ---- run ------------------------------------------------------------------ */

/* What the per-step callback feeds: the --steps log and the samples of the
 * KV-over-time chart (at most KV_PTS, thinned by halving when full). */
#define KV_PTS 1024
typedef struct step_sink {
    FILE *steps;
    double t[KV_PTS], tok[KV_PTS], frag[KV_PTS], res[KV_PTS], rnd[KV_PTS];
    int n;
    double every, next;
} step_sink;

static void on_step(void *user, const kvl_sched_plan *pl, const kvl_sim_step *c,
                    const kvl_sim_kv *kv, double t) {
    step_sink *k = user;
    if (k->steps)
        fprintf(k->steps, "%.6f %.6f %d %d %d %d %.5f %.5f %.5f %.5f %.5f\n", t, c->seconds,
                (int)pl->n_items, (int)pl->batch.n_tokens, (int)pl->n_prefill, (int)pl->n_decode,
                kv->occupancy, kv->tokens, kv->frag, kv->reserved, kv->rounding);
    if (t < k->next)
        return;
    if (k->n == KV_PTS) { /* keep every other sample, sample half as often */
        for (int i = 0; i < KV_PTS / 2; i++) {
            k->t[i] = k->t[2 * i];
            k->tok[i] = k->tok[2 * i];
            k->frag[i] = k->frag[2 * i];
            k->res[i] = k->res[2 * i];
            k->rnd[i] = k->rnd[2 * i];
        }
        k->n = KV_PTS / 2;
        k->every *= 2;
    }
    k->t[k->n] = t;
    k->tok[k->n] = kv->tokens;
    k->frag[k->n] = kv->tokens + kv->frag;
    k->res[k->n] = kv->tokens + kv->frag + kv->reserved;
    k->rnd[k->n] = k->res[k->n] + kv->rounding;
    k->n++;
    k->next = t + k->every;
}

/* KV over time: stacked lines (tokens; + fragmentation; + reservation;
 * + the buddy allocator's rounding) as
 * fractions of the pool's slots. */
static void write_kv_svg(FILE *f, const step_sink *k, const char *title) {
    const double W = 640, H = 360, L = 60, R = 150, T = 40, B = 50;
    double pw = W - L - R, ph = H - T - B, tmax = k->n ? k->t[k->n - 1] : 1;
    if (tmax <= 0)
        tmax = 1;
    fprintf(f,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%g\" height=\"%g\" "
            "font-family=\"sans-serif\" font-size=\"12\">\n"
            "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
            "<text x=\"%g\" y=\"20\" font-size=\"14\">%s</text>\n"
            "<rect x=\"%g\" y=\"%g\" width=\"%g\" height=\"%g\" fill=\"none\" "
            "stroke=\"black\"/>\n",
            W, H, L, title, L, T, pw, ph);
    for (int i = 0; i <= 4; i++)
        fprintf(f,
                "<text x=\"%g\" y=\"%g\" text-anchor=\"end\">%.2f</text>\n"
                "<text x=\"%g\" y=\"%g\" text-anchor=\"middle\">%.0f</text>\n",
                L - 6, T + ph - ph * i / 4 + 4, i / 4.0, L + pw * i / 4, T + ph + 18, tmax * i / 4);
    fprintf(f,
            "<text x=\"%g\" y=\"%g\" text-anchor=\"middle\">simulated time (s)</text>\n"
            "<text x=\"15\" y=\"%g\" transform=\"rotate(-90 15 %g)\" "
            "text-anchor=\"middle\">fraction of KV slots</text>\n",
            L + pw / 2, H - 10, T + ph / 2, T + ph / 2);
    static const char *const names[4] = {"tokens", "+ fragmentation", "+ reserved",
                                         "+ buddy rounding"};
    static const char *const colour[4] = {"#1f77b4", "#ff7f0e", "#d62728", "#7f7f7f"};
    for (int j = 0; j < 4; j++) {
        const double *y = j == 0 ? k->tok : j == 1 ? k->frag : j == 2 ? k->res : k->rnd;
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" points=\"",
                colour[j]);
        for (int i = 0; i < k->n; i++)
            fprintf(f, "%.1f,%.1f ", L + pw * k->t[i] / tmax, T + ph - ph * y[i]);
        fprintf(f, "\"/>\n<text x=\"%g\" y=\"%g\" fill=\"%s\">%s</text>\n", W - R + 10,
                T + 16 + 18 * j, colour[j], names[j]);
    }
    fprintf(f, "</svg>\n");
}

int kvl_cli_sim(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "calibrate"))
        return kvl_cli_sim_calibrate(argc - 1, argv + 1);
    sim_opts o;
    int rc = parse(argc, argv, &o);
    if (rc)
        return rc < 0 ? 0 : rc;
    kvl_sim_params p;
    size_t wb = 0;
    if ((rc = setup(&o, &p, &wb)))
        return rc;
    FILE *steps = NULL, *json = NULL, *csv = NULL;
    if ((o.steps && !(steps = fopen(o.steps, "w"))) || (o.json && !(json = fopen(o.json, "w"))) ||
        (o.csv && !(csv = fopen(o.csv, "w")))) {
        fprintf(stderr, "kvllm sim: cannot create an output file\n");
        return 1;
    }
    const kvl_sim_cost *c = &p.cost;
    printf("sim: %s, %s weights (%.2f GiB), KV %s %.0f bytes/token; %d x %s (%.3g GB/s x %.2f, "
           "%.3g TFLOP/s x %.2f, +%.4f s/step)\n"
           "sim: KV budget %.2f GiB, blocks of %d, max_seqs %d, max_batch_tokens %d\n",
           c->shape.name, kvl_type_name(c->wtype), (double)wb / (1u << 30),
           kvl_kv_format_get(p.kv_fmt)->name, c->kv_token_bytes, (int)c->tp, c->dev.name,
           c->dev.bandwidth / 1e9, c->dev.mbu, c->dev.flops / 1e12, c->dev.mfu,
           c->dev.step_overhead_s, (double)p.kv_budget / (1u << 30), p.block_size, p.max_seqs,
           p.max_batch_tokens);
    if (c->dev.attn_s_per_pos > 0 || c->dev.tok_s_per_layer > 0 || c->dev.row_s_per_vocab > 0)
        printf("sim: served-step terms: attention %.3g s per layer-head-position (head %.0f), "
               "%.3g s per token-layer, %.3g s per row-vocab entry\n",
               c->dev.attn_s_per_pos, c->dev.attn_head_dim, c->dev.tok_s_per_layer,
               c->dev.row_s_per_vocab);
    int n_runs = 0;
    for (int k = 0; k < 4; k++)
        n_runs += o.policies[k] ? o.n_rates : 0;
    if (json)
        fprintf(json,
                "{\"model\": \"%s\", \"device\": \"%s\", \"tp\": %d, \"kv_budget\": %zu, "
                "\"seed\": %llu, \"results\": [",
                c->shape.name, c->dev.name, (int)c->tp, p.kv_budget, (unsigned long long)o.w.seed);
    double best[4] = {0};
    int done = 0;
    kvl_sim_result *all = calloc((size_t)(4 * o.n_rates), sizeof *all);
    step_sink *sink = calloc(1, sizeof *sink);
    if (!all || !sink) {
        free(all);
        free(sink);
        fprintf(stderr, "kvllm sim: out of memory\n");
        return 1;
    }
    for (int k = 0; k < 4; k++) {
        if (!o.policies[k])
            continue;
        for (int i = 0; i < o.n_rates; i++) {
            kvl_sim_workload w = o.w;
            w.rate = o.rates[i];
            p.policy = (kvl_sched_reserve)k;
            sink->steps = steps;
            sink->n = 0;
            sink->next = 0;
            sink->every = (w.arrivals == KVL_SIM_ARR_BURST || w.lengths == KVL_SIM_LEN_TRACE ||
                           w.n_requests > 0)
                              ? 0.01
                              : w.duration_s / (KV_PTS / 2);
            p.on_step = steps || o.svg_kv ? on_step : NULL;
            p.user = sink;
            kvl_sim_result r;
            kvl_error err;
            if (kvl_sim_run(&p, &w, &r, &err)) {
                fprintf(stderr, "kvllm %s\n", err.msg);
                free(all);
                free(sink);
                return 1;
            }
            all[k * o.n_rates + i] = r;
            if (o.svg_kv && n_runs == 1) {
                FILE *f = fopen(o.svg_kv, "w");
                char title[200];
                snprintf(title, sizeof title, "KV: %s on %s, %s, %.3g req/s", c->shape.name,
                         c->dev.name, r.policy, r.rate);
                if (f) {
                    write_kv_svg(f, sink, title);
                    fclose(f);
                } else {
                    fprintf(stderr, "kvllm sim: --svg-kv %s: cannot create\n", o.svg_kv);
                }
            }
            if (n_runs == 1)
                kvl_sim_result_text(&r, stdout);
            else
                kvl_sim_result_row(&r, done == 0, stdout);
            if (json) {
                fprintf(json, "%s\n  ", done ? "," : "");
                kvl_sim_result_json(&r, json);
            }
            if (csv)
                kvl_sim_result_csv(&r, done == 0, csv);
            if (r.norm_latency <= o.slo && r.n_done == r.n_requests && r.rate > best[k])
                best[k] = r.rate;
            done++;
            fflush(stdout);
        }
    }
    if (o.n_rates > 1) {
        printf("highest swept rate with normalized latency <= %g s/token:", o.slo);
        for (int k = 0; k < 4; k++)
            if (o.policies[k])
                printf("  %s %.3g", kvl_sim_policy_name((kvl_sched_reserve)k), best[k]);
        printf("\n");
    }
    if (o.svg) {
        FILE *f = fopen(o.svg, "w");
        char title[160];
        snprintf(title, sizeof title, "%s on %d x %s, KV %.1f GiB", c->shape.name, (int)c->tp,
                 c->dev.name, (double)p.kv_budget / (1u << 30));
        if (f) {
            write_svg(f, &o, all, title);
            fclose(f);
        } else {
            fprintf(stderr, "kvllm sim: --svg %s: cannot create\n", o.svg);
        }
    }
    free(all);
    free(sink);
    if (json) {
        fprintf(json, "\n]}\n");
        fclose(json);
    }
    if (csv)
        fclose(csv);
    if (steps)
        fclose(steps);
    return 0;
}
