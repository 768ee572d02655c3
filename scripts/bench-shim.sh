#!/usr/bin/env bash
# Measures what the HTTP shim adds to a key verification: wrk against
#   (a) GET /healthz     one pooled round trip to the database (SELECT 1), the shim's ceiling;
#   (b) GET /v1/verify   one apikey_verify through the same pool, key in an X-API-Key header,
# and prints requests/s, latency percentiles, CPU time per request of the shim and of
# PostgreSQL, and the ratio verify/healthz. Everything runs in
# one private cluster with its own shim, both removed on exit.
#
# The two routes are measured in alternating rounds (healthz, verify, healthz, verify, ...):
# on a shared machine the speed drifts by 10% and more within a minute, so one pair of runs
# can land anywhere in that range. The result is the median of the rounds' ratios, printed
# with the lowest and highest.
#
# Env: BENCH_SECONDS                duration of each wrk run, default 10
#      BENCH_ROUNDS                 rounds of (healthz, verify), default 5
#      BENCH_RATE_PER_MINUTE        rate_per_minute of the benchmark key, default 1000000000,
#                                   so that the shim's rate limiter never refuses a request
#      APIKEY_BENCH_SHIM_STATE_DIR  default /tmp/apikey-bench-shim (wiped first)
#      APIKEY_BENCH_SHIM_PGPORT     default 54333
#      APIKEY_BENCH_SHIM_PORT       port of the shim on 127.0.0.1, default 8091
#      APIKEY_SKIP_BUILD=1          use the installed extension as is (the shim is always built)
#      APIKEY_PG_MAJOR=18           PostgreSQL to run on: 15 (default), 16, 18
#      BENCH_BASELINE_SHIM          another apikey-shim binary (e.g. the last release's build):
#                                   each round then also verifies through it, on the next
#                                   port, and the report adds this build's verify req/s over
#                                   the baseline's
#      BENCH_REPLICAS               hot standbys of the cluster (pg_basebackup) for a second
#                                   shim to verify on (APIKEY_SHIM_REPLICA_URLS, on the port
#                                   after the baseline's): each round then also verifies
#                                   through it, and the report adds its verify req/s over
#                                   the single-server shim's. Default 0
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

export APIKEY_STATE_DIR="${APIKEY_BENCH_SHIM_STATE_DIR:-/tmp/apikey-bench-shim}"
export APIKEY_PGPORT="${APIKEY_BENCH_SHIM_PGPORT:-54333}"
APIKEY_PORT_KNOB=APIKEY_BENCH_SHIM_PGPORT
apikey_paths

seconds="${BENCH_SECONDS:-10}"
rounds="${BENCH_ROUNDS:-5}"
rate="${BENCH_RATE_PER_MINUTE:-1000000000}"
shim_port="${APIKEY_BENCH_SHIM_PORT:-8091}"
shim_url="http://127.0.0.1:$shim_port"
shim_role=apikey_bench_shim
pool_size=8
wrk_args=(-t2 -c16 "-d${seconds}s" --latency)
baseline="${BENCH_BASELINE_SHIM:-}"
replicas="${BENCH_REPLICAS:-0}"
[[ "$replicas" =~ ^[0-9]$ ]] || die "BENCH_REPLICAS must be a number of standbys from 0 to 9 (got '$replicas')"
if [ -n "$baseline" ] && [ ! -x "$baseline" ]; then
  die "BENCH_BASELINE_SHIM must name an apikey-shim binary (got '$baseline')"
fi
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
  die "BENCH_SECONDS must be a whole number of seconds (got '$seconds')"
fi
if ! [[ "$rounds" =~ ^[1-9][0-9]?$ ]]; then
  die "BENCH_ROUNDS must be a whole number from 1 to 99 (got '$rounds')"
fi
if ! [[ "$rate" =~ ^[1-9][0-9]{0,9}$ ]] || [ "$rate" -gt 2147483647 ]; then
  die "BENCH_RATE_PER_MINUTE must be a whole number from 1 to 2147483647 (got '$rate')"
fi
[[ "$shim_port" =~ ^[0-9]+$ ]] || die "APIKEY_BENCH_SHIM_PORT must be a port number (got '$shim_port')"

work="$(mktemp -d "${TMPDIR:-/tmp}/apikey-bench-shim-work.XXXXXX")"
bench_shim_pid=
baseline_pid=
replicas_pid=
standby_dir() { echo "$APIKEY_STATE_DIR/standby$1"; }
cleanup() {
  local rc=$?
  set +e
  # A second Ctrl-C or TERM must not cut the cleanup short and leave a shim or postmaster behind.
  trap '' INT TERM
  local pid
  for pid in $bench_shim_pid $baseline_pid $replicas_pid; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid"
      wait "$pid" 2>/dev/null
    fi
  done
  local i
  for i in $(seq 1 "$replicas"); do
    [ -f "$(standby_dir "$i")/pgdata/postmaster.pid" ] \
      && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$(standby_dir "$i")/pgdata" -m immediate -w stop >/dev/null 2>&1
  done
  (cluster_destroy)
  rm -rf -- "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Whatever a killed earlier run left behind would hold the ports or skew the numbers.
cluster_destroy
cluster_preflight
if _apikey_port_in_use "$shim_port"; then
  die "port $shim_port is already in use; set APIKEY_BENCH_SHIM_PORT to a free port"
fi
build_extension
command -v wrk >/dev/null || die "wrk is missing: run scripts/install-deps.sh (or apt-get install wrk)"
command -v curl >/dev/null || die "curl is missing: run scripts/install-deps.sh (or apt-get install curl)"
log "cargo build --release -p apikey-shim"
(cd "$APIKEY_REPO_ROOT" && cargo build --release -p apikey-shim)
cluster_start

if [ -n "$baseline" ]; then
  bench_shim_start "$shim_role" "$((shim_port + 1))" "$pool_size" "$work/baseline.log" "$baseline"
  baseline_pid="$bench_shim_pid"
fi
bench_shim_start "$shim_role" "$shim_port" "$pool_size" "$work/shim.log"
log "apikey-shim pid $bench_shim_pid"
target_pid="$bench_shim_pid"
target_url="$shim_url"

# The standbys: base backups of the cluster, each on the socket directory of its own.
replica_urls=()
for i in $(seq 1 "$replicas"); do
  dir="$(standby_dir "$i")"
  standby_port=$((APIKEY_PGPORT + i))
  _apikey_port_in_use "$standby_port" && die "port $standby_port (standby $i) is in use"
  install -d -o postgres -g postgres -m 0700 "$dir" "$dir/socket"
  log "standby $i: pg_basebackup, then PostgreSQL on port $standby_port"
  runuser -u postgres -- "$PGBIN/pg_basebackup" -h "$APIKEY_SOCKET_DIR" -p "$APIKEY_PGPORT" \
    -U postgres -D "$dir/pgdata" -R -X stream --checkpoint=fast
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$dir/pgdata" -l "$dir/log" -w -t 60 start \
    -o "-p $standby_port -k '$dir/socket' -c listen_addresses=''" >/dev/null
  replica_urls+=("host=$dir/socket port=$standby_port user=$shim_role dbname=apikey")
done
if [ "$replicas" -gt 0 ]; then
  bench_shim_env=("APIKEY_SHIM_REPLICA_URLS=$(IFS=,; echo "${replica_urls[*]}")")
  bench_shim_start "$shim_role" "$((shim_port + 2))" "$pool_size" "$work/replicas.log"
  replicas_pid="$bench_shim_pid"
  bench_shim_env=()
  bench_shim_pid="$target_pid"
fi

log "issuing one key (rate_per_minute $rate)"
token="$(psql_as postgres -tA -v rate="$rate" <<'SQL'
SELECT token FROM apikey_issue(apikey_partner_create('bench-shim'), ARRAY['orders:read'],
                               'bench-shim key', rate_per_minute => :rate);
SQL
)"
[[ "$token" =~ ^[A-Za-z0-9_]+$ ]] || die "apikey_issue returned no token"
# The first verification in a backend pays Argon2id; the runs measure the warm path.
status="$(curl -sS -o "$work/warm.json" -w '%{http_code}' -H "X-API-Key: $token" "$shim_url/v1/verify")"
[ "$status" = 200 ] || die "GET /v1/verify with the benchmark key answered $status: $(cat "$work/warm.json")"
if [ "$replicas" -gt 0 ]; then
  # Verified by a standby once it replayed the key (until then the primary answers).
  for _ in $(seq 1 100); do
    curl -s "http://127.0.0.1:$((shim_port + 2))/healthz" | grep -q '"in_use":false' || break
    sleep 0.1
  done
  for _ in $(seq 1 "$((replicas * 4))"); do
    status="$(curl -sS -o "$work/warm.json" -w '%{http_code}' -H "X-API-Key: $token" "http://127.0.0.1:$((shim_port + 2))/v1/verify")"
    [ "$status" = 200 ] || die "GET /v1/verify through the replicas' shim answered $status: $(cat "$work/warm.json")"
  done
fi

# run_wrk NAME PATH [wrk args...]: one wrk run; output kept in $work/NAME.out. Any non-2xx
# answer or socket error makes the run worthless (a benchmark of refusals), so it fails.
run_wrk() {
  local name="$1" path="$2"
  shift 2
  # The token is a throwaway, but tokens are never logged here either.
  log "wrk ${wrk_args[*]} ${*//$token/<token>} $target_url$path"
  wrk "${wrk_args[@]}" "$@" "$target_url$path" >"$work/$name.out" 2>&1 \
    || { cat "$work/$name.out" >&2; die "wrk failed on $path"; }
  sed 's/^/    /' "$work/$name.out" >&2
  if grep -Eq '^ *(Non-2xx or 3xx responses|Socket errors):' "$work/$name.out"; then
    die "wrk on $path saw failed requests (see above); the numbers would not mean anything"
  fi
}
# cpu_ticks PID...: user + system CPU ticks the processes have used so far.
cpu_ticks() {
  local pid total=0 line
  for pid in "$@"; do
    line="$(cat "/proc/$pid/stat" 2>/dev/null)" || continue
    # Fields after the ")" closing the command name: utime and stime are the 12th and 13th.
    read -r -a fields <<<"${line##*) }"
    total=$((total + fields[11] + fields[12]))
  done
  echo "$total"
}
postgres_pids() {
  local postmaster
  postmaster="$(head -n1 "$APIKEY_PGDATA/postmaster.pid")"
  echo "$postmaster" $(pgrep -P "$postmaster")
}
# measure NAME PATH [wrk args...]: run_wrk, plus the CPU the shim and PostgreSQL spent per
# request (from /proc), which is steadier than throughput on a shared machine.
measure() {
  local name="$1" shim0 pg0 shim1 pg1
  shim0="$(cpu_ticks "$target_pid")"
  pg0="$(cpu_ticks $(postgres_pids))"
  run_wrk "$@"
  shim1="$(cpu_ticks "$target_pid")"
  pg1="$(cpu_ticks $(postgres_pids))"
  awk -v shim=$((shim1 - shim0)) -v pg=$((pg1 - pg0)) -v hz="$(getconf CLK_TCK)" \
    -v n="$(awk '/requests in/ { print $1 }' "$work/$name.out")" \
    'BEGIN { if (n > 0) printf "%.1f %.1f\n", shim / hz / n * 1e6, pg / hz / n * 1e6; else print "n/a n/a" }' \
    >"$work/$name.cpu"
}

for round in $(seq 1 "$rounds"); do
  log "round $round of $rounds"
  measure "healthz-$round" /healthz
  measure "verify-$round" /v1/verify -H "X-API-Key: $token"
  if [ -n "$baseline" ]; then
    target_pid="$baseline_pid" target_url="http://127.0.0.1:$((shim_port + 1))"
    measure "baseline-$round" /v1/verify -H "X-API-Key: $token"
    target_pid="$bench_shim_pid" target_url="$shim_url"
  fi
  if [ "$replicas" -gt 0 ]; then
    target_pid="$replicas_pid" target_url="http://127.0.0.1:$((shim_port + 2))"
    measure "replicas-$round" /v1/verify -H "X-API-Key: $token"
    target_pid="$bench_shim_pid" target_url="$shim_url"
  fi
done
status="$(curl -sS -o /dev/null -w '%{http_code}' -H "X-API-Key: $token" "$shim_url/v1/verify")"
[ "$status" = 200 ] || die "after the runs GET /v1/verify answered $status"

row() {
  local cpu
  read -r -a cpu <"${2%.out}.cpu"
  printf '%-30s %9s %8s %8s %8s %8s %8s %8s\n' "$1" "$(wrk_field "$2" rps)" \
    "$(wrk_field "$2" 50)" "$(wrk_field "$2" 75)" "$(wrk_field "$2" 90)" "$(wrk_field "$2" 99)" \
    "${cpu[0]}" "${cpu[1]}"
}

echo
echo "apikey-shim benchmark: $(machine_summary)"
echo "wrk ${wrk_args[*]} on the same machine as the shim (pool $pool_size, RUST_LOG=warn) and"
echo "PostgreSQL; $rounds rounds of (healthz, verify)"
echo
printf '%-30s %9s %8s %8s %8s %8s %8s %8s %8s\n' "round / route" "req/s" "p50 ms" "p75 ms" \
  "p90 ms" "p99 ms" "shim us" "pg us" "ratio"
ratios=()
baseline_ratios=()
replica_ratios=()
for round in $(seq 1 "$rounds"); do
  row "$round GET /healthz (SELECT 1)" "$work/healthz-$round.out"
  pct="$(ratio "$(wrk_field "$work/verify-$round.out" rps)" "$(wrk_field "$work/healthz-$round.out" rps)" 100 '%.1f')"
  ratios+=("$pct")
  printf '%s %8s%%\n' "$(row "$round GET /v1/verify (X-API-Key)" "$work/verify-$round.out")" "$pct"
  if [ -n "$baseline" ]; then
    pct="$(ratio "$(wrk_field "$work/verify-$round.out" rps)" "$(wrk_field "$work/baseline-$round.out" rps)" 100 '%.1f')"
    baseline_ratios+=("$pct")
    printf '%s %8s%%\n' "$(row "$round GET /v1/verify, baseline" "$work/baseline-$round.out")" "$pct"
  fi
  if [ "$replicas" -gt 0 ]; then
    pct="$(ratio "$(wrk_field "$work/replicas-$round.out" rps)" "$(wrk_field "$work/verify-$round.out" rps)" 100 '%.1f')"
    replica_ratios+=("$pct")
    printf '%s %8s%%\n' "$(row "$round GET /v1/verify, $replicas replicas" "$work/replicas-$round.out")" "$pct"
  fi
done
# median_of VALUES...: "median lowest highest", rounded.
median_of() {
  printf '%s\n' "$@" | sort -n | awk '
    { v[NR] = $1 }
    END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
          printf "%.0f %.0f %.0f", m, v[1], v[NR] }'
}
read -r median lowest highest <<<"$(median_of "${ratios[@]}")"
echo
echo "(shim us, pg us: CPU time per request of the shim process and of all PostgreSQL processes;"
echo " ratio: verify req/s over the same round's healthz req/s; on a baseline row, this build's"
echo " verify req/s over the baseline's; on a replicas row, over the single-server shim's)"
echo
echo "verify / healthz throughput: median $median% over $rounds rounds (lowest $lowest%, highest $highest%; goal: at least 70%)"
if [ -n "$baseline" ]; then
  read -r b_median b_lowest b_highest <<<"$(median_of "${baseline_ratios[@]}")"
  echo "verify, this build / $baseline: median $b_median% (lowest $b_lowest%, highest $b_highest%)"
fi
if [ "$replicas" -gt 0 ]; then
  read -r r_median r_lowest r_highest <<<"$(median_of "${replica_ratios[@]}")"
  answered="$(curl -s "http://127.0.0.1:$((shim_port + 2))/metrics" | awk '/^apikey_shim_replica_verifications_total/ { n += $2 } END { print n + 0 }')"
  echo "verify with $replicas replicas / one server: median $r_median% (lowest $r_lowest%, highest $r_highest%; $answered verifications answered by the standbys)"
fi
echo
echo "RESULT verify_vs_healthz=${median}%"
