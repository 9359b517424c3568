#!/usr/bin/env bash
# kvllm chat end to end. Piped: three turns and /stats on the shipped model
# (no template in its file: plain, with a notice): the third turn's cached
# tokens cover the first two turns' prompts and answers (to the last full
# block); the first answer equals kvllm run's on the same text at
# temperature 0; the answers with --no-prefix-cache are the same text with
# nothing cached; /reset, unknown commands, bad flags. Then once under tmux
# as a person types: three turns, /stats, Ctrl-C during a long answer (it
# stops, the prompt returns) and Ctrl-C at the prompt (exit 0).
set -u
bin=${KVL_BIN:?} shared=${KVL_SHARED:?}
tmp=${KVL_TMP:-/tmp}/chat_cli
rm -rf "$tmp"; mkdir -p "$tmp"
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }

# stats_row FILE TURN COLUMN: a number from the /stats table
# (columns: turn prompt cached answer blocks kv_bytes)
stats_row() { awk -v t="$2" -v c="$3" '$1 == t && NF == 6 && $2 ~ /^[0-9]+$/ { print $c }' "$1" | tail -1; }

turns=$'Once upon a time\nThe cat was happy\nThen the dog came\n/stats\n'
printf '%s' "$turns" | "$bin" chat -t 1 --temp 0 -n 24 >"$tmp/on.out" 2>"$tmp/on.err"
rc=$?
[ "$rc" = 0 ] && ok || bad "piped chat exit $rc: $(cat "$tmp/on.err")"
grep -q 'no chat template.*using plain' "$tmp/on.err" && ok || bad "notice: plain for a file without a template"
grep -q 'session 1: 3 turns' "$tmp/on.out" && ok || bad "/stats header: $(cat "$tmp/on.out")"
bs=$(sed -n 's/.*block \([0-9]*\) positions.*/\1/p' "$tmp/on.out")
p1=$(stats_row "$tmp/on.out" 1 2) a1=$(stats_row "$tmp/on.out" 1 4)
p2=$(stats_row "$tmp/on.out" 2 2) c2=$(stats_row "$tmp/on.out" 2 3) a2=$(stats_row "$tmp/on.out" 2 4)
p3=$(stats_row "$tmp/on.out" 3 2) c3=$(stats_row "$tmp/on.out" 3 3)
echo "block $bs; turn 1: prompt $p1 answer $a1; turn 2: prompt $p2 cached $c2 answer $a2; turn 3: prompt $p3 cached $c3"
if [ -n "$bs" ] && [ -n "$c3" ] && [ -n "$a2" ]; then
  # turn 2's prompt holds turn 1's prompt and answer; turn 3 finds all of
  # turn 2's prompt and answer but the last partial block (and the last
  # sampled token, which never entered the KV)
  [ "$p2" -gt $((p1 + a1 - 1)) ] && ok || bad "turn 2's prompt holds turn 1 ($p2 vs $p1 + $a1)"
  [ "$c3" -ge $((p1 + a1)) ] && ok || bad "turn 3 cached $c3 < turn 1's prompt and answer $((p1 + a1))"
  [ $((c3 + bs)) -ge $((p2 + a2)) ] && ok || bad "turn 3 cached $c3 does not cover turn 2's $p2 + $a2 to the last block of $bs"
  [ "$c3" -lt "$p3" ] && ok || bad "at least the last prompt token is computed ($c3 of $p3)"
  [ "$c2" -gt 0 ] && ok || bad "turn 2 cached nothing"
  [ $((c3 % bs)) = 0 ] && ok || bad "cached tokens are whole blocks ($c3, block $bs)"
else
  bad "no /stats numbers: $(cat "$tmp/on.out")"
fi
grep -q '^\[turn 3: [0-9]* prompt tokens, '"$c3"' cached' "$tmp/on.err" && ok || bad "per-turn line agrees with /stats"
# the same conversation without the prefix cache: the same answers, nothing cached
printf '%s' "$turns" | "$bin" chat -t 1 --temp 0 -n 24 --no-prefix-cache >"$tmp/off.out" 2>"$tmp/off.err"
[ "$(stats_row "$tmp/off.out" 3 3)" = 0 ] && ok || bad "no prefix cache: cached $(stats_row "$tmp/off.out" 3 3)"
sed '/^session /,$d' "$tmp/on.out" >"$tmp/on.txt"
sed '/^session /,$d' "$tmp/off.out" >"$tmp/off.txt"
[ -s "$tmp/on.txt" ] && cmp -s "$tmp/on.txt" "$tmp/off.txt" && ok || bad "a hit gives the same answers as a miss: $(diff "$tmp/on.txt" "$tmp/off.txt")"
# turn 1 is "<s>Once upon a time\n" under plain: kvllm run on that text
"$bin" run -t 1 --temp 0 -n 24 -p $'Once upon a time\n' >"$tmp/run.out" 2>/dev/null
run_answer=$(tail -n +2 "$tmp/run.out" | head -c 4000)
chat_answer=$(head -c ${#run_answer} "$tmp/on.txt")
[ -n "$run_answer" ] && [ "$run_answer" = "$chat_answer" ] && ok || bad "turn 1 differs from kvllm run: [$chat_answer] vs [$run_answer]"

# /reset starts a new session; an unknown command is named; no trailing newline at EOF
printf 'Once upon a time\n/reset\n/stats\n/nope\nTom ran' | "$bin" chat -t 1 --temp 0 -n 8 >"$tmp/reset.out" 2>"$tmp/reset.err"
rc=$?
[ "$rc" = 0 ] && ok || bad "reset run exit $rc"
grep -q 'session 2: no turns yet' "$tmp/reset.out" && ok || bad "/reset: $(cat "$tmp/reset.out")"
grep -q "'/nope': the commands are /stats, /reset and /quit" "$tmp/reset.err" && ok || bad "unknown command"
[ "$(grep -c '^\[turn 1:' "$tmp/reset.err")" = 2 ] && ok || bad "the last line without a newline is a turn"
# --system and a named template on a llama2.c checkpoint
printf 'Hi\n' | "$bin" chat -t 1 --temp 0 -n 4 -m "$shared/models/stories260K.bin" --system "A story." --chat-template chatml >/dev/null 2>"$tmp/named.err"
rc=$?
[ "$rc" = 0 ] && grep -q 'template chatml' "$tmp/named.err" && ok || bad "named template: $rc $(cat "$tmp/named.err")"
# bad flags: exit 2 naming the flag
"$bin" chat --chat-template vicuna </dev/null >/dev/null 2>"$tmp/bad.err"; rc=$?
[ "$rc" = 2 ] && grep -q -- "--chat-template: chat template 'vicuna' is not one of" "$tmp/bad.err" && ok || bad "bad template name: $rc $(cat "$tmp/bad.err")"
"$bin" chat -n 0 </dev/null >/dev/null 2>"$tmp/bad.err"; rc=$?
[ "$rc" = 2 ] && grep -q -- "-n" "$tmp/bad.err" && ok || bad "-n 0: $rc"
"$bin" chat hello </dev/null >/dev/null 2>"$tmp/bad.err"; rc=$?
[ "$rc" = 2 ] && grep -q "unexpected argument 'hello'" "$tmp/bad.err" && ok || bad "stray word: $rc $(cat "$tmp/bad.err")"

# --- under tmux, as a person: type, watch, press keys
if ! command -v tmux >/dev/null; then
  bad "tmux is not installed (scripts/deps.sh test)"
else
  sock="kvlchat$$"
  tm() { TERM=xterm tmux -L "$sock" "$@"; }
  trap 'tm kill-server 2>/dev/null' EXIT
  # a slow model (random weights) so that an answer is still streaming when Ctrl-C comes
  "$bin" mkmodel -o "$tmp/slow.gguf" --dim 768 --layers 8 --ffn 2048 --heads 12 --kv-heads 12 \
    --vocab-size 512 --ctx 4096 --type q8_0 >/dev/null 2>"$tmp/mkmodel.err" || bad "mkmodel: $(cat "$tmp/mkmodel.err")"
  pane() { tm capture-pane -p -t chat -S -200; }
  # wait_for N TEXT: until the pane shows TEXT at least N times (or 60 s)
  wait_for() {
    for _ in $(seq 1 600); do
      [ "$(pane | grep -cE -- "$2")" -ge "$1" ] && return 0
      sleep 0.1
    done
    return 1
  }
  tm new-session -d -s chat -x 160 -y 60 \
    "bash -c '\"$bin\" chat -t 1 --temp 0 -n 24 2>\"$tmp/tmux.err\"; echo \$? >\"$tmp/tmux.rc\"'"
  wait_for 1 '^>( |$)' && ok || bad "tmux: no prompt: $(pane)"
  n=1
  for line in "Once upon a time" "The cat was happy" "Then the dog came"; do
    tm send-keys -t chat "$line" Enter
    n=$((n + 1))
    wait_for "$n" '^>( |$)' && ok || bad "tmux: turn $((n - 1)) did not come back to the prompt: $(pane)"
  done
  tm send-keys -t chat "/stats" Enter
  wait_for 1 '^prefix cache:' && ok || bad "tmux: /stats: $(pane)"
  pane >"$tmp/tmux.pane"
  tc3=$(stats_row "$tmp/tmux.pane" 3 3)
  [ -n "$tc3" ] && [ "$tc3" = "$c3" ] && ok || bad "tmux: turn 3 cached '$tc3', piped run had '$c3'"
  grep -q '^> Then the dog came' "$tmp/tmux.pane" && ok || bad "tmux: the typed line is on the screen"
  tm send-keys -t chat C-c
  for _ in $(seq 1 300); do [ -s "$tmp/tmux.rc" ] && break; sleep 0.1; done
  [ "$(cat "$tmp/tmux.rc" 2>/dev/null)" = 0 ] && ok || bad "tmux: Ctrl-C at the prompt: exit '$(cat "$tmp/tmux.rc" 2>/dev/null)'"

  # Ctrl-C during a long answer stops it; the prompt returns; the chat goes on
  rm -f "$tmp/tmux.rc"
  tm kill-server 2>/dev/null
  tm new-session -d -s chat -x 160 -y 60 \
    "bash -c '\"$bin\" chat -t 1 --temp 0 -n 4000 -m \"$tmp/slow.gguf\" --chat-template plain 2>\"$tmp/slow.err\"; echo \$? >\"$tmp/tmux.rc\"'"
  wait_for 1 '^>( |$)' || bad "tmux slow: no prompt: $(cat "$tmp/slow.err")"
  tm send-keys -t chat "hello" Enter
  sleep 1
  tm send-keys -t chat C-c
  wait_for 2 '^>( |$)' && ok || bad "tmux slow: the prompt did not return after Ctrl-C: $(pane)"
  grep -q '^\[turn 1: .*; stopped\]' "$tmp/slow.err" && ok || bad "tmux slow: the answer was not stopped: $(cat "$tmp/slow.err")"
  tm send-keys -t chat C-d
  for _ in $(seq 1 300); do [ -s "$tmp/tmux.rc" ] && break; sleep 0.1; done
  [ "$(cat "$tmp/tmux.rc" 2>/dev/null)" = 0 ] && ok || bad "tmux: Ctrl-D at the prompt: exit '$(cat "$tmp/tmux.rc" 2>/dev/null)'"
fi

echo "test_chat_cli: $pass passed, $fail failed"
[ "$fail" = 0 ]
