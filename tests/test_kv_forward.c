/*
 * End to end through the forward pass on stories260K: a prompt prefilled
 * into sequence 0, forked into three branches (mid-block, so copy-on-write
 * happens), decoded together in one batch per step with two threads. The
 * paged store, on a scrambled pool, must give the same logits bit for bit
 * as the contiguous store at every step; the prompt's KV is stored once.
 */
#include "kv/kv_contig.h"
#include "kv/kv_paged.h"
#include "model/forward.h"

#include "testutil.h"

#include <stdlib.h>

#define N_PROMPT 40
#define N_BRANCH 3
#define N_STEPS 60
#define CTX 128

static int32_t argmax_k(const float *x, int64_t n, int k) {
    /* index of the k-th largest value (k = 0: the largest); ties by index */
    int32_t best[N_BRANCH] = {-1, -1, -1};
    for (int r = 0; r <= k; r++) {
        int32_t bi = -1;
        for (int64_t i = 0; i < n; i++) {
            bool used = false;
            for (int q = 0; q < r; q++)
                used = used || best[q] == i;
            if (!used && (bi < 0 || x[i] > x[bi]))
                bi = (int32_t)i;
        }
        best[r] = bi;
    }
    return best[k];
}

int main(void) {
    kvl_error err;
    kvl_model *m = NULL;
    if (kvl_model_load(kvt_shared("models/stories260K.gguf"), NULL, &m, &err) != KVL_OK) {
        fprintf(stderr, "stories260K.gguf: %s\n", err.msg);
        CHECK(!"model loads");
        return kvt_finish("test_kv_forward");
    }
    const kvl_hparams *hp = &m->hp;
    const int64_t V = hp->n_vocab;
    kvl_pool *pool = NULL;
    CHECK_EQ_INT(kvl_pool_init(2, &pool, &err), KVL_OK);

    kvl_forward *fc = NULL, *fp = NULL;
    CHECK_EQ_INT(kvl_forward_init(m, N_PROMPT, CTX, pool, &fc, &err), KVL_OK);
    CHECK_EQ_INT(kvl_forward_init(m, N_PROMPT, CTX, pool, &fp, &err), KVL_OK);
    kvl_kv_contig *kc = NULL;
    CHECK_EQ_INT(kvl_kv_contig_init(hp, N_BRANCH, CTX, &kc, &err), KVL_OK);
    kvl_block_layout lay;
    CHECK_EQ_INT(kvl_block_layout_init(hp, 16, &lay, &err), KVL_OK);
    const uint32_t NB = 40;
    kvl_kv_paged_params pp = {
        .budget = NB * lay.block_bytes, .block_size = 16, .max_seqs = N_BRANCH, .max_ctx = CTX};
    kvl_kv_paged *kp = NULL;
    CHECK_EQ_INT(kvl_kv_paged_init(hp, &pp, &kp, &err), KVL_OK);
    if (!fc || !fp || !kc || !kp)
        return kvt_finish("test_kv_forward");

    /* scramble the pool's free queue */
    kvl_block_pool *bp = kvl_kv_paged_pool(kp);
    uint32_t ids[40];
    CHECK_EQ_INT(kvl_block_pool_alloc(bp, NB, ids, &err), KVL_OK);
    uint64_t r = 12345;
    for (uint32_t i = NB - 1; i > 0; i--) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        uint32_t j = (uint32_t)((r >> 33) % (i + 1)), t = ids[i];
        ids[i] = ids[j];
        ids[j] = t;
    }
    kvl_block_pool_decref(bp, ids, NB);

    kvl_kv_iface ic = kvl_kv_contig_iface(kc), ip = kvl_kv_paged_iface(kp);
    const float *lc, *lp;
    int32_t nc, np;

    /* prefill: a prompt of valid ids, all positions in one batch */
    int32_t tok[N_PROMPT], seq[N_PROMPT], pos[N_PROMPT];
    for (int i = 0; i < N_PROMPT; i++) {
        tok[i] = i == 0 ? 1 : (int32_t)((i * 37 + 11) % V);
        seq[i] = 0;
        pos[i] = i;
    }
    kvl_batch b = {.n_tokens = N_PROMPT, .tokens = tok, .seq = seq, .pos = pos};
    CHECK_EQ_INT(kvl_kv_paged_reserve(kp, 0, N_PROMPT, &err), KVL_OK);
    CHECK_EQ_INT(kvl_forward_run(fc, &b, &ic, &lc, &nc, &err), KVL_OK);
    CHECK_EQ_INT(kvl_forward_run(fp, &b, &ip, &lp, &np, &err), KVL_OK);
    CHECK_EQ_INT(nc, 1);
    CHECK_EQ_INT(np, 1);
    CHECK(memcmp(lc, lp, sizeof(float) * (size_t)V) == 0);

    /* fork into N_BRANCH branches; branch s starts from the s-th best token */
    int32_t next[N_BRANCH], bseq[N_BRANCH], bpos[N_BRANCH], ones[N_BRANCH];
    for (int s = 0; s < N_BRANCH; s++) {
        if (s > 0) {
            CHECK_EQ_INT(kvl_kv_paged_fork(kp, 0, s, &err), KVL_OK);
            CHECK_EQ_INT(kvl_kv_contig_copy(kc, 0, s, N_PROMPT, &err), KVL_OK);
        }
        next[s] = argmax_k(lp, V, s);
        bseq[s] = s;
        ones[s] = 1;
    }
    kvl_kv_paged_stats st;
    kvl_kv_paged_stats_get(kp, &st);
    CHECK_EQ_INT(st.pool.n_blocks_used, 3); /* 40 tokens = 2 full blocks + 8 */
    CHECK_EQ_INT(st.n_blocks_logical, 9);

    bool logits_same = true, tokens_differ = false;
    bool want[N_BRANCH] = {true, true, true};
    for (int step = 0; step < N_STEPS; step++) {
        for (int s = 0; s < N_BRANCH; s++)
            bpos[s] = N_PROMPT + step;
        kvl_batch d = {
            .n_tokens = N_BRANCH, .tokens = next, .seq = bseq, .pos = bpos, .logits = want};
        CHECK_EQ_INT(kvl_kv_paged_reserve_batch(kp, N_BRANCH, bseq, ones, &err), KVL_OK);
        CHECK_EQ_INT(kvl_forward_run(fc, &d, &ic, &lc, &nc, &err), KVL_OK);
        CHECK_EQ_INT(kvl_forward_run(fp, &d, &ip, &lp, &np, &err), KVL_OK);
        logits_same = logits_same && nc == N_BRANCH && np == N_BRANCH &&
                      memcmp(lc, lp, sizeof(float) * (size_t)(V * N_BRANCH)) == 0;
        for (int s = 0; s < N_BRANCH; s++)
            next[s] = argmax_k(lp + s * V, V, 0);
        tokens_differ = tokens_differ || next[0] != next[1] || next[1] != next[2];
    }
    CHECK(logits_same);
    CHECK(tokens_differ); /* the branches really are different sequences */

    kvl_kv_paged_stats_get(kp, &st);
    /* the shared partly filled block was copied for two of the three */
    CHECK_EQ_INT(st.n_blocks_copied, 2);
    CHECK_EQ_INT(st.n_tokens, N_BRANCH * (N_PROMPT + N_STEPS));
    /* two full prompt blocks stored once, not three times */
    CHECK_EQ_INT(st.pool.n_blocks_shared, 2);
    CHECK_EQ_INT(st.bytes_saved, 4 * lay.block_bytes);
    printf("test_kv_forward: %d branches x %d tokens: %zu KV bytes used, %zu as independent "
           "copies\n",
           N_BRANCH, N_PROMPT + N_STEPS, st.pool.bytes_used, st.bytes_logical);

    for (int s = 0; s < N_BRANCH; s++)
        CHECK_EQ_INT(kvl_kv_paged_release(kp, s, &err), KVL_OK);
    kvl_kv_paged_stats_get(kp, &st);
    CHECK_EQ_INT(st.pool.n_blocks_used, 0);
    CHECK_EQ_INT(kvl_block_pool_check(bp, &err), KVL_OK);

    kvl_kv_paged_free(kp);
    kvl_kv_contig_free(kc);
    kvl_forward_free(fc);
    kvl_forward_free(fp);
    kvl_pool_free(pool);
    kvl_model_free(m);
    return kvt_finish("test_kv_forward");
}
