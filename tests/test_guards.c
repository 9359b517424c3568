/*
 * Guards a new user relies on (issue 13): the KL quality gate fails on NaN
 * logits instead of reporting "KL 0, top-1 100%", and the progress line
 * shows only where it is asked to (a terminal) and ends cleanly.
 */
#include "engine/kv_check.h"
#include "testutil.h"

#include <stdlib.h>

static void test_kl(void) {
    const float p[4] = {1.0f, 2.0f, 0.5f, -1.0f};
    const float q[4] = {1.0f, 2.0f, 0.5f, -1.0f};
    const float r[4] = {2.0f, 1.0f, 0.5f, -1.0f};
    bool same = false;
    CHECK_NEAR(kvl_logits_kl(p, q, 4, &same), 0.0, 1e-15);
    CHECK(same);
    /* two-way distribution: KL of softmax(0, log 3) against softmax(0, 0) */
    const float a[2] = {0.0f, (float)log(3.0)}, b[2] = {0.0f, 0.0f};
    const double pa = 0.25, pb = 0.75;
    CHECK_NEAR(kvl_logits_kl(a, b, 2, &same), pa * log(pa / 0.5) + pb * log(pb / 0.5), 1e-7);
    CHECK(!same); /* argmax 1 vs 0 */
    kvl_logits_kl(p, r, 4, &same);
    CHECK(!same);

    /* NaN anywhere in either row fails the gate: +inf, no agreement */
    for (int where = 0; where < 4; where++) {
        float bad[4];
        memcpy(bad, p, sizeof bad);
        bad[where] = NAN;
        same = true;
        double kl = kvl_logits_kl(p, bad, 4, &same);
        CHECK(isinf(kl) && kl > 0);
        CHECK(!same);
        same = true;
        kl = kvl_logits_kl(bad, p, 4, &same);
        CHECK(isinf(kl) && kl > 0);
        CHECK(!same);
    }
    float all_nan[4] = {NAN, NAN, NAN, NAN};
    same = true;
    CHECK(isinf(kvl_logits_kl(all_nan, all_nan, 4, &same)));
    CHECK(!same);
    /* an infinite logit makes the softmax NaN: also +inf */
    float inf_row[4] = {1.0f, INFINITY, 0.0f, 0.0f};
    CHECK(isinf(kvl_logits_kl(inf_row, p, 4, &same)));
    CHECK(!same);
}

/* What a progress line wrote to f, from the start. */
static char *written(FILE *f) {
    fflush(f);
    long n = ftell(f);
    char *s = calloc((size_t)n + 1, 1);
    rewind(f);
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n)
        s[0] = '\0';
    return s;
}

static void test_progress(void) {
    FILE *f = tmpfile();
    CHECK(f != NULL);
    if (!f)
        return;
    kvl_progress pr;
    kvl_progress_begin_to(&pr, f, "kv check");
    for (uint64_t i = 0; i <= 1000; i++)
        kvl_progress_update(&pr, i, 1000);
    kvl_progress_update(&pr, 1000, 1000); /* no change: nothing more */
    kvl_progress_end(&pr);
    char *s = written(f);
    CHECK(s && !strncmp(s, "\rkv check:   0%\rkv check:   1%", 30));
    CHECK(s && strstr(s, "\rkv check:  50%\r"));
    const char *tail = "\rkv check: 100%\r\033[K";
    CHECK(s && strlen(s) >= strlen(tail) && !strcmp(s + strlen(s) - strlen(tail), tail));
    int lines = 0;
    for (const char *p = s; p && *p; p++)
        lines += *p == '\r';
    CHECK_EQ_INT(lines, 101 + 1); /* one per whole percentage, one to erase */
    free(s);

    /* after end it draws again; done > total and total 0 read as 100% */
    rewind(f);
    kvl_progress_begin_to(&pr, f, "bench");
    kvl_progress_update(&pr, 5, 0);
    kvl_progress_end(&pr);
    kvl_progress_update(&pr, 7, 3);
    kvl_progress_end(&pr);
    kvl_progress_end(&pr); /* nothing drawn: nothing to erase */
    s = written(f);
    CHECK(s && !strncmp(s, "\rbench: 100%\r\033[K\rbench: 100%\r\033[K", 32));
    free(s);
    fclose(f);

    /* quiet: nothing anywhere, nothing to end */
    kvl_progress_begin_to(&pr, NULL, "quiet");
    kvl_progress_update(&pr, 1, 2);
    kvl_progress_end(&pr);
    CHECK(pr.shown < 0);
}

int main(void) {
    test_kl();
    test_progress();
    return kvt_finish("test_guards");
}
