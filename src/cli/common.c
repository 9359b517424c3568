/* Locating the shipped model for commands run without -m. */
#include "cli/common.h"

#include <limits.h>
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
