/*
 * Guards a new user relies on (issue 13): the KL quality gate fails on NaN
 * logits instead of reporting "KL 0, top-1 100%", and the progress line
 * shows only where it is asked to (a terminal) and ends cleanly.
 */
#include "kv/kv_check.h"
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

int main(void) {
    test_kl();
    return kvt_finish("test_guards");
}
