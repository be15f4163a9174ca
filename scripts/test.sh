#!/usr/bin/env bash
# The whole test suite: unit and integration tests, every shipped config validated with
# `check-config`, and the end-to-end test in headless Chromium. Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh --test

shared="${DALEA_SHARED_DATA:-../shared/data}"
if [[ -d "$shared/geoip" && -d "$shared/uap-core" ]]; then
  echo "== third-party corpora found in $shared: the extra GeoIP and User-Agent corpus checks run"
else
  echo "== NOTE: third-party corpora not found in $shared (set DALEA_SHARED_DATA):"
  echo "==       the extra MaxMind/uap-core corpus checks are SKIPPED; the project's own fixtures still run"
fi

if cargo fmt --version >/dev/null 2>&1; then
  echo "== cargo fmt --check"
  cargo fmt --check
else
  echo "== NOTE: rustfmt is not installed (rustup component add rustfmt): formatting NOT checked"
fi

# The sign-in tests start a real OpenID Provider (tests/oidc/provider.mjs, npm oidc-provider):
# npm ci there when node_modules is missing, older than the lock file, or does not match it
# (npm writes node_modules/.package-lock.json on every install).
oidc=tests/oidc
if [[ ! -f $oidc/node_modules/.package-lock.json || ! -f $oidc/node_modules/oidc-provider/package.json \
      || $oidc/package-lock.json -nt $oidc/node_modules/.package-lock.json \
      || $oidc/package.json -nt $oidc/node_modules/.package-lock.json ]]; then
  echo "== npm ci in $oidc (the OIDC test provider)"
  (cd "$oidc" && npm ci --no-audit --no-fund)
fi

echo "== cargo test"
# Known issue: now and then the integration test binary, which runs many gateways in one
# process, is aborted by Rust's I/O-safety check ("owned file descriptor already closed": a
# file descriptor closed twice while an in-process gateway shuts down). Until it is found and
# fixed, such an abort (and only that) is reported loudly and the tests run once more; any
# test failure still fails at once.
log="$(mktemp)"
if ! cargo test --all-targets --locked 2>&1 | tee "$log"; then
  if grep -q "IO Safety violation: owned file descriptor already closed" "$log"; then
    echo "=================================================================================="
    echo "== NOTE: a test binary ABORTED on the known double-close during gateway teardown."
    echo "== Running the whole test suite ONCE MORE; a second failure fails the run."
    echo "=================================================================================="
    cargo test --all-targets --locked
  else
    exit 1
  fi
fi
rm -f "$log"

echo "== check-config on every shipped config"
cargo build --bin dalea-gateway --locked
bin="${CARGO_TARGET_DIR:-target}/debug/dalea-gateway"
for cfg in config/dev.toml config/gateway.example.toml; do
  "$bin" check-config --config "$cfg"
done

echo "== browser end-to-end (headless Chromium)"
DALEA_BIN="$bin" ./tests/e2e/run.sh
echo "== all tests passed"
