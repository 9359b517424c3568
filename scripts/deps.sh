#!/usr/bin/env bash
# Install the Debian packages kvllm needs for building and testing, only
# those that are missing. Usage: scripts/deps.sh [test]
set -euo pipefail
pkgs=(cmake make gcc libc6-dev pkg-config libpcre2-dev libxxhash-dev libmicrohttpd-dev libcjson-dev)
if [ "${1:-}" = test ]; then
  pkgs+=(clang clang-format libclang-rt-14-dev libxml2-utils python3 curl tmux)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# promtool (Debian package prometheus) lints kvllm serve's /metrics in
# tests/test_serve.sh; optional: the test says SKIP without it
if [ "${1:-}" = test ] && ! command -v promtool >/dev/null; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=sudo
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus \
    >/dev/null 2>&1 || echo "deps.sh: prometheus (promtool) not installable; its check will be skipped" >&2
fi
# Headless Chromium, node and npm drive the built-in page in
# tests/test_browser.sh (puppeteer-core comes from npm at test time);
# optional: the test says SKIP without them. --no-install-recommends keeps
# Chromium's desktop extras out; fonts-dejavu-core gives the page's text a font.
if [ "${1:-}" = test ] && ! { command -v chromium && command -v node && command -v npm; } >/dev/null; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=sudo
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium nodejs \
    npm fonts-dejavu-core >/dev/null 2>&1 || echo "deps.sh: chromium/nodejs/npm not installable; the browser tests will be skipped" >&2
fi
