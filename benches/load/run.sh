#!/usr/bin/env bash
# Load benchmark: Dalea Gateway against its upstream and against a hand-built Node gateway.
#
# Starts, on free loopback ports, and stops again on exit:
#   - nginx (1 worker, keep-alive) serving a small static file: the upstream;
#   - redis-server (no persistence);
#   - two gateways (release build): one with the embedded store, one with the Redis store;
#   - express/gateway.mjs: express + express-session + connect-redis + http-proxy-middleware
#     with a keep-alive agent, on the same Redis and upstream.
# Then runs wrk against five targets, interleaved round by round so that background noise on a
# shared machine hits every target alike:
#   direct     nginx itself
#   public     the gateway on an access = "public" route (passthrough: the proxy's own cost)
#   embedded   the gateway on an access = "session" route with a valid cookie, embedded store
#   redis      the same with the Redis store
#   express    the Node gateway with a valid session
# each round once at full load (CONNECTIONS connections) and once at moderate load (a few
# connections that pause between requests), and prints medians over the rounds, the ratios,
# Redis commands per authenticated request, and a markdown table for the README.
#
# Usage (from anywhere; as root, or with sudo, on a fresh Debian/Ubuntu it first installs what
# is missing of wrk, nginx, redis-server, nodejs, npm, curl; the Node packages need Node 20+,
# newer than Debian 12's own nodejs, which the script checks):
#   benches/load/run.sh
#   ROUNDS=1 DURATION=3s benches/load/run.sh                  # quick check that it all works
#   ROUNDS=9 DURATION=4s benches/load/run.sh                  # finer interleaving: the p99
#       differences at moderate load are a fraction of a millisecond, and a burst of someone
#       else's work during one run moves a p99 by more than that; more, shorter rounds make
#       the median of the per-round differences less sensitive to it
#   GATEWAY_BIN=path/to/dalea-gateway benches/load/run.sh     # skip the cargo build
#
# Environment (defaults in brackets):
#   ROUNDS [3]                 rounds; every target runs once per pass per round
#   DURATION [10s]             length of each wrk run
#   CONNECTIONS [50]           connections of the full-load pass
#   THREADS [1]                wrk threads (see below)
#   MODERATE_CONNECTIONS [8]   connections of the moderate-load pass ...
#   MODERATE_THINK_MS [4]      ... each pausing this long after every response (at most
#                              8 / 4 ms = 2,000 req/s offered, far below the gateway's
#                              capacity), so latency is service time rather than queueing
#   WARMUP [3s]                one untimed wrk run per target first (JIT, connection pools,
#                              session caches)
#   GATEWAY_BIN                gateway binary; default: `cargo build --release --locked` and
#                              use $CARGO_TARGET_DIR/release/dalea-gateway (or target/release)
#   OUT_DIR                    if set, the raw wrk outputs, results.tsv and the server logs
#                              are copied there (the working directory itself is deleted)
#
# Nothing here touches a system service: every process is started by this script, recorded by
# PID and stopped by PID on exit, and all files live in one temporary directory. (Installing
# nginx or redis-server would start their services; see install_missing for how that is kept
# from happening.)
set -Eeuo pipefail   # -E: the ERR trap (see main) also fires inside functions

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-50}
# One wrk thread: on a 2-core machine wrk shares the CPUs with the server under test (and
# with nginx behind it, and Redis). A single wrk thread drives well over 20k req/s with
# keep-alive, more than any target here serves, so more threads would only take CPU away from
# the servers and lower every number. (It does make the `direct` row partly a measure of wrk.)
THREADS=${THREADS:-1}
MODERATE_CONNECTIONS=${MODERATE_CONNECTIONS:-8}
MODERATE_THINK_MS=${MODERATE_THINK_MS:-4}
WARMUP=${WARMUP:-3s}
GATEWAY_BIN=${GATEWAY_BIN:-}
OUT_DIR=${OUT_DIR:-}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
EXPRESS_DIR="$HERE/express"

BENCH_EMAIL="bench@example.com"
BENCH_PASSWORD="dalea-load-bench-password"
GW_COOKIE="dalea_session"     # cookie_secure = false: no __Host- prefix
EXPRESS_COOKIE="gw.sid"
# The static file every target ends up serving (nginx adds its headers around it).
PAGE_BODY="dalea load benchmark: a small static page served by the upstream nginx."

# Targets, in their base order (each round starts one further along, see `rotated`).
TARGETS=(direct public embedded redis express)
declare -A LABEL=(
  [direct]="nginx upstream, direct"
  [public]="gateway, public route (passthrough)"
  [embedded]="gateway, session route, embedded store"
  [redis]="gateway, session route, Redis store"
  [express]="express + express-session + connect-redis + http-proxy-middleware (keep-alive agent)"
)
declare -A URL COOKIE       # filled in once the servers are up
declare -A USES_REDIS=([redis]=1 [express]=1)

PIDS=()                     # every process this script started, in start order
declare -A PID_NAME
WORK=""
RESULTS=""
POLICY_RC_ADDED=""
BUILT_HOW=""

log() { printf '[load %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[load] FAILED: %s\n' "$*" >&2; exit 1; }

# --- setup ---------------------------------------------------------------------------------

# apt-get installs what is missing. Installing nginx or redis-server normally starts their
# system services (nginx on port 80); a temporary policy-rc.d (the standard Debian switch)
# stops that, so the machine's services stay as they were.
install_missing() {
  local -A pkg_for=(
    [wrk]=wrk [nginx]=nginx [redis-server]=redis-server [redis-cli]=redis-tools
    [node]=nodejs [npm]=npm [curl]=curl [ss]=iproute2
  )
  local cmd missing=()
  for cmd in "${!pkg_for[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("${pkg_for[$cmd]}")
  done
  ((${#missing[@]} == 0)) && return 0
  log "installing ${missing[*]}"
  command -v apt-get >/dev/null 2>&1 || die "please install ${missing[*]} (no apt-get here)"
  local sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || die "need root or sudo to install ${missing[*]}"
    sudo=(sudo)
  fi
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee /usr/sbin/policy-rc.d >/dev/null
    "${sudo[@]}" chmod 755 /usr/sbin/policy-rc.d
    POLICY_RC_ADDED=1
  fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  remove_policy_rc
}

remove_policy_rc() {
  if [[ -n $POLICY_RC_ADDED ]]; then
    if [[ $(id -u) -eq 0 ]]; then rm -f /usr/sbin/policy-rc.d; else sudo rm -f /usr/sbin/policy-rc.d; fi
    POLICY_RC_ADDED=""
  fi
}

# redis@6 (the Node client) needs Node 20; Debian 12's own nodejs is 18.
check_node() {
  local major
  major=$(node -p 'process.versions.node.split(".")[0]')
  ((major >= 20)) || die "Node $(node --version) is too old for redis@6.4.0 in express/package.json; install Node 20+ (e.g. NodeSource)"
}

# npm ci into express/node_modules (git-ignored), skipped when it is already up to date.
install_express_deps() {
  if [[ -f $EXPRESS_DIR/node_modules/.package-lock.json &&
    ! $EXPRESS_DIR/package-lock.json -nt $EXPRESS_DIR/node_modules/.package-lock.json ]]; then
    return 0
  fi
  log "npm ci in benches/load/express"
  (cd "$EXPRESS_DIR" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
}

build_gateway() {
  if [[ -n $GATEWAY_BIN ]]; then
    [[ -x $GATEWAY_BIN ]] || die "GATEWAY_BIN=$GATEWAY_BIN is not an executable"
    BUILT_HOW="binary from GATEWAY_BIN"
    return 0
  fi
  BUILT_HOW="release build"
  "$REPO/scripts/setup.sh"          # cmake, which pingora's build needs
  log "cargo build --release --locked (a cold build takes a while)"
  (cd "$REPO" && cargo build --release --locked)
  local target_dir=${CARGO_TARGET_DIR:-target}
  [[ $target_dir == /* ]] || target_dir="$REPO/$target_dir"
  GATEWAY_BIN="$target_dir/release/dalea-gateway"
  [[ -x $GATEWAY_BIN ]] || die "the build did not produce $GATEWAY_BIN"
}

# --- processes -----------------------------------------------------------------------------

# Prints a loopback port nobody listens on, below the kernel's ephemeral range (so no outgoing
# connection is using it either), and never the same twice. A port can still be taken between
# this check and the bind; the server then fails to start and the script says so.
declare -A HANDED_OUT
free_port() {
  local low p _
  read -r low _ </proc/sys/net/ipv4/ip_local_port_range
  for _ in {1..200}; do
    p=$((10000 + RANDOM % (low - 10000)))
    [[ -n ${HANDED_OUT[$p]:-} ]] && continue
    if [[ -z $(ss -Htln "sport = :$p") ]]; then
      HANDED_OUT[$p]=1
      REPLY=$p
      return 0
    fi
  done
  die "no free port found"
}

# start NAME COMMAND...: runs COMMAND in the background with its output in logs/NAME.log and
# records its PID (the command itself, not a wrapper: a simple command with redirections is
# exec'd by the forked shell).
start() {
  local name=$1
  shift
  "$@" >"$WORK/logs/$name.log" 2>&1 &
  PIDS+=("$!")
  PID_NAME[$!]=$name
}

alive() { kill -0 "$1" 2>/dev/null; }

# wait_until NAME PID COMMAND...: retries COMMAND for up to 30 s while the process lives.
wait_until() {
  local name=$1 pid=$2
  shift 2
  local _
  for _ in {1..300}; do
    "$@" >/dev/null 2>&1 && return 0
    alive "$pid" || { tail -n 20 "$WORK/logs/$name.log" >&2; die "$name exited during start-up"; }
    sleep 0.1
  done
  tail -n 20 "$WORK/logs/$name.log" >&2
  die "$name did not become ready within 30 s"
}

# stop PID...: SIGTERM to all of them at once, then wait up to 10 s before SIGKILL.
stop() {
  local pid _
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "$@"; do
    for _ in {1..100}; do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then
      log "${PID_NAME[$pid]} (pid $pid) ignored SIGTERM for 10 s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
}

# The gateways and express first (a gateway flushes pending activity to Redis as it stops),
# then Redis and nginx.
stop_all() {
  local pid first=() last=()
  for pid in "${PIDS[@]}"; do
    alive "$pid" || continue
    case ${PID_NAME[$pid]} in
      nginx | redis) last+=("$pid") ;;
      *) first+=("$pid") ;;
    esac
  done
  ((${#first[@]} + ${#last[@]} == 0)) && return 0
  log "stopping what this script started (pids ${first[*]} ${last[*]})"
  ((${#first[@]} == 0)) || stop "${first[@]}"
  ((${#last[@]} == 0)) || stop "${last[@]}"
}

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  remove_policy_rc
  stop_all
  if [[ -n $WORK && -d $WORK ]]; then
    if [[ -n $OUT_DIR ]]; then
      mkdir -p "$OUT_DIR"
      cp -r "$WORK/wrk" "$WORK/logs" "$OUT_DIR/" 2>/dev/null || true
      [[ -f $RESULTS ]] && cp "$RESULTS" "$OUT_DIR/"
      log "raw results copied to $OUT_DIR"
    fi
    rm -rf "$WORK"
  fi
  exit "$status"
}

start_upstream() {
  free_port
  UPSTREAM_PORT=$REPLY
  mkdir -p "$WORK/www/public" "$WORK/nginx/tmp"
  printf '%s\n' "$PAGE_BODY" >"$WORK/www/bench.html"
  printf '%s\n' "$PAGE_BODY" >"$WORK/www/public/bench.html"
  # nginx's workers may run as an unprivileged user: let them reach www/ (and only list it).
  chmod 711 "$WORK"
  chmod -R a+rX "$WORK/www"
  # Everything nginx writes stays under $WORK/nginx (temp paths included; Debian's defaults
  # point into /var/lib/nginx). keepalive_requests is raised so that neither wrk nor the
  # gateways' pools are made to reconnect every 1000 requests (nginx's default).
  cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    default_type text/html;
    keepalive_timeout 65s;
    keepalive_requests 1000000;
    client_body_temp_path $WORK/nginx/tmp/body;
    proxy_temp_path $WORK/nginx/tmp/proxy;
    fastcgi_temp_path $WORK/nginx/tmp/fastcgi;
    uwsgi_temp_path $WORK/nginx/tmp/uwsgi;
    scgi_temp_path $WORK/nginx/tmp/scgi;
    server {
        listen 127.0.0.1:$UPSTREAM_PORT;
        root $WORK/www;
        # Counts every request nginx handles: how the script checks that each counted
        # response really came through to the upstream.
        location = /nginx_status { stub_status; }
    }
}
EOF
  start nginx nginx -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf" -g 'daemon off;'
  wait_until nginx "${PIDS[-1]}" curl -fsS "http://127.0.0.1:$UPSTREAM_PORT/bench.html"
}

start_redis() {
  free_port
  REDIS_PORT=$REPLY
  mkdir -p "$WORK/redis"
  start redis redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --protected-mode yes \
    --save '' --appendonly no --daemonize no --dir "$WORK/redis"
  wait_until redis "${PIDS[-1]}" redis ping
}

redis() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }

# start_gateway NAME STORE_TOML: a gateway on its own ports and data directory, default
# logging (RUST_LOG unset: `info`, which logs start-up, sign-ins and the like but nothing per
# proxied request) and default worker threads (one per CPU).
start_gateway() {
  local name=$1 store=$2 dir="$WORK/$1" port admin
  free_port
  port=$REPLY
  free_port
  admin=$REPLY
  mkdir -p "$dir"
  cat >"$dir/users.toml" <<EOF
[[users]]
id = "bench"
email = "$BENCH_EMAIL"
password_hash = "$PASSWORD_HASH"
EOF
  cat >"$dir/gateway.toml" <<EOF
[server]
listen = "127.0.0.1:$port"
admin_listen = "127.0.0.1:$admin"
# Nothing is in flight when the script stops the gateway, and SIGTERM always waits this long.
shutdown_grace_period = "1s"

$store

[session]
cookie_name = "$GW_COOKIE"
cookie_secure = false
activity_flush_interval = "1s"   # the default; run_wrk waits for one flush after a run

[users]
file = "users.toml"

[[upstreams]]
name = "nginx"
address = "127.0.0.1:$UPSTREAM_PORT"

[[routes]]
name = "public"
path_prefix = "/public"
upstream = "nginx"
access = "public"

[[routes]]
name = "app"
path_prefix = "/"
upstream = "nginx"
access = "session"
EOF
  env -u RUST_LOG "$GATEWAY_BIN" check-config --config "$dir/gateway.toml" >"$WORK/logs/$name-check.log" 2>&1 ||
    { cat "$WORK/logs/$name-check.log" >&2; die "check-config refused the $name gateway's config"; }
  start "$name" env -u RUST_LOG "$GATEWAY_BIN" serve --config "$dir/gateway.toml"
  wait_until "$name" "${PIDS[-1]}" curl -fsS "http://127.0.0.1:$admin/readyz"
  REPLY=$port
}

start_express() {
  free_port
  EXPRESS_PORT=$REPLY
  # NODE_ENV=production as it would be deployed (express skips some development work).
  start express env NODE_ENV=production PORT="$EXPRESS_PORT" \
    UPSTREAM="http://127.0.0.1:$UPSTREAM_PORT" REDIS_URL="redis://127.0.0.1:$REDIS_PORT" \
    node "$EXPRESS_DIR/gateway.mjs"
  wait_until express "${PIDS[-1]}" curl -fsS "http://127.0.0.1:$EXPRESS_PORT/_bench/stats"
}

# --- sessions and pre-flight checks --------------------------------------------------------

# gateway_sign_in PORT: signs in through the JSON API, prints "dalea_session=…".
gateway_sign_in() {
  local port=$1 status cookie
  status=$(curl -sS -o "$WORK/signin.body" -D "$WORK/signin.headers" -w '%{http_code}' \
    -H 'Content-Type: application/json' \
    --data "{\"email\":\"$BENCH_EMAIL\",\"password\":\"$BENCH_PASSWORD\",\"remember_me\":false}" \
    "http://127.0.0.1:$port/.dalea/api/signin")
  cookie=$(tr -d '\r' <"$WORK/signin.headers" | sed -n "s/^[Ss]et-[Cc]ookie: *\($GW_COOKIE=[^;]*\).*/\1/p" | head -n 1)
  [[ $status == 200 && -n $cookie ]] ||
    die "gateway sign-in on port $port answered $status: $(head -c 300 "$WORK/signin.body")"
  printf '%s' "$cookie"
}

# express_sign_in: GET /signin?user=alice, prints "gw.sid=…".
express_sign_in() {
  local status cookie
  status=$(curl -sS -o /dev/null -D "$WORK/signin.headers" -w '%{http_code}' \
    "http://127.0.0.1:$EXPRESS_PORT/signin?user=alice")
  cookie=$(tr -d '\r' <"$WORK/signin.headers" | sed -n "s/^[Ss]et-[Cc]ookie: *\($EXPRESS_COOKIE=[^;]*\).*/\1/p" | head -n 1)
  [[ $status == 200 && -n $cookie ]] || die "express sign-in answered $status"
  printf '%s' "$cookie"
}

# expect WHAT STATUS [BODY] -- CURL_ARGS...: one request; dies unless the status (and the
# body, if given) is as expected.
expect() {
  local what=$1 want_status=$2 want_body=$3 status body
  shift 4
  status=$(curl -sS -o "$WORK/check.body" -w '%{http_code}' "$@") || die "$what: request failed"
  body=$(cat "$WORK/check.body")
  [[ $status == "$want_status" ]] || die "$what: expected $want_status, got $status: ${body:0:300}"
  if [[ -n $want_body && $body != "$want_body" ]]; then
    die "$what: expected the upstream's page, got: ${body:0:300}"
  fi
}

check_targets() {
  local html=(-H 'Accept: text/html')
  expect "nginx direct" 200 "$PAGE_BODY" -- "${URL[direct]}"
  expect "gateway public route" 200 "$PAGE_BODY" -- "${URL[public]}"
  local t
  for t in embedded redis; do
    expect "gateway ($t) session route with the cookie" 200 "$PAGE_BODY" -- -H "Cookie: ${COOKIE[$t]}" "${URL[$t]}"
    expect "gateway ($t) session route without a cookie" 401 "" -- "${URL[$t]}"
    expect "gateway ($t) session route, browser without a cookie" 303 "" -- "${html[@]}" "${URL[$t]}"
  done
  expect "express with the cookie" 200 "$PAGE_BODY" -- -H "Cookie: ${COOKIE[express]}" "${URL[express]}"
  expect "express without a cookie" 302 "" -- "${URL[express]}"
  log "pre-flight checks passed: each target answers as expected"
}

# --- load ----------------------------------------------------------------------------------

upstream_requests() { curl -fsS "http://127.0.0.1:$UPSTREAM_PORT/nginx_status" | awk '/^ *[0-9]+ +[0-9]+ +[0-9]+ *$/ {print $3}'; }
express_redirects() { curl -fsS "http://127.0.0.1:$EXPRESS_PORT/_bench/stats" | sed -n 's/.*"redirects":\([0-9]*\).*/\1/p'; }

# redis_calls FILE: writes "command calls" lines from INFO commandstats to FILE and prints
# their sum, leaving out this script's own CONFIG and INFO.
redis_calls() {
  redis INFO commandstats | tr -d '\r' |
    awk -F'[:=,]' '/^cmdstat_/ && $1 !~ /^cmdstat_(config|info)([|]|$)/ {sub(/^cmdstat_/, "", $1); print $1, $3}' >"$1"
  awk '{n += $2} END {print n + 0}' "$1"
}

# parse_wrk FILE: prints "req_per_s p50_ms p99_ms requests errors" (errors: socket errors plus
# responses wrk counts as failures, i.e. status >= 400; a 3xx is checked separately).
parse_wrk() {
  awk '
    function ms(v,   n, u) {
      n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
      if (u == "us") return n / 1000
      if (u == "ms") return n
      if (u == "s") return n * 1000
      if (u == "m") return n * 60000
      return -1
    }
    /^ +50%/ { p50 = ms($2) }
    /^ +99%/ { p99 = ms($2) }
    / requests in / { requests = $1 }
    /Socket errors:/ { errors += $4 + $6 + $8 + $10 }
    /Non-2xx or 3xx responses:/ { errors += $5 }
    /^Requests\/sec:/ { rps = $2 }
    END { printf "%s %s %s %s %d\n", rps, p50, p99, requests, errors }
  ' "$1"
}

# run_wrk PASS ROUND TARGET: one measured run; appends a row to results.tsv.
run_wrk() {
  local pass=$1 round=$2 t=$3 out="$WORK/wrk/$1-$2-$3.txt"
  local args=(-t "$THREADS" -d "$DURATION" --latency)
  if [[ $pass == full ]]; then
    args+=(-c "$CONNECTIONS")
  else
    args+=(-c "$MODERATE_CONNECTIONS" -s "$WORK/think.lua")
  fi
  [[ -n ${COOKIE[$t]:-} ]] && args+=(-H "Cookie: ${COOKIE[$t]}")

  local up_before redirects_before calls=""
  up_before=$(upstream_requests)
  [[ $t == express ]] && redirects_before=$(express_redirects)
  [[ -n ${USES_REDIS[$t]:-} ]] && redis CONFIG RESETSTAT >/dev/null

  wrk "${args[@]}" "${URL[$t]}" >"$out" 2>&1 || { cat "$out" >&2; die "wrk failed on $t"; }

  if [[ -n ${USES_REDIS[$t]:-} ]]; then
    # The gateway writes activity in batches every activity_flush_interval (1 s): wait for
    # the batch holding the run's last requests, so it is counted here and not in the next
    # target's run.
    sleep 1.5
    calls=$(redis_calls "${out%.txt}.redis")
  fi
  local rps p50 p99 requests errors reached
  read -r rps p50 p99 requests errors < <(parse_wrk "$out")
  [[ -n $rps && -n $requests && $requests -gt 0 && $p99 != -1 ]] || { cat "$out" >&2; die "could not read wrk's output for $t"; }
  ((errors == 0)) || { cat "$out" >&2; die "$t: $errors socket errors or error responses during the run"; }
  if [[ $t == express ]]; then
    (($(express_redirects) == redirects_before)) || die "express answered 302 (session lost) during the run"
  fi
  # Every response wrk counted must have been fetched from nginx (minus 1: the status request
  # itself is counted by the second read).
  reached=$(($(upstream_requests) - up_before - 1))
  ((reached >= requests)) || die "$t: wrk counted $requests responses but only $reached reached the upstream"

  local per_req="-"
  [[ -n $calls ]] && per_req=$(awk -v c="$calls" -v r="$requests" 'BEGIN {printf "%.4f", c / r}')
  local load
  read -r load _ </proc/loadavg
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
    "$pass" "$round" "$t" "$rps" "$p50" "$p99" "$requests" "${calls:--}" "$per_req" "$load" >>"$RESULTS"
  log "$(printf '%-8s round %s  %-8s %9.0f req/s  p50 %7.2f ms  p99 %7.2f ms  redis cmds/req %s' \
    "$pass" "$round" "$t" "$rps" "$p50" "$p99" "$per_req")"
}

# rotated N: the targets, starting at position N mod 5, so no target is always first or last.
rotated() {
  local n=$(($1 % ${#TARGETS[@]}))
  printf '%s\n' "${TARGETS[@]:n}" "${TARGETS[@]:0:n}"
}

warm_up() {
  local t args
  for t in "${TARGETS[@]}"; do
    args=(-t "$THREADS" -c "$CONNECTIONS" -d "$WARMUP")
    [[ -n ${COOKIE[$t]:-} ]] && args+=(-H "Cookie: ${COOKIE[$t]}")
    wrk "${args[@]}" "${URL[$t]}" >"$WORK/wrk/warmup-$t.txt" 2>&1 || { cat "$WORK/wrk/warmup-$t.txt" >&2; die "wrk warm-up failed on $t"; }
  done
}

# --- report --------------------------------------------------------------------------------

# Column numbers in results.tsv.
C_RPS=4 C_P50=5 C_P99=6 C_REQ=7 C_CPR=9

median() { sort -g | awk '{a[NR] = $1} END {if (NR == 0) print "nan"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

# values PASS TARGET COLUMN: that column over the rounds.
values() { awk -F'\t' -v p="$1" -v t="$2" -v c="$3" '$1 == p && $3 == t {print $c}' "$RESULTS"; }
med() { values "$@" | median; }

# paired PASS A B COLUMN OP: per round, A's value OP B's (OP "/" or "-"); then the median.
# Pairing within a round cancels most of the noise both runs of that round saw.
paired() {
  awk -F'\t' -v p="$1" -v a="$2" -v b="$3" -v c="$4" -v op="$5" '
    $1 == p && $3 == a {x[$2] = $c}
    $1 == p && $3 == b {y[$2] = $c}
    END {for (r in x) if (r in y) print (op == "/" ? x[r] / y[r] : x[r] - y[r])}
  ' "$RESULTS" | median
}

thousands() { awk -v n="$1" 'BEGIN {s = sprintf("%.0f", n); o = ""; while (length(s) > 3) {o = "," substr(s, length(s) - 2) o; s = substr(s, 1, length(s) - 3)} print s o}'; }
fmt() { awk -v n="$2" -v f="$1" 'BEGIN {printf f, n}'; }

report() {
  local t date cpu loads versions commit
  date=$(date -u '+%Y-%m-%d %H:%M UTC')
  cpu=$(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo)
  loads=$(cut -f10 "$RESULTS" | tail -n +2 | sort -g | sed -n '1p;$p' | paste -sd '-' | sed 's/-/–/')
  versions="$(nginx -v 2>&1 | sed 's|.*nginx/|nginx |'), Redis $(redis-server --version | sed 's/.* v=\([^ ]*\).*/\1/'), Node $(node --version), $({ wrk -v 2>&1 || true; } | awk 'NR == 1 {v = $2; sub(/^debian\//, "", v); sub(/-.*/, "", v); print "wrk " v}')"
  commit=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
  if [[ $commit != unknown && -n $(git -C "$REPO" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null) ]]; then
    commit="$commit + uncommitted changes"
  fi

  echo
  echo "== Per round (full load: -c $CONNECTIONS; moderate: -c $MODERATE_CONNECTIONS, ${MODERATE_THINK_MS} ms pause) =="
  printf '%-9s %-9s %s\n' pass target "req/s per round"
  for pass in full moderate; do
    for t in "${TARGETS[@]}"; do
      printf '%-9s %-9s %s\n' "$pass" "$t" "$(values "$pass" "$t" $C_RPS | xargs printf '%.0f ' )"
    done
  done

  local -A rps p50 p99 mrps mp50 mp99 cpr mcpr
  for t in "${TARGETS[@]}"; do
    rps[$t]=$(med full "$t" $C_RPS)
    p50[$t]=$(med full "$t" $C_P50)
    p99[$t]=$(med full "$t" $C_P99)
    mrps[$t]=$(med moderate "$t" $C_RPS)
    mp50[$t]=$(med moderate "$t" $C_P50)
    mp99[$t]=$(med moderate "$t" $C_P99)
    cpr[$t]=-
    mcpr[$t]=-
    if [[ -n ${USES_REDIS[$t]:-} ]]; then
      cpr[$t]=$(fmt %.4f "$(med full "$t" $C_CPR)")
      mcpr[$t]=$(fmt %.4f "$(med moderate "$t" $C_CPR)")
    fi
  done

  local r_emb r_red r_exp a_pub a_emb a_red m_pub m_emb m_red
  r_emb=$(paired full embedded public $C_RPS /)
  r_red=$(paired full redis public $C_RPS /)
  r_exp=$(paired full redis express $C_RPS /)
  a_pub=$(paired full public direct $C_P99 -)
  a_emb=$(paired full embedded public $C_P99 -)
  a_red=$(paired full redis public $C_P99 -)
  m_pub=$(paired moderate public direct $C_P99 -)
  m_emb=$(paired moderate embedded public $C_P99 -)
  m_red=$(paired moderate redis public $C_P99 -)

  echo
  echo "== Load benchmark: $date =="
  echo
  echo "Machine: $(nproc) CPUs ($cpu), load average during the runs $loads."
  echo "Gateway $commit ($BUILT_HOW, default worker threads = $(nproc)); $versions."
  echo "wrk -t$THREADS -d$DURATION --latency; full load -c$CONNECTIONS; moderate load -c$MODERATE_CONNECTIONS with"
  echo "a ${MODERATE_THINK_MS} ms pause after each response. Rounds: $ROUNDS, targets interleaved; medians over the rounds."
  echo "Ratios and added latencies are per-round pairs (same round, back to back), then the median."
  echo
  echo "| target | req/s | p50 | p99 | req/s, moderate | p50, moderate | p99, moderate | Redis cmds / request (full / moderate) |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|"
  for t in "${TARGETS[@]}"; do
    local redis_col="–"
    [[ ${cpr[$t]} != - ]] && redis_col="${cpr[$t]} / ${mcpr[$t]}"
    printf '| %s | %s | %s ms | %s ms | %s | %s ms | %s ms | %s |\n' "${LABEL[$t]}" \
      "$(thousands "${rps[$t]}")" "$(fmt %.2f "${p50[$t]}")" "$(fmt %.2f "${p99[$t]}")" \
      "$(thousands "${mrps[$t]}")" "$(fmt %.2f "${mp50[$t]}")" "$(fmt %.2f "${mp99[$t]}")" "$redis_col"
  done
  echo
  echo "| comparison | value |"
  echo "|---|---:|"
  echo "| req/s, session route (embedded) ÷ passthrough | $(fmt %.2f "$r_emb") |"
  echo "| req/s, session route (Redis) ÷ passthrough | $(fmt %.2f "$r_red") |"
  echo "| req/s, gateway (Redis) ÷ express | $(fmt %.1f "$r_exp")× |"
  echo "| p99 added by the passthrough over nginx direct, full / moderate load | $(fmt %+.2f "$a_pub") ms / $(fmt %+.2f "$m_pub") ms |"
  echo "| p99 added over passthrough, session (embedded), full load | $(fmt %+.2f "$a_emb") ms |"
  echo "| p99 added over passthrough, session (Redis), full load | $(fmt %+.2f "$a_red") ms |"
  echo "| **p99 added over passthrough at moderate load, session (embedded)** (target ≤ 0.3 ms) | **$(fmt %+.2f "$m_emb") ms** |"
  echo "| **p99 added over passthrough at moderate load, session (Redis)** (target ≤ 0.3 ms) | **$(fmt %+.2f "$m_red") ms** |"
  echo "| Redis commands per authenticated request, gateway / express (full load) | ${cpr[redis]} / ${cpr[express]} |"
  echo
  echo "Redis commands by name, full load, round $ROUNDS (requests wrk counted in brackets):"
  local -A who=([redis]="gateway (Redis)" [express]=express)
  for t in redis express; do
    printf '  %-16s [%s] %s\n' "${who[$t]}" "$(values full "$t" $C_REQ | tail -n 1)" \
      "$(awk '{printf "%s%s %d", sep, toupper($1), $2; sep = ", "}' "$WORK/wrk/full-$ROUNDS-$t.redis")"
  done
  echo
}

# --- main ----------------------------------------------------------------------------------

main() {
  local started=$SECONDS
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  # set -e alone exits silently; say where.
  trap 'log "command failed (status $?) at line $LINENO: $BASH_COMMAND"' ERR

  install_missing
  check_node
  install_express_deps
  build_gateway
  log "gateway: $GATEWAY_BIN"

  WORK=$(mktemp -d "${TMPDIR:-/tmp}/dalea-load.XXXXXX")
  mkdir -p "$WORK/logs" "$WORK/wrk"
  RESULTS="$WORK/results.tsv"
  printf 'pass\tround\ttarget\treq_per_s\tp50_ms\tp99_ms\trequests\tredis_calls\tredis_calls_per_request\tloadavg1\n' >"$RESULTS"
  # wrk's delay() hook: each connection waits this long after a response before its next request.
  printf 'function delay() return %d end\n' "$MODERATE_THINK_MS" >"$WORK/think.lua"

  PASSWORD_HASH=$(printf '%s' "$BENCH_PASSWORD" | "$GATEWAY_BIN" hash-password)
  start_upstream
  start_redis
  start_gateway gw-embedded $'[store]\nkind = "embedded"\npath = "data"'
  local embedded_port=$REPLY
  start_gateway gw-redis "$(printf '[store]\nkind = "redis"\nurl = "redis://127.0.0.1:%s"\nkey_prefix = "daleabench"' "$REDIS_PORT")"
  local redis_port=$REPLY
  start_express
  log "up: nginx :$UPSTREAM_PORT, redis :$REDIS_PORT, gateways :$embedded_port (embedded) :$redis_port (Redis), express :$EXPRESS_PORT"

  URL[direct]="http://127.0.0.1:$UPSTREAM_PORT/bench.html"
  URL[public]="http://127.0.0.1:$embedded_port/public/bench.html"
  URL[embedded]="http://127.0.0.1:$embedded_port/bench.html"
  URL[redis]="http://127.0.0.1:$redis_port/bench.html"
  URL[express]="http://127.0.0.1:$EXPRESS_PORT/bench.html"
  COOKIE[embedded]=$(gateway_sign_in "$embedded_port")
  COOKIE[redis]=$(gateway_sign_in "$redis_port")
  COOKIE[express]=$(express_sign_in)
  check_targets

  log "warm-up: $WARMUP per target"
  warm_up
  local round pass t order
  for ((round = 1; round <= ROUNDS; round++)); do
    mapfile -t order < <(rotated "$((round - 1))")
    for pass in full moderate; do
      for t in "${order[@]}"; do
        run_wrk "$pass" "$round" "$t"
      done
    done
  done

  report
  log "done in $((SECONDS - started)) s"
}

main "$@"
