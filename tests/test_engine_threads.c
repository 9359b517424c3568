/*
 * The engine from many threads: its own engine thread steps
 * (kvl_engine_start) while four client threads submit requests and cancel
 * some of them (their own and others'), read request info and stats, and
 * one thread polls events with a timeout, and one takes KV block maps
 * (kvl_engine_kv_map), each of which must agree with itself and with the
 * pool stats taken with it. Every accepted request must get exactly one
 * final event, as its last; at the end the engine is idle with every block
 * free. Run under ThreadSanitizer by scripts/tsan.sh.
 */
#include "engine/engine_debug.h"
#include "testutil.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#define N_CLIENTS 4
#define PER_CLIENT 40
#define MAX_ID (N_CLIENTS * PER_CLIENT + 8)

static kvl_engine *eng;
static atomic_int finals[MAX_ID + 1], after[MAX_ID + 1], accepted[MAX_ID + 1];
static atomic_int n_accepted, n_finals, clients_done;

static void *client(void *arg) {
    uint64_t st = (uint64_t)(uintptr_t)arg * 977 + 13;
    int32_t toks[64];
    for (int i = 0; i < PER_CLIENT; i++) {
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        uint32_t r = (uint32_t)(st >> 33);
        int32_t n_prompt = 1 + (int32_t)(r % 40);
        toks[0] = 1;
        for (int32_t k = 1; k < n_prompt; k++)
            toks[k] = 3 + (int32_t)((r >> (k % 16)) % 400);
        kvl_request_params rp = kvl_request_defaults();
        rp.prompt_tokens = toks;
        rp.n_prompt_tokens = (size_t)n_prompt;
        rp.max_tokens = 1 + (int32_t)(r % 24);
        rp.n = 1 + (int32_t)(r % 2);
        rp.priority = (int32_t)(r % 3);
        uint64_t id;
        kvl_error err;
        kvl_status s = kvl_engine_submit(eng, &rp, &id, &err);
        if (s == KVL_OK) {
            if (id <= MAX_ID)
                atomic_fetch_add(&accepted[id], 1);
            atomic_fetch_add(&n_accepted, 1);
            if (r % 4 == 0)
                kvl_engine_cancel(eng, id);
            if (r % 7 == 0 && id > 3)
                kvl_engine_cancel(eng, id - 3); /* maybe another's, maybe finished */
            kvl_request_info ri;
            kvl_engine_request_info(eng, id, &ri);
        }
        kvl_engine_stats es;
        kvl_engine_get_stats(eng, &es);
    }
    atomic_fetch_add(&clients_done, 1);
    return NULL;
}

static void *poller(void *arg) {
    (void)arg;
    kvl_event ev[32];
    for (;;) {
        int n = kvl_engine_poll(eng, ev, 32, 0.05);
        for (int i = 0; i < n; i++) {
            uint64_t id = ev[i].id;
            if (id > MAX_ID)
                continue;
            if (atomic_load(&finals[id]))
                atomic_fetch_add(&after[id], 1);
            if (ev[i].type == KVL_EV_FINAL) {
                atomic_fetch_add(&finals[id], 1);
                atomic_fetch_add(&n_finals, 1);
            }
        }
        if (n == 0 && atomic_load(&clients_done) == N_CLIENTS &&
            atomic_load(&n_finals) == atomic_load(&n_accepted))
            return NULL;
    }
}

/* One map's cells against its own counts and the stats taken with it. */
static bool map_consistent(const kvl_kv_map *m) {
    uint32_t c[3] = {0}, shared = 0, held = 0, swap_sum = 0;
    for (uint32_t i = 0; i < m->n_blocks; i++) {
        const kvl_kv_block_info *b = &m->blocks[i];
        c[b->state]++;
        shared += b->refcount > 1;
        if ((b->state == KVL_KV_BLOCK_USED) !=
            (b->holder >= 0 && (uint32_t)b->holder < m->n_holders))
            return false;
    }
    for (uint32_t i = 0; i < m->n_swap_blocks; i++)
        held += m->swap[i].state == KVL_KV_SWAP_HELD;
    for (uint32_t h = 0; h < m->n_holders; h++) {
        swap_sum += m->holders[h].n_swap_blocks;
        if (h && m->holders[h].request <= m->holders[h - 1].request)
            return false;
    }
    return c[0] == m->n_free && c[1] == m->n_cached && c[2] == m->n_used && shared == m->n_shared &&
           m->n_used == m->kv.n_blocks_used && m->n_free + m->n_cached == m->kv.n_blocks_free &&
           shared == m->kv.n_blocks_shared && held == m->n_swap_held && swap_sum == held;
}

static atomic_int n_maps, n_maps_bad, n_maps_in_step;

static void *mapper(void *arg) {
    (void)arg;
    uint32_t nb, ns, nh;
    kvl_engine_kv_map_size(eng, &nb, &ns, &nh);
    kvl_kv_map m = {.blocks = calloc(nb, sizeof *m.blocks),
                    .cap_blocks = nb,
                    .swap = calloc(ns ? ns : 1, sizeof *m.swap),
                    .cap_swap = ns,
                    .holders = calloc(nh, sizeof *m.holders),
                    .cap_holders = nh};
    while (atomic_load(&clients_done) < N_CLIENTS ||
           atomic_load(&n_finals) < atomic_load(&n_accepted)) {
        kvl_error err;
        if (kvl_engine_kv_map(eng, &m, &err) != KVL_OK || !map_consistent(&m))
            atomic_fetch_add(&n_maps_bad, 1);
        atomic_fetch_add(&n_maps, 1);
        atomic_fetch_add(&n_maps_in_step, m.in_step);
        struct timespec ts = {0, 200 * 1000}; /* a viewer polls; it does not spin */
        nanosleep(&ts, NULL);
    }
    free(m.blocks);
    free(m.swap);
    free(m.holders);
    return NULL;
}

int main(void) {
    kvl_model *m = NULL;
    kvl_error err;
    if (kvl_model_load(kvt_shared("models/stories260K.gguf"), NULL, &m, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    kvl_engine_params p = kvl_engine_defaults();
    p.n_threads = 2;
    p.block_size = 4;
    p.kv_mem = 24 * 5120; /* 24 blocks: preemptions happen */
    p.kv_type_k = p.kv_type_v = "f32";
    p.max_ctx = 96;
    p.max_seqs = 6;
    p.max_batch_tokens = 32;
    p.swap_mem = 16 * 5120;
    p.event_capacity = 64; /* small: steps wait for the poller */
    CHECK(kvl_engine_init(m, &p, &eng, &err) == KVL_OK);
    CHECK(kvl_engine_start(eng, &err) == KVL_OK);
    CHECK(kvl_engine_step(eng, NULL, &err) == KVL_E_INVALID); /* the thread steps */
    pthread_t cl[N_CLIENTS], po, mp;
    pthread_create(&po, NULL, poller, NULL);
    pthread_create(&mp, NULL, mapper, NULL);
    for (uintptr_t i = 0; i < N_CLIENTS; i++)
        pthread_create(&cl[i], NULL, client, (void *)i);
    for (int i = 0; i < N_CLIENTS; i++)
        pthread_join(cl[i], NULL);
    pthread_join(po, NULL);
    pthread_join(mp, NULL);
    kvl_engine_stop(eng);
    CHECK(atomic_load(&n_maps) > 0);
    CHECK_EQ_INT(atomic_load(&n_maps_bad), 0);
    CHECK(atomic_load(&n_accepted) > 0);
    CHECK_EQ_INT(atomic_load(&n_finals), atomic_load(&n_accepted));
    for (int id = 1; id <= MAX_ID; id++) {
        CHECK_EQ_INT(atomic_load(&finals[id]), atomic_load(&accepted[id]));
        CHECK_EQ_INT(atomic_load(&after[id]), 0);
    }
    CHECK(kvl_engine_idle(eng));
    CHECK(kvl_engine_check(eng, &err) == KVL_OK);
    kvl_engine_stats st;
    kvl_engine_get_stats(eng, &st);
    CHECK_EQ_INT(st.kv.n_blocks_used, 0);
    printf("test_engine_threads: %d requests, %lld preemptions, %d maps (%d during a step)\n",
           atomic_load(&n_accepted), (long long)st.n_preemptions, atomic_load(&n_maps),
           atomic_load(&n_maps_in_step));
    kvl_engine_free(eng);
    kvl_model_free(m);
    return kvt_finish("test_engine_threads");
}
