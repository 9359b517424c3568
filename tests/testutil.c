/* Test harness support: counters, shared/ and temp paths, file helpers. */
#include "testutil.h"

#include <stdlib.h>

int kvt_failures = 0;
int kvt_checks = 0;

const char *kvt_shared(const char *rel) {
    static char buf[4096];
    const char *root = getenv("KVL_SHARED");
    if (!root || !*root)
        root = "../shared";
    snprintf(buf, sizeof buf, "%s/%s", root, rel);
    return buf;
}

const char *kvt_tmp(const char *name) {
    static char buf[4096];
    const char *root = getenv("KVL_TMP");
    if (!root || !*root)
        root = "/tmp";
    snprintf(buf, sizeof buf, "%s/%s", root, name);
    return buf;
}

bool kvt_write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f)
        return false;
    bool ok = fwrite(data, 1, n, f) == n;
    ok = (fclose(f) == 0) && ok;
    return ok;
}

void *kvt_read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (sz < 0) {
        fclose(f);
        return NULL;
    }
    void *p = malloc((size_t)sz + 1);
    if (p && fread(p, 1, (size_t)sz, f) != (size_t)sz) {
        free(p);
        p = NULL;
    }
    fclose(f);
    if (p)
        *n = (size_t)sz;
    return p;
}

int kvt_finish(const char *name) {
    printf("%s: %d passed, %d failed\n", name, kvt_checks - kvt_failures, kvt_failures);
    return kvt_failures ? 1 : 0;
}
