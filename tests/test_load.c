/*
 * Bringing model files into memory (kvl_load_file): the mapped and the
 * private-copy modes hold the same bytes, the copy is 2 MiB-aligned and
 * read-only, auto picks the copy only for large files, bad paths and modes
 * fail with a message, and a model loaded either way computes identical
 * logits.
 */
#include "core/core.h"
#include "kv/kv_contig.h"
#include "model/forward.h"
#include "model/model.h"
#include "testutil.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static bool thp_off(void) {
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    if (!f)
        return true;
    char buf[128] = {0};
    bool off = !fgets(buf, sizeof buf, f) || strstr(buf, "[never]");
    fclose(f);
    return off;
}

static uint8_t *pattern(size_t n) {
    uint8_t *p = malloc(n);
    uint64_t r = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < n; i++) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        p[i] = (uint8_t)(r >> 56);
    }
    return p;
}

/* A child process writing to the loaded bytes dies of SIGSEGV. */
static bool write_faults(const uint8_t *p) {
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGSEGV, SIG_DFL);
        *(volatile uint8_t *)p = 1;
        _exit(0);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid)
        return false;
    return WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV;
}

static void check_modes(size_t n) {
    const char *path = kvt_tmp("load.bin");
    uint8_t *want = pattern(n);
    CHECK(kvt_write_file(path, want, n));
    kvl_error err = {0};
    const kvl_load_mode modes[] = {KVL_LOAD_MMAP, KVL_LOAD_HUGE, KVL_LOAD_AUTO};
    for (size_t k = 0; k < 3; k++) {
        kvl_mapped_file f;
        CHECK_EQ_INT(kvl_load_file(path, modes[k], NULL, &f, &err), KVL_OK);
        CHECK_EQ_INT(f.size, n);
        CHECK(f.data && memcmp(f.data, want, n) == 0);
        if (modes[k] == KVL_LOAD_MMAP)
            CHECK_EQ_INT(f.anon_len, 0);
        if (modes[k] == KVL_LOAD_HUGE) {
            CHECK_EQ_INT((uintptr_t)f.data % (2u << 20), 0);
            CHECK(f.anon_len >= n && f.anon_len % (2u << 20) == 0);
        }
        if (modes[k] == KVL_LOAD_AUTO) /* copies large files unless THP is off */
            CHECK_EQ_INT(f.anon_len > 0, n >= KVL_LOAD_HUGE_MIN && !thp_off());
        if (f.data)
            CHECK(write_faults(f.data + n / 2));
        kvl_unmap_file(&f);
        CHECK(f.data == NULL && f.size == 0 && f.anon_len == 0);
    }
    free(want);
    remove(path);
}

static void check_errors(void) {
    kvl_error err = {0};
    kvl_mapped_file f;
    CHECK_EQ_INT(kvl_load_file("/nonexistent/kvllm-model.gguf", KVL_LOAD_HUGE, NULL, &f, &err),
                 KVL_E_IO);
    CHECK_CONTAINS(err.msg, "/nonexistent/kvllm-model.gguf");
    CHECK_EQ_INT(kvl_load_file("/tmp", KVL_LOAD_AUTO, NULL, &f, &err), KVL_E_IO);
    CHECK_CONTAINS(err.msg, "not a regular file");
    /* a FIFO is refused at once, not waited on for a writer (alarm: a hang
     * fails the test instead of stalling it) */
    const char *fifo = kvt_tmp("load.fifo");
    remove(fifo);
    CHECK(mkfifo(fifo, 0600) == 0);
    alarm(20);
    CHECK_EQ_INT(kvl_load_file(fifo, KVL_LOAD_AUTO, NULL, &f, &err), KVL_E_IO);
    CHECK_CONTAINS(err.msg, "load.fifo: not a regular file");
    kvl_model *m = NULL;
    CHECK_EQ_INT(kvl_model_load(fifo, NULL, &m, &err), KVL_E_IO);
    CHECK(m == NULL);
    alarm(0);
    remove(fifo);
    const char *path = kvt_tmp("load-mode.bin");
    CHECK(kvt_write_file(path, "abc", 3));
    CHECK_EQ_INT(kvl_load_file(path, (kvl_load_mode)7, NULL, &f, &err), KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "load mode 7");
    /* an empty file loads as no bytes in every mode */
    CHECK(kvt_write_file(path, "", 0));
    CHECK_EQ_INT(kvl_load_file(path, KVL_LOAD_HUGE, NULL, &f, &err), KVL_OK);
    CHECK(f.data == NULL && f.size == 0);
    kvl_unmap_file(&f);
    remove(path);
}

/* Logits of a short prompt from the shipped model loaded in one mode. */
static bool model_logits(kvl_load_mode mode, float *out, int64_t *n_vocab, bool *copied) {
    kvl_error err = {0};
    kvl_model *m = NULL;
    kvl_model_params mp = {.load = mode};
    if (kvl_model_load(kvt_shared("models/stories260K.gguf"), &mp, &m, &err) != KVL_OK) {
        fprintf(stderr, "stories260K.gguf: %s\n", err.msg);
        return false;
    }
    *copied = m->gguf && m->gguf->map.anon_len > 0;
    kvl_forward *f = NULL;
    kvl_kv_contig *kc = NULL;
    bool ok = kvl_forward_init(m, 8, 8, NULL, &f, &err) == KVL_OK &&
              kvl_kv_contig_init(&m->hp, 1, 8, &kc, &err) == KVL_OK;
    if (ok) {
        int32_t tok[8], seq[8] = {0}, pos[8];
        for (int i = 0; i < 8; i++) {
            tok[i] = i == 0 ? 1 : (int32_t)((i * 53 + 7) % m->hp.n_vocab);
            pos[i] = i;
        }
        kvl_batch b = {.n_tokens = 8, .tokens = tok, .seq = seq, .pos = pos};
        kvl_kv_iface kv = kvl_kv_contig_iface(kc);
        const float *lg;
        int32_t n_out;
        ok = kvl_forward_run(f, &b, &kv, &lg, &n_out, &err) == KVL_OK && n_out == 1;
        if (ok) {
            *n_vocab = m->hp.n_vocab;
            memcpy(out, lg, sizeof(float) * (size_t)m->hp.n_vocab);
        }
    }
    kvl_kv_contig_free(kc);
    kvl_forward_free(f);
    kvl_model_free(m);
    return ok;
}

int main(void) {
    check_modes(3 << 20);                  /* not a multiple of 2 MiB */
    check_modes(KVL_LOAD_HUGE_MIN + 4096); /* large enough for auto to copy */
    check_errors();

    static float a[65536], b[65536];
    int64_t va = 0, vb = 0;
    bool ca = true, cb = false;
    CHECK(model_logits(KVL_LOAD_MMAP, a, &va, &ca));
    CHECK(model_logits(KVL_LOAD_HUGE, b, &vb, &cb));
    CHECK(!ca && cb);
    CHECK(va > 0 && va == vb && va <= 65536);
    CHECK(memcmp(a, b, sizeof(float) * (size_t)va) == 0);
    return kvt_finish("test_load");
}
