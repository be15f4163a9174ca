#!/usr/bin/env bash
# Runs the browser end-to-end tests in headless Debian Chromium.
#
#   DALEA_BIN=$CARGO_TARGET_DIR/debug/dalea-gateway tests/e2e/run.sh
#
# Installs the node packages from package-lock.json (npm ci) when node_modules is missing or
# older than the lock file, here and in tests/oidc (the OpenID Provider oauth.e2e.mjs starts),
# checks that Chromium is there, and runs each test in turn (each with its own gateway):
# sessions.e2e.mjs, elevation.e2e.mjs, api_keys.e2e.mjs, passkeys.e2e.mjs, vigilance.e2e.mjs (with a
# redis-server of its own), then oauth.e2e.mjs. All tests run even
# when one fails; the exit code is 0 when all passed, else the first failing test's.
# Screenshots and the gateway logs (gateway-<test>.log) land in tests/e2e/artifacts/.
#
# Run some of them only by naming them:  tests/e2e/run.sh elevation api_keys
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [[ -z "${DALEA_BIN:-}" ]]; then
  echo "run.sh: DALEA_BIN is not set; point it at the dalea-gateway binary, e.g." >&2
  echo "  DALEA_BIN=\$CARGO_TARGET_DIR/debug/dalea-gateway $0" >&2
  exit 2
fi
# A relative path is relative to where the caller stands, not to tests/e2e.
case "$DALEA_BIN" in
  /*) ;;
  *) DALEA_BIN="$PWD/$DALEA_BIN" ;;
esac
if [[ ! -x "$DALEA_BIN" ]]; then
  echo "run.sh: DALEA_BIN=$DALEA_BIN is not an executable file (build it with: cargo build --bin dalea-gateway)" >&2
  exit 2
fi

chromium_bin="${CHROMIUM_PATH:-/usr/bin/chromium}"
if [[ ! -x "$chromium_bin" ]]; then
  echo "run.sh: Chromium not found at $chromium_bin; install it with: apt-get install -y chromium" >&2
  echo "        (or set CHROMIUM_PATH to another Chromium binary)" >&2
  exit 2
fi

cd "$here"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "run.sh: node and npm are required (Node 20 or newer)" >&2
  exit 2
fi

# npm ci when node_modules is missing, older than the lock file, or does not match it
# (npm writes node_modules/.package-lock.json on every install).
stale=0
if [[ ! -d node_modules || ! -f node_modules/.package-lock.json ]]; then
  stale=1
elif [[ package-lock.json -nt node_modules/.package-lock.json || package.json -nt node_modules/.package-lock.json ]]; then
  stale=1
elif [[ ! -f node_modules/playwright-core/package.json ]]; then
  stale=1
fi
if (( stale )); then
  echo "run.sh: installing node packages (npm ci)"
  npm ci --no-audit --no-fund
fi

tests=("$@")
(( ${#tests[@]} )) || tests=(sessions elevation api_keys passkeys vigilance oauth)
for t in "${tests[@]}"; do
  if [[ ! -f "$t.e2e.mjs" ]]; then
    echo "run.sh: no test $t.e2e.mjs in $here" >&2
    exit 2
  fi
done

# oauth.e2e.mjs runs the OpenID Provider of the Rust sign-in tests (tests/oidc/provider.mjs, npm
# oidc-provider), with the packages of tests/oidc's own lock file: the same checks there.
if [[ " ${tests[*]} " == *" oauth "* ]]; then
  oidc="$here/../oidc"
  if [[ ! -f $oidc/node_modules/.package-lock.json || ! -f $oidc/node_modules/oidc-provider/package.json \
        || $oidc/package-lock.json -nt $oidc/node_modules/.package-lock.json \
        || $oidc/package.json -nt $oidc/node_modules/.package-lock.json ]]; then
    echo "run.sh: installing the OIDC test provider's node packages (npm ci in tests/oidc)"
    (cd "$oidc" && npm ci --no-audit --no-fund)
  fi
fi

export DALEA_BIN CHROMIUM_PATH="$chromium_bin"
status=0
failed=()
for t in "${tests[@]}"; do
  echo "# $t.e2e.mjs"
  rc=0
  node "$t.e2e.mjs" || rc=$?
  if (( rc != 0 )); then
    failed+=("$t (exit $rc)")
    (( status != 0 )) || status=$rc
  fi
  echo
done
if (( ${#failed[@]} )); then
  echo "run.sh: FAILED: ${failed[*]}" >&2
else
  echo "run.sh: all passed: ${tests[*]}"
fi
exit "$status"
