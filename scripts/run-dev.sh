#!/usr/bin/env bash
# Runs the gateway on config/dev.toml: http://127.0.0.1:8080, demo@example.com / dalea-demo.
# Extra arguments go to `serve` (e.g. --listen 127.0.0.1:8081 --data-dir /tmp/dalea2).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec cargo run --bin dalea-gateway -- serve --config config/dev.toml "$@"
