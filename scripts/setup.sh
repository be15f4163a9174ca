#!/usr/bin/env bash
# Installs what building and testing Dalea Gateway needs on Debian/Ubuntu when it is missing:
# cmake (pingora's zlib-ng build), and with `--test` also Chromium and Node.js for the browser
# test, Redis (server, cli, sentinel) for the Redis store tests and `promtool` (Debian package
# `prometheus`) for the metrics check. Safe to run again; does nothing when everything is there.
set -euo pipefail

want_test=false
[[ "${1:-}" == "--test" ]] && want_test=true

missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v cc >/dev/null 2>&1 || missing+=(build-essential)
if $want_test; then
  [[ -x /usr/bin/chromium ]] || missing+=(chromium)
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
  command -v redis-sentinel >/dev/null 2>&1 || missing+=(redis-sentinel)
  command -v node >/dev/null 2>&1 || missing+=(nodejs)
  command -v npm >/dev/null 2>&1 || missing+=(npm)
  command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
fi

if ((${#missing[@]} == 0)); then
  exit 0
fi

echo "setup: installing ${missing[*]}" >&2
if ! command -v apt-get >/dev/null 2>&1; then
  echo "setup: please install ${missing[*]} (no apt-get on this machine)" >&2
  exit 1
fi
sudo=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null 2>&1 || { echo "setup: need root or sudo to install ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
