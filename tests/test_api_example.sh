#!/usr/bin/env bash
# The example at the top of include/kvllm.h, exactly as printed there,
# compiles against the installed library (cmake --install: header, static
# and shared libkvllm) and runs on the shipped model: two requests, each
# ending in exactly one final event, from both the shared and the static
# library.
set -u
build=${KVL_BUILD:?} shared=${KVL_SHARED:?} cc=${KVL_CC:-cc}
tmp=${KVL_TMP:-/tmp}/api_example
rm -rf "$tmp"; mkdir -p "$tmp"
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
src=$(cd "$(dirname "$0")/.." && pwd)
sed -n '/<example>/,/<\/example>/p' "$src/include/kvllm.h" | sed '1d;$d' | sed -E 's/^ \*     ?//; s/^ \*$//' >"$tmp/example.c"
grep -q "kvl_engine_submit" "$tmp/example.c" && ok || bad "example extracted"
cmake --install "$build" --prefix "$tmp/inst" >"$tmp/install.log" 2>&1 && ok || { bad "cmake --install"; cat "$tmp/install.log"; }
[ -f "$tmp/inst/include/kvllm.h" ] && ok || bad "header installed"
ls "$tmp/inst/lib/libkvllm.so" "$tmp/inst/lib/libkvllm.a" >/dev/null 2>&1 && ok || bad "libraries installed"
# shared
if $cc -std=c11 -Wall -Wextra -Werror ${KVL_SAN_FLAGS:-} -I"$tmp/inst/include" "$tmp/example.c" \
    -L"$tmp/inst/lib" -Wl,-rpath,"$tmp/inst/lib" -lkvllm -o "$tmp/ex_shared" 2>"$tmp/cc.log"; then ok
else bad "example compiles (shared)"; cat "$tmp/cc.log"; fi
# static
if $cc -std=c11 -Wall -Wextra -Werror ${KVL_SAN_FLAGS:-} -I"$tmp/inst/include" "$tmp/example.c" \
    "$tmp/inst/lib/libkvllm.a" -lpcre2-8 -lpthread -lm -o "$tmp/ex_static" 2>"$tmp/cc2.log"; then ok
else bad "example compiles (static)"; cat "$tmp/cc2.log"; fi
for v in shared static; do
  [ -x "$tmp/ex_$v" ] || continue
  "$tmp/ex_$v" "$shared/models/stories260K.gguf" >"$tmp/out_$v" 2>"$tmp/err_$v" && ok || { bad "example runs ($v)"; cat "$tmp/err_$v"; }
  [ "$(grep -c 'done: ' "$tmp/out_$v")" = 2 ] && ok || { bad "two final events ($v)"; cat "$tmp/out_$v"; }
  grep -q '^\[1\] done: length, 32 tokens' "$tmp/out_$v" && ok || { bad "request 1 ran to max_tokens ($v)"; cat "$tmp/out_$v"; }
done
cmp -s "$tmp/out_shared" "$tmp/out_static" && ok || bad "shared and static outputs differ"
echo "test_api_example: $pass passed, $fail failed"
[ "$fail" = 0 ]
