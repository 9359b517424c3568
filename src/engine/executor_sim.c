/*
 * The simulated executor and its cost model (executor_sim.h has the
 * formula). Every constant is in k_constants with its source; devices come
 * from the catalogue (plan/catalog.c: memory, bandwidth, bf16 FLOP/s) with
 * the link figures of k_links, or from a calibration file.
 *
 * Must not: allocate in run(); read a KV store (the KV interface it is
 * given may be a metadata-only ledger, whose store/attend assert).
 */
#include "engine/executor_sim.h"

#include "plan/planner.h"

#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdlib.h>
#include <strings.h>

/* ---- constants ------------------------------------------------------------ */

static const kvl_sim_constant k_constants[] = {
    {"paged_attention_penalty", 0.20,
     "Kwon et al., Efficient Memory Management for LLM Serving with PagedAttention, SOSP'23, "
     "sec. 7.1: the paged attention kernel's latency is 20-26% above FasterTransformer's; the "
     "low end, applied to the KV read bytes of the paged layout only"},
    {"gpu_mbu", 0.80,
     "assumption (not measured: no GPU here): fraction of datasheet bandwidth a decode step "
     "reaches; change with --mbu"},
    {"gpu_mfu", 0.50,
     "assumption (not measured): fraction of datasheet dense bf16 FLOP/s a prefill step "
     "reaches; change with --mfu"},
    {"gpu_step_overhead_s", 0.002,
     "assumption (not measured): scheduling, launches and sampling per step; change with "
     "--overhead"},
    {"vllm_cpu_step_overhead_s", 0.0082,
     "the CPU-side work per step of the Python vLLM engine (--overhead vllm, for reproducing "
     "vLLM-era results): vLLM blog 2024-09-05 (v0.6.0 performance update) profiled v0.5.3 "
     "serving Llama-3-8B on one H100 with GPU execution under 38% of the time (API server "
     "33%, scheduling and input preparation 29%); vLLM blog 2025-01-24 (V1) puts that GPU "
     "step at ~5 ms; 5 ms x (1 / 0.38 - 1) = 8.2 ms. A later vLLM, another model and GPU: an "
     "estimate, not a measurement of the paper's system"},
    {"link_latency_s", 10e-6, "assumption (not measured): latency of one all-reduce"},
    {"activation_bytes", 2.0, "bf16 activations in the tensor-parallel all-reduce"},
    {"allreduces_per_layer", 2.0,
     "Shoeybi et al., Megatron-LM, 2019, sec. 3: one all-reduce after attention, one after the "
     "MLP, in the forward pass"},
};

const kvl_sim_constant *kvl_sim_constants(size_t *n) {
    *n = sizeof k_constants / sizeof k_constants[0];
    return k_constants;
}

double kvl_sim_constant_get(const char *name) {
    for (size_t i = 0; i < sizeof k_constants / sizeof k_constants[0]; i++)
        if (!strcmp(k_constants[i].name, name))
            return k_constants[i].value;
    return 0;
}

/* Device links, bytes/s per direction (datasheets give both directions
 * together; half of it is one direction). */
typedef struct link_fig {
    const char *device;
    double peer; /* NVLink, or PCIe when the card has none */
    double host; /* PCIe */
    const char *source;
} link_fig;
static const link_fig k_links[] = {
    {"A100-40GB", 300e9, 32e9, "NVIDIA A100 datasheet: NVLink 600 GB/s, PCIe Gen4 64 GB/s"},
    {"A100-80GB", 300e9, 32e9, "NVIDIA A100 datasheet: NVLink 600 GB/s, PCIe Gen4 64 GB/s"},
    {"H100-80GB", 450e9, 64e9, "NVIDIA H100 datasheet (SXM): NVLink 900 GB/s, PCIe Gen5 128 GB/s"},
    {"H200-141GB", 450e9, 64e9, "NVIDIA H200 datasheet (SXM): NVLink 900 GB/s, PCIe Gen5 128 GB/s"},
    {"L40S-48GB", 32e9, 32e9, "NVIDIA L40S datasheet: PCIe Gen4 x16 64 GB/s, no NVLink"},
    {"L4-24GB", 32e9, 32e9, "NVIDIA L4 datasheet: PCIe Gen4 x16 64 GB/s, no NVLink"},
    {"RTX4090-24GB", 32e9, 32e9, "PCIe Gen4 x16: 64 GB/s both directions, no NVLink"},
};

kvl_status kvl_sim_device_from_catalog(const char *name, kvl_sim_device *out, kvl_error *err) {
    const kvl_catalog_device *d = kvl_catalog_device_find(name);
    if (!d) {
        char names[512];
        size_t n, o = 0;
        const kvl_catalog_device *all = kvl_catalog_devices(&n);
        names[0] = 0;
        for (size_t i = 0; i < n && o < sizeof names; i++)
            o += (size_t)snprintf(names + o, sizeof names - o, "%s%s", i ? ", " : "", all[i].name);
        return kvl_errorf(err, KVL_E_INVALID, "sim: --device '%s' is not one of %s, cpu",
                          name ? name : "(null)", names);
    }
    kvl_sim_device v;
    memset(&v, 0, sizeof v);
    snprintf(v.name, sizeof v.name, "%s", d->name);
    v.bytes = d->bytes;
    v.bandwidth = d->bandwidth;
    v.flops = d->flops_bf16;
    v.mbu = kvl_sim_constant_get("gpu_mbu");
    v.mfu = kvl_sim_constant_get("gpu_mfu");
    v.step_overhead_s = kvl_sim_constant_get("gpu_step_overhead_s");
    v.link_latency_s = kvl_sim_constant_get("link_latency_s");
    v.source = d->spec_source;
    for (size_t i = 0; i < sizeof k_links / sizeof k_links[0]; i++)
        if (!strcmp(k_links[i].device, d->name)) {
            v.link_bandwidth = k_links[i].peer;
            v.host_bandwidth = k_links[i].host;
        }
    *out = v;
    return KVL_OK;
}

/* The numeric keys of a calibration file, where each goes and its range
 * (a value outside is refused naming the key and the range). */
typedef struct calib_key {
    const char *key;
    size_t off; /* of the double in kvl_sim_device; SIZE_MAX: special */
    double lo, hi;
} calib_key;
#define DEV_OFF(f) offsetof(kvl_sim_device, f)
static const calib_key k_calib_keys[] = {
    {"bandwidth", DEV_OFF(bandwidth), 0, 1e30},
    {"flops", DEV_OFF(flops), 0, 1e30},
    {"step_overhead_s", DEV_OFF(step_overhead_s), 0, 10},
    {"bytes", SIZE_MAX, 0, 1e30},
    {"serial", SIZE_MAX, 0, 1},
    {"mm_s_per_byte_1", DEV_OFF(mm_s_per_byte[0]), 0, 1e30},
    {"mm_s_per_byte_2", DEV_OFF(mm_s_per_byte[1]), 0, 1e30},
    {"mm_s_per_byte_3", DEV_OFF(mm_s_per_byte[2]), 0, 1e30},
    {"mm_s_per_byte_4", DEV_OFF(mm_s_per_byte[3]), 0, 1e30},
    {"mm_s_per_byte_8", DEV_OFF(mm_s_per_byte[4]), 0, 1e30},
    {"mm_s_per_byte_16", DEV_OFF(mm_s_per_byte[5]), 0, 1e30},
    {"mm_s_per_byte_32", DEV_OFF(mm_s_per_byte[6]), 0, 1e30},
    {"mm_s_per_byte_64", DEV_OFF(mm_s_per_byte[7]), 0, 1e30},
    {"mm_token_group", DEV_OFF(mm_token_group), 0, 4096},
    {"attn_s_per_pos", DEV_OFF(attn_s_per_pos), 0, 1e-3},
    {"attn_head_dim", DEV_OFF(attn_head_dim), 1, 4096},
    {"tok_s_per_layer", DEV_OFF(tok_s_per_layer), 0, 1},
    {"row_s_per_vocab", DEV_OFF(row_s_per_vocab), 0, 1e-3},
};

/* One "key value" line into v (unknown keys are for people). */
static kvl_status calib_line(const char *path, int ln, const char *key, const char *val,
                             kvl_sim_device *v, kvl_error *err) {
    if (!strcmp(key, "name")) {
        snprintf(v->name, sizeof v->name, "%.63s", val);
        return KVL_OK;
    }
    for (size_t i = 0; i < sizeof k_calib_keys / sizeof k_calib_keys[0]; i++) {
        const calib_key *k = &k_calib_keys[i];
        if (strcmp(key, k->key))
            continue;
        char *end;
        double x = strtod(val, &end);
        if (*end || !(x >= k->lo && x <= k->hi) || (k->hi == 1e30 && x == 1e30))
            return kvl_errorf(err, KVL_E_FORMAT,
                              "sim: %s line %d: %s '%s' is not a number in [%g, %g%s", path, ln,
                              key, val, k->lo, k->hi, k->hi == 1e30 ? ")" : "]");
        if (!strcmp(key, "bytes"))
            v->bytes = (size_t)x;
        else if (!strcmp(key, "serial"))
            v->serial = x != 0;
        else
            *(double *)((char *)v + k->off) = x;
        return KVL_OK;
    }
    return KVL_OK; /* stream_read, threads, ...: for people */
}

kvl_status kvl_sim_device_from_file(const char *path, kvl_sim_device *out, kvl_error *err) {
    FILE *f = fopen(path, "r");
    if (!f)
        return kvl_errorf(err, KVL_E_IO,
                          "sim: --calib %s: cannot open (run `kvllm sim calibrate "
                          "-o %s` first)",
                          path, path);
    kvl_sim_device v;
    memset(&v, 0, sizeof v);
    snprintf(v.name, sizeof v.name, "cpu");
    v.mbu = v.mfu = 1;
    v.bytes = (size_t)16 << 30; /* when the file has no bytes line */
    v.source = "measured by kvllm sim calibrate";
    char line[256];
    int ln = 0;
    kvl_status st = KVL_OK;
    while (st == KVL_OK && fgets(line, sizeof line, f)) {
        ln++;
        char key[64], val[128];
        if (line[0] == '#' || line[0] == '\n')
            continue;
        if (sscanf(line, "%63s %127s", key, val) != 2)
            st = kvl_errorf(err, KVL_E_FORMAT, "sim: %s line %d: want 'key value'", path, ln);
        else
            st = calib_line(path, ln, key, val, &v, err);
    }
    fclose(f);
    if (st == KVL_OK && (v.bandwidth <= 0 || v.flops <= 0))
        st = kvl_errorf(err, KVL_E_FORMAT,
                        "sim: %s: bandwidth and flops must both be > 0 "
                        "(got %g, %g)",
                        path, v.bandwidth, v.flops);
    if (st == KVL_OK && v.attn_s_per_pos > 0 && !(v.attn_head_dim >= 1))
        st = kvl_errorf(err, KVL_E_FORMAT,
                        "sim: %s: attn_s_per_pos needs attn_head_dim (the head size it was "
                        "measured at, in [1, 4096])",
                        path);
    v.host_bandwidth = v.bandwidth; /* swap on a CPU is a memcpy */
    if (st == KVL_OK)
        *out = v;
    return st;
}

/* ---- the model ------------------------------------------------------------ */

static double type_bytes(kvl_type t) {
    size_t blck = 1, bb = 4;
    kvl_type_info((uint32_t)t, &blck, &bb, NULL);
    return (double)bb / (double)blck;
}

kvl_status kvl_sim_cost_init(const kvl_model_shape *shape, kvl_type wtype, double kv_token_bytes,
                             const kvl_sim_device *dev, int32_t tp, bool paged, kvl_sim_cost *out,
                             kvl_error *err) {
    kvl_status st = kvl_plan_shape_validate(shape, err);
    if (st)
        return st;
    size_t wb;
    if ((st = kvl_plan_weight_bytes(shape, wtype, &wb, err)))
        return st;
    const kvl_hparams *hp = &shape->hp;
    if (tp < 1 || tp > 64 || hp->n_heads % tp || hp->n_kv_heads % tp)
        return kvl_errorf(err, KVL_E_INVALID,
                          "sim: --tp %d must be in [1, 64] and divide n_heads %lld and "
                          "n_kv_heads %lld",
                          (int)tp, (long long)hp->n_heads, (long long)hp->n_kv_heads);
    if (!(dev->bandwidth > 0) || !(dev->flops > 0) || !(dev->mbu > 0) || !(dev->mfu > 0) ||
        dev->mbu > 1 || dev->mfu > 1 || dev->step_overhead_s < 0)
        return kvl_errorf(err, KVL_E_INVALID,
                          "sim: device '%s': bandwidth %g, flops %g must be > 0, mbu %g and mfu "
                          "%g in (0, 1], overhead %g >= 0",
                          dev->name, dev->bandwidth, dev->flops, dev->mbu, dev->mfu,
                          dev->step_overhead_s);
    if (tp > 1 && !(dev->link_bandwidth > 0))
        return kvl_errorf(err, KVL_E_INVALID, "sim: device '%s' has no link figure for --tp %d",
                          dev->name, (int)tp);
    kvl_sim_cost c;
    memset(&c, 0, sizeof c);
    c.shape = *shape;
    c.wtype = wtype;
    c.kv_token_bytes = kv_token_bytes;
    c.dev = *dev;
    c.tp = tp;
    c.paged = paged;
    c.paged_penalty = kvl_sim_constant_get("paged_attention_penalty");
    double d = (double)hp->dim, q = (double)(hp->n_heads * hp->head_dim),
           kv = (double)(hp->n_kv_heads * hp->head_dim), ff = (double)hp->ffn_dim;
    double per_layer = d * q + 2 * d * kv + q * d + (shape->arch == KVL_ARCH_OPT ? 2 : 3) * d * ff;
    c.lin_params = per_layer * (double)hp->n_layers;
    c.head_params = d * (double)hp->n_vocab;
    double tb = type_bytes(wtype);
    c.lin_bytes = c.lin_params * tb;
    c.head_bytes = c.head_params * tb;
    c.embd_row_bytes = d * tb;
    *out = c;
    return KVL_OK;
}

const int32_t kvl_sim_mm_tokens[KVL_SIM_MM_POINTS] = {1, 2, 3, 4, 8, 16, 32, 64};

/* Seconds per weight byte of a product of n tokens, from the measured
 * points (those set: linear in tokens between neighbours, proportional to
 * tokens past the last); from 16 tokens up, n rounded up to the kernel's
 * token group (mm_token_group) first. */
static double mm_per_byte(const kvl_sim_device *d, double n) {
    if (n <= 0)
        return 0;
    const double g = d->mm_token_group;
    if (g > 1 && n > 16)
        n = ceil(n / g) * g;
    double at0 = 0, v0 = 0; /* the last point at or below n */
    for (int i = 0; i < KVL_SIM_MM_POINTS; i++) {
        const double at = kvl_sim_mm_tokens[i], v = d->mm_s_per_byte[i];
        if (v <= 0)
            continue;
        if (n <= at) {
            if (at0 == 0) /* below the first point: its rate */
                return v;
            return v0 + (n - at0) / (at - at0) * (v - v0);
        }
        at0 = at, v0 = v;
    }
    return v0 * n / at0;
}

/* A calibrated CPU (serial, measured products): the weights at the
 * measured products; attention at its measured rate per (layer x head x
 * position) when the file has one, else its FLOPs at the 64-token product
 * rate with the KV read at the bandwidth; the per-token and per-row work
 * at their measured rates (0 when not measured); the KV written and the
 * embedding rows at the bandwidth. Fills t_compute (weights + attention +
 * the rest), t_attn, t_other, t_memory; returns their sum. */
static double cpu_serial(const kvl_sim_cost *c, kvl_sim_step *s, double n, double ctx_sum,
                         double attn_flops, double weights) {
    const kvl_sim_device *d = &c->dev;
    const kvl_hparams *hp = &c->shape.hp;
    const double tp = c->tp;
    double mem = s->bytes - weights + n * c->embd_row_bytes; /* KV read and written, rows */
    if (d->attn_s_per_pos > 0) {
        s->t_attn = d->attn_s_per_pos * ((double)hp->head_dim / d->attn_head_dim) *
                    (double)hp->n_layers * (double)hp->n_heads * ctx_sum / tp;
        mem -= s->kv_read_bytes * (c->paged ? 1 + c->paged_penalty : 1);
    } else {
        s->t_attn = attn_flops / tp / (d->flops * d->mfu);
    }
    s->t_other = d->tok_s_per_layer * n * (double)hp->n_layers +
                 d->row_s_per_vocab * (double)s->n_logits * (double)hp->n_vocab;
    s->t_compute = c->lin_bytes / tp * mm_per_byte(d, n) +
                   c->head_bytes / tp * mm_per_byte(d, s->n_logits) + s->t_attn + s->t_other;
    s->t_memory = mem / (d->bandwidth * d->mbu);
    return s->t_compute + s->t_memory;
}

void kvl_sim_cost_batch(const kvl_sim_cost *c, const kvl_batch *b, kvl_sim_step *out) {
    const kvl_hparams *hp = &c->shape.hp;
    kvl_sim_step s;
    memset(&s, 0, sizeof s);
    double ctx_sum = 0, kv_read_tokens = 0;
    for (int32_t i = 0; i < b->n_tokens; i++) {
        bool want = b->logits ? b->logits[i] : i == b->n_tokens - 1;
        s.n_logits += want;
        ctx_sum += (double)b->pos[i] + 1;
        bool run_end = i + 1 == b->n_tokens || b->seq[i + 1] != b->seq[i];
        if (run_end) {
            s.n_runs++;
            kv_read_tokens += (double)b->pos[i] + 1;
        }
    }
    s.n_tokens = b->n_tokens;
    const double tp = c->tp, n = b->n_tokens;
    double attn_flops = 4.0 * (double)hp->n_layers * (double)(hp->n_heads * hp->head_dim) * ctx_sum;
    s.flops = (2 * c->lin_params * n + 2 * c->head_params * s.n_logits + attn_flops) / tp;
    s.kv_read_bytes = kv_read_tokens * c->kv_token_bytes / tp;
    double kv_write = n * c->kv_token_bytes / tp;
    double weights = (c->lin_bytes + (s.n_logits ? c->head_bytes : 0)) / tp + n * c->embd_row_bytes;
    s.bytes = weights + s.kv_read_bytes * (c->paged ? 1 + c->paged_penalty : 1) + kv_write;
    if (n == 0) {
        *out = s;
        return;
    }
    s.t_compute = s.flops / (c->dev.flops * c->dev.mfu);
    s.t_memory = s.bytes / (c->dev.bandwidth * c->dev.mbu);
    if (c->tp > 1) {
        double msg = n * (double)hp->dim * kvl_sim_constant_get("activation_bytes");
        double per = c->dev.link_latency_s + 2 * (tp - 1) / tp * msg / c->dev.link_bandwidth;
        s.t_comm = kvl_sim_constant_get("allreduces_per_layer") * (double)hp->n_layers * per;
    }
    double busy = c->dev.serial ? s.t_compute + s.t_memory
                                : (s.t_compute > s.t_memory ? s.t_compute : s.t_memory);
    if (c->dev.serial && c->dev.mm_s_per_byte[0] > 0)
        busy = cpu_serial(c, &s, n, ctx_sum, attn_flops, weights);
    s.seconds = busy + s.t_comm + c->dev.step_overhead_s;
    *out = s;
}

double kvl_sim_cost_swap_seconds(const kvl_sim_cost *c, double bytes) {
    return c->dev.host_bandwidth > 0 ? bytes / c->dev.host_bandwidth : 0;
}

/* ---- the executor --------------------------------------------------------- */

typedef struct sim_exec {
    kvl_sim_cost cost;
    kvl_sim_step last;
    float *zeros; /* (max_tokens) one logit per row */
} sim_exec;

static kvl_status sim_run(kvl_executor *x, const kvl_batch *b, const kvl_kv_iface *kv,
                          const float **logits, int32_t *n_out, kvl_error *err) {
    (void)kv;
    sim_exec *e = x->impl;
    if (b->n_tokens > x->max_tokens)
        return kvl_errorf(err, KVL_E_LIMIT, "sim executor: batch of %d tokens > %d",
                          (int)b->n_tokens, (int)x->max_tokens);
    kvl_sim_cost_batch(&e->cost, b, &e->last);
    *logits = e->zeros;
    *n_out = e->last.n_logits;
    return KVL_OK;
}

static void sim_destroy(kvl_executor *x) {
    sim_exec *e = x->impl;
    if (e)
        free(e->zeros);
    free(e);
    free(x);
}

static const kvl_executor_ops sim_ops = {.name = "sim", .run = sim_run, .destroy = sim_destroy};

kvl_status kvl_executor_sim_init(const kvl_sim_cost *c, int32_t max_tokens, kvl_executor **out,
                                 kvl_error *err) {
    if (max_tokens < 1)
        return kvl_errorf(err, KVL_E_INVALID, "sim executor: max_tokens %d < 1", (int)max_tokens);
    kvl_executor *x = calloc(1, sizeof *x);
    sim_exec *e = calloc(1, sizeof *e);
    float *z = calloc((size_t)max_tokens, sizeof *z);
    if (!x || !e || !z) {
        free(x);
        free(e);
        free(z);
        return kvl_errorf(err, KVL_E_NOMEM, "sim executor: out of memory");
    }
    e->cost = *c;
    e->zeros = z;
    x->ops = &sim_ops;
    x->impl = e;
    x->max_tokens = max_tokens;
    x->n_vocab = 1;
    *out = x;
    return KVL_OK;
}

const kvl_sim_step *kvl_executor_sim_last(const kvl_executor *x) {
    return &((const sim_exec *)x->impl)->last;
}
