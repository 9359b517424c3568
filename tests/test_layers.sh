#!/usr/bin/env bash
# test_layers: the dependency order of docs and CMakeLists.txt holds in the
# sources: a file in src/<module>/ includes headers of its own module or of
# modules below it, never above
# (core <- kernels <- model <- plan <- kv <- sched <- engine <- sim <- chat <- server <- cli).
set -u
SRC=$(cd "$(dirname "$0")/../src" && pwd)
order=(core kernels model plan kv sched engine sim chat server cli)
rank() {
    local i
    for i in "${!order[@]}"; do
        [ "${order[$i]}" = "$1" ] && { echo "$i"; return; }
    done
    echo -1
}
fails=0
checks=0
for dir in "$SRC"/*/; do
    m=$(basename "$dir")
    rm_=$(rank "$m")
    if [ "$rm_" -lt 0 ]; then
        echo "FAIL: src/$m is not in the module order" >&2
        fails=$((fails + 1))
        continue
    fi
    for f in "$dir"*.c "$dir"*.h; do
        [ -e "$f" ] || continue
        while IFS= read -r inc; do
            dep=${inc%%/*}
            rd=$(rank "$dep")
            checks=$((checks + 1))
            if [ "$rd" -lt 0 ] || [ "$rd" -gt "$rm_" ]; then
                echo "FAIL: src/$m/$(basename "$f") includes \"$inc\" ($dep is not below $m)" >&2
                fails=$((fails + 1))
            fi
        done < <(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([a-z_]*\/[^"]*\)".*/\1/p' "$f")
    done
done
echo "test_layers: $checks includes checked, $fails failed"
[ "$checks" -gt 0 ] && [ "$fails" -eq 0 ]
