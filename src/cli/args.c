/* Strict parsing of flag values for every subcommand. */
#include "cli/cli.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

bool kvl_cli_value(const char *cmd, int argc, char **argv, int *i, const char **out) {
    if (*i + 1 >= argc) {
        fprintf(stderr, "kvllm %s: %s needs a value\n", cmd, argv[*i]);
        return false;
    }
    *i += 1;
    *out = argv[*i];
    return true;
}

void kvl_cli_unknown(const char *cmd, const char *arg, const char *hint) {
    if (arg[0] == '-' && arg[1])
        fprintf(stderr, "kvllm %s: unknown flag '%s' (see kvllm %s --help)\n", cmd, arg, cmd);
    else
        fprintf(stderr,
                "kvllm %s: unexpected argument '%s': not a flag, and every value follows "
                "its flag (%s%ssee kvllm %s --help)\n",
                cmd, arg, hint ? hint : "", hint ? "; " : "", cmd);
}

bool kvl_cli_flag_value(const char *cmd, const char *const *known, const char *hint, int argc,
                        char **argv, int *i, const char **out) {
    const char *a = argv[*i];
    size_t k = 0;
    while (known[k] && strcmp(known[k], a))
        k++;
    if (!known[k]) {
        kvl_cli_unknown(cmd, a, hint);
        return false;
    }
    return kvl_cli_value(cmd, argc, argv, i, out);
}

bool kvl_cli_int(const char *cmd, const char *flag, const char *s, long long lo, long long hi,
                 long long *out) {
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || errno == ERANGE) {
        fprintf(stderr, "kvllm %s: %s: '%s' is not an integer\n", cmd, flag, s);
        return false;
    }
    if (v < lo || v > hi) {
        fprintf(stderr, "kvllm %s: %s: %lld is outside [%lld, %lld]\n", cmd, flag, v, lo, hi);
        return false;
    }
    *out = v;
    return true;
}

bool kvl_cli_float(const char *cmd, const char *flag, const char *s, double lo, double hi,
                   double *out) {
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || errno == ERANGE || isnan(v)) {
        fprintf(stderr, "kvllm %s: %s: '%s' is not a number\n", cmd, flag, s);
        return false;
    }
    if (v < lo || v > hi) {
        fprintf(stderr, "kvllm %s: %s: %g is outside [%g, %g]\n", cmd, flag, v, lo, hi);
        return false;
    }
    *out = v;
    return true;
}

bool kvl_cli_bytes(const char *cmd, const char *flag, const char *s, uint64_t *out) {
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno == ERANGE || isnan(v) || v < 0) {
        fprintf(stderr, "kvllm %s: %s: '%s' is not a byte size (e.g. 512MiB, 2GiB, 80GB)\n", cmd,
                flag, s);
        return false;
    }
    static const struct {
        const char *suf;
        double mul;
    } units[] = {
        {"", 1.0},
        {"B", 1.0},
        {"K", 1024.0},
        {"KiB", 1024.0},
        {"KB", 1e3},
        {"M", 1048576.0},
        {"MiB", 1048576.0},
        {"MB", 1e6},
        {"G", 1073741824.0},
        {"GiB", 1073741824.0},
        {"GB", 1e9},
        {"T", 1099511627776.0},
        {"TiB", 1099511627776.0},
        {"TB", 1e12},
    };
    for (size_t k = 0; k < sizeof units / sizeof units[0]; k++) {
        if (strcasecmp(end, units[k].suf) == 0) {
            double b = v * units[k].mul;
            /* llround's long holds less than 2^63: refuse, never wrap */
            if (b >= 9223372036854775808.0) {
                fprintf(stderr, "kvllm %s: %s: '%s' is %g bytes; the limit is 2^63 - 1 (8 EiB)\n",
                        cmd, flag, s, b);
                return false;
            }
            *out = (uint64_t)llround(b);
            return true;
        }
    }
    fprintf(stderr,
            "kvllm %s: %s: unknown unit in '%s' (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)\n", cmd,
            flag, s);
    return false;
}
