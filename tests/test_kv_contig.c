/*
 * The contiguous KV cache against a naive attention computed in double over
 * the same random K/V, for MHA, GQA and MQA shapes; fork by copy; bad
 * arguments rejected with messages.
 */
#include "kv/kv_contig.h"

#include "testutil.h"

#include <stdlib.h>

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static float rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 40) & 0xffffff) / (float)0x1000000 * 2.0f - 1.0f;
}

static kvl_hparams shape(int64_t n_layers, int64_t n_heads, int64_t n_kv_heads, int64_t hd) {
    kvl_hparams hp = {0};
    hp.n_layers = n_layers;
    hp.n_heads = n_heads;
    hp.n_kv_heads = n_kv_heads;
    hp.head_dim = hd;
    hp.dim = n_heads * hd;
    return hp;
}

/* naive reference: ref[h] = softmax(q[h].K * scale) V over the given rows */
static void naive(const kvl_hparams *hp, int32_t n_ctx, const float *keys, const float *vals,
                  const float *q, float scale, double *ref) {
    int64_t hd = hp->head_dim, kvd = hp->n_kv_heads * hd;
    int64_t group = hp->n_heads / hp->n_kv_heads;
    double *s = malloc(sizeof(double) * (size_t)n_ctx);
    for (int64_t h = 0; h < hp->n_heads; h++) {
        int64_t kh = h / group;
        double mx = -1e300, sum = 0;
        for (int32_t p = 0; p < n_ctx; p++) {
            double d = 0;
            for (int64_t i = 0; i < hd; i++)
                d += (double)q[h * hd + i] * keys[p * kvd + kh * hd + i];
            s[p] = d * scale;
            if (s[p] > mx)
                mx = s[p];
        }
        for (int32_t p = 0; p < n_ctx; p++) {
            s[p] = exp(s[p] - mx);
            sum += s[p];
        }
        for (int64_t i = 0; i < hd; i++) {
            double o = 0;
            for (int32_t p = 0; p < n_ctx; p++)
                o += s[p] / sum * vals[p * kvd + kh * hd + i];
            ref[h * hd + i] = o;
        }
    }
    free(s);
}

static void check_shape(int64_t n_layers, int64_t n_heads, int64_t n_kv_heads, int64_t hd) {
    kvl_hparams hp = shape(n_layers, n_heads, n_kv_heads, hd);
    const int32_t n_seqs = 3, max_ctx = 37, n_ctx = 29;
    kvl_error err;
    kvl_kv_contig *c = NULL;
    CHECK_EQ_INT(kvl_kv_contig_init(&hp, n_seqs, max_ctx, &c, &err), KVL_OK);
    if (!c)
        return;
    kvl_kv_iface kv = kvl_kv_contig_iface(c);
    int64_t kvd = n_kv_heads * hd, qd = n_heads * hd;
    /* keys[seq][layer]: (n_ctx, n_kv_heads, head_dim) */
    size_t per = (size_t)n_ctx * (size_t)kvd;
    float *keys = malloc(sizeof(float) * per * (size_t)(n_seqs * n_layers));
    float *vals = malloc(sizeof(float) * per * (size_t)(n_seqs * n_layers));
    for (size_t i = 0; i < per * (size_t)(n_seqs * n_layers); i++) {
        keys[i] = rnd() * 3.0f;
        vals[i] = rnd();
    }
    /* store in a scrambled order: by position, then layer, then sequence */
    for (int32_t p = n_ctx - 1; p >= 0; p--)
        for (int32_t l = 0; l < n_layers; l++)
            for (int32_t s = 0; s < n_seqs; s++) {
                size_t o = (size_t)(s * n_layers + l) * per + (size_t)p * (size_t)kvd;
                kv.store(kv.ctx, l, s, p, keys + o, vals + o);
            }
    float *q = malloc(sizeof(float) * (size_t)qd);
    float *out = malloc(sizeof(float) * (size_t)qd);
    float *scratch = malloc(sizeof(float) * (size_t)max_ctx);
    double *ref = malloc(sizeof(double) * (size_t)qd);
    float scale = 1.0f / sqrtf((float)hd);
    double worst = 0;
    for (int32_t s = 0; s < n_seqs; s++)
        for (int32_t l = 0; l < n_layers; l++)
            for (int32_t nc = 1; nc <= n_ctx; nc += 7) {
                for (int64_t i = 0; i < qd; i++)
                    q[i] = rnd();
                size_t o = (size_t)(s * n_layers + l) * per;
                naive(&hp, nc, keys + o, vals + o, q, scale, ref);
                /* two halves of the heads, as two threads would */
                int32_t mid = (int32_t)(n_heads / 2);
                kv.attend(kv.ctx, l, s, nc, q, out, 0, mid, scale, scratch);
                kv.attend(kv.ctx, l, s, nc, q, out, mid, (int32_t)n_heads, scale, scratch);
                for (int64_t i = 0; i < qd; i++) {
                    double e = fabs(out[i] - ref[i]);
                    if (e > worst)
                        worst = e;
                }
            }
    CHECK(worst < 1e-5);
    if (!(worst < 1e-5))
        fprintf(stderr, "shape %lld/%lld/%lld/%lld: max error %g\n", (long long)n_layers,
                (long long)n_heads, (long long)n_kv_heads, (long long)hd, worst);

    /* fork: copy seq 0's first 20 positions into seq 2; attention over 20
     * positions must now agree bit for bit between seq 0 and seq 2 */
    CHECK_EQ_INT(kvl_kv_contig_copy(c, 0, 2, 20, &err), KVL_OK);
    float *out2 = malloc(sizeof(float) * (size_t)qd);
    for (int32_t l = 0; l < n_layers; l++) {
        kv.attend(kv.ctx, l, 0, 20, q, out, 0, (int32_t)n_heads, scale, scratch);
        kv.attend(kv.ctx, l, 2, 20, q, out2, 0, (int32_t)n_heads, scale, scratch);
        CHECK(memcmp(out, out2, sizeof(float) * (size_t)qd) == 0);
    }
    /* ... and seq 2's position 20 onward is untouched */
    for (int32_t l = 0; l < n_layers; l++) {
        size_t o = (size_t)(2 * n_layers + l) * per;
        naive(&hp, 25, keys + o, vals + o, q, scale, ref);
        /* positions 0..19 are now seq 0's; build that mix */
        float *mk = malloc(sizeof(float) * per), *mv = malloc(sizeof(float) * per);
        size_t o0 = (size_t)(0 * n_layers + l) * per;
        memcpy(mk, keys + o, sizeof(float) * per);
        memcpy(mv, vals + o, sizeof(float) * per);
        memcpy(mk, keys + o0, sizeof(float) * 20 * (size_t)kvd);
        memcpy(mv, vals + o0, sizeof(float) * 20 * (size_t)kvd);
        naive(&hp, 25, mk, mv, q, scale, ref);
        kv.attend(kv.ctx, l, 2, 25, q, out, 0, (int32_t)n_heads, scale, scratch);
        for (int64_t i = 0; i < qd; i++)
            CHECK_NEAR(out[i], ref[i], 1e-5);
        free(mk);
        free(mv);
    }

    CHECK_EQ_INT(kvl_kv_contig_bytes_per_token(c), (size_t)(2 * n_layers * kvd * 4));
    CHECK_EQ_INT(kvl_kv_contig_seq_bytes(c), (size_t)(2 * n_layers * kvd * 4 * max_ctx));
    CHECK_EQ_INT(kvl_kv_contig_bytes(c), (size_t)(2 * n_layers * kvd * 4 * max_ctx * n_seqs));

    free(out2);
    free(q);
    free(out);
    free(scratch);
    free(ref);
    free(keys);
    free(vals);
    kvl_kv_contig_free(c);
}

static void check_errors(void) {
    kvl_error err;
    kvl_kv_contig *c = NULL;
    kvl_hparams hp = shape(2, 4, 3, 8);
    CHECK_EQ_INT(kvl_kv_contig_init(&hp, 1, 8, &c, &err), KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "n_kv_heads 3");
    CHECK(c == NULL);
    hp = shape(2, 4, 2, 8);
    CHECK_EQ_INT(kvl_kv_contig_init(&hp, 0, 8, &c, &err), KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "n_seqs 0");
    CHECK_EQ_INT(kvl_kv_contig_init(&hp, 1, 0, &c, &err), KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "max_ctx 0");
    hp = shape(1000, 1024, 1024, 1024);
    CHECK_EQ_INT(kvl_kv_contig_init(&hp, 65536, 1 << 24, &c, &err), KVL_E_LIMIT);
    CHECK_CONTAINS(err.msg, "overflows");
    hp = shape(2, 4, 2, 8);
    CHECK_EQ_INT(kvl_kv_contig_init(&hp, 2, 8, &c, &err), KVL_OK);
    CHECK_EQ_INT(kvl_kv_contig_copy(c, 0, 2, 4, &err), KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "dst seq 2");
    CHECK_EQ_INT(kvl_kv_contig_copy(c, -1, 1, 4, &err), KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "src seq -1");
    CHECK_EQ_INT(kvl_kv_contig_copy(c, 0, 1, 9, &err), KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "n_pos 9");
    CHECK_EQ_INT(kvl_kv_contig_copy(c, 0, 1, 8, &err), KVL_OK);
    kvl_kv_contig_free(c);
    kvl_kv_contig_free(NULL);
}

int main(void) {
    check_shape(2, 4, 4, 16); /* MHA */
    check_shape(3, 8, 2, 12); /* GQA, head_dim not a multiple of 8 */
    check_shape(1, 6, 1, 8);  /* MQA */
    check_errors();
    return kvt_finish("test_kv_contig");
}
