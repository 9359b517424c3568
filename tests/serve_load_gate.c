/*
 * A test fixture for tests/test_serve_limits.sh, loaded with LD_PRELOAD
 * into `kvllm serve`: open() of the file named by KVL_GATE_PATH waits until
 * the file named by KVL_GATE_OPEN exists. The server binds its port before
 * it loads the model, so while the test holds the gate shut it can watch
 * the server answer during the load (/health 503 "loading"), with no
 * timing assumption. Every other open() goes straight through.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void gate(const char *path) {
    const char *g = getenv("KVL_GATE_PATH"), *o = getenv("KVL_GATE_OPEN");
    if (!g || !o || !path || strcmp(path, g))
        return;
    while (access(o, F_OK) != 0) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

typedef int (*open_fn)(const char *, int, ...);

static int call(const char *name, const char *path, int flags, va_list ap) {
    mode_t mode = (flags & (O_CREAT | O_TMPFILE)) ? va_arg(ap, mode_t) : 0;
    gate(path);
    open_fn real = (open_fn)dlsym(RTLD_NEXT, name);
    return real(path, flags, mode);
}

int open(const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    int fd = call("open", path, flags, ap);
    va_end(ap);
    return fd;
}

int open64(const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    int fd = call("open64", path, flags, ap);
    va_end(ap);
    return fd;
}
