# Sourced by the scripts that start `kvllm serve --port 0` (tests, bench):
#
#   kvl_serve_wait LOG PID [TRIES=600]
#
# waits (0.1 s a try) until the server that writes its stderr to LOG prints
# the port it listens on and answers /health with 200; prints the port.
# Returns 1 (printing nothing) when the server exits or the tries run out.
kvl_serve_wait() {
  local log=$1 pid=$2 tries=${3:-600} port=""
  for _ in $(seq 1 "$tries"); do
    port=$(grep -o 'listening on http://127.0.0.1:[0-9]*' "$log" 2>/dev/null | sed 's/.*://' || true)
    if [ -n "$port" ] && [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/health")" = 200 ]; then
      echo "$port"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}
