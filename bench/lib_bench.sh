# Sourced by the bench scripts that build one bench/NAME.c against the
# static libraries of a kvllm build directory and run it.
#
#   kvl_bench_c NAME [BUILD_DIR=build] [ARGS...]
#
# compiles bench/NAME.c into BUILD_DIR/NAME (warnings are errors; the
# model library needs PCRE2, as kvllm.pc says) and runs it with ARGS.
# The callers give their own defaults for ARGS. CC and CFLAGS from the
# environment are used when set (a sanitizer build's libraries need its
# flags).
kvl_bench_c() {
  local name=$1 root b
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  b=$(cd "${2:-$root/build}" && pwd)
  shift 2
  # shellcheck disable=SC2086 # CFLAGS and pkg-config's output are word lists
  ${CC:-cc} ${CFLAGS:-} -O2 -g -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -I"$root/include" -I"$root/src" \
    "$root/bench/$name.c" "$b/libkvl_engine.a" "$b/libkvl_kv.a" "$b/libkvl_plan.a" "$b/libkvl_model.a" \
    "$b/libkvl_kernels.a" "$b/libkvl_core.a" $(pkg-config --libs libpcre2-8) -lm -lpthread \
    -o "$b/$name"
  "$b/$name" "$@"
}
