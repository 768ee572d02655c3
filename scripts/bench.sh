#!/usr/bin/env bash
# Measures apikey_verify against the ceiling of the same machine and server, in one private
# cluster (destroyed on exit) with apikey in shared_preload_libraries:
#   (a) pgbench -S (primary-key SELECTs), what a trivial prepared query costs end to end;
#   (b) apikey_verify over 100 live keys, proven before, by new pgbench connections: warm
#       (steady state, first 10 s not counted) and fresh connections (every second counted,
#       the connections' own warm-up included);
#   (c) the same right after a clean restart of the server, every second counted (the
#       proofs saved at shutdown come back: no key pays Argon2id again);
#   (d) cold: a new connection per transaction (pgbench -C) verifying the 100 keys, proven
#       by other connections before, against pgbench -C -S;
#   (e) flood: one key's throughput while 8 other connections send forged tokens (unknown
#       key ids) and wrong secrets for a proven key at BENCH_FLOOD_RATE per second, against
#       the same without the flood;
#   (f) rejections alone: unknown key ids and wrong secrets for a proven key, as fast as
#       they go.
#
# Env: BENCH_SECONDS            duration of runs (a), (b), (c) and (e), default 20 (must exceed 10)
#      BENCH_FLOOD_RATE         forged verifications per second in (e), default 240 (four
#                               times the 60/s of the attack the shared-state issue measured)
#      BENCH_RATE_PER_MINUTE    rate_per_minute of the benchmark keys, default 1000000000, so
#                               that a rate limit does not turn the run into rejections
#      APIKEY_BENCH_STATE_DIR   default /tmp/apikey-bench (wiped first)
#      APIKEY_BENCH_PGPORT      default 54332
#      APIKEY_SKIP_BUILD=1      use the installed extension as is
#      APIKEY_PG_MAJOR=18       PostgreSQL to run on: 15 (default), 16, 18 (printed on the first
#                               line of the report)
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

export APIKEY_STATE_DIR="${APIKEY_BENCH_STATE_DIR:-/tmp/apikey-bench}"
export APIKEY_PGPORT="${APIKEY_BENCH_PGPORT:-54332}"
APIKEY_PORT_KNOB=APIKEY_BENCH_PGPORT
apikey_paths

seconds="${BENCH_SECONDS:-20}"
rate="${BENCH_RATE_PER_MINUTE:-1000000000}"
flood_rate="${BENCH_FLOOD_RATE:-240}"
nkeys=100
warmup=10
cold_seconds=10
[[ "$seconds" =~ ^[0-9]+$ ]] || die "BENCH_SECONDS must be a whole number of seconds (got '$seconds')"
[[ "$rate" =~ ^[0-9]+$ ]] || die "BENCH_RATE_PER_MINUTE must be a whole number (got '$rate')"
[[ "$flood_rate" =~ ^[0-9]+$ ]] || die "BENCH_FLOOD_RATE must be a whole number (got '$flood_rate')"
if [ "$seconds" -le "$warmup" ]; then
  die "BENCH_SECONDS must be more than $warmup: the first $warmup s are the cold start and are not counted"
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/apikey-bench-work.XXXXXX")"
cleanup() {
  local rc=$?
  set +e
  # A second Ctrl-C or TERM must not cut the cleanup short and leave a postmaster behind.
  trap '' INT TERM
  (cluster_destroy)
  rm -rf -- "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Whatever a killed earlier run left behind would hold the port or skew the numbers.
cluster_destroy
cluster_preflight
build_extension
cluster_start

bench_pgbench() {
  "$PGBIN/pgbench" -h "$APIKEY_SOCKET_DIR" -p "$APIKEY_PGPORT" -U postgres "$@"
}

# run_pgbench OUT_FILE PGBENCH_ARGS...: keeps the whole output (100 scripts make the summary
# hundreds of lines long) and shows only progress, totals and errors.
run_pgbench() {
  local out="$1"
  shift
  bench_pgbench "$@" 2>&1 | tee "$out" | awk '/^progress: |^tps = |error|abort/ { print "    " $0; fflush() }'
}

# Mean tps of the progress lines that cover time after the warm-up; a line stamped 15.0 s
# covers 10-15 s, so only stamps strictly after the warm-up count.
steady_tps() {
  awk -v after="$warmup" '/^progress: / { t = $2 + 0; if (t > after) { s += $4; n++ } }
    END { if (n) printf "%.1f", s / n; else print "n/a" }' "$1"
}
overall_tps() {
  awk '/^tps = / { printf "%.1f", $3; found = 1; exit } END { if (!found) print "n/a" }' "$1"
}

log "(a) ceiling: pgbench -i -s 10, then pgbench -S for $seconds s"
APIKEY_PGDATABASE=postgres psql_as postgres -q -c 'CREATE DATABASE pgbench'
bench_pgbench -i -s 10 -q pgbench >"$work/init.out" 2>&1 || { cat "$work/init.out" >&2; die "pgbench -i failed"; }
run_pgbench "$work/select.out" -S -M prepared -c 4 -j 2 -T "$seconds" --progress=5 pgbench

log "(b) issuing $nkeys keys with scope orders:read"
partner_id="$(psql_as postgres -tA -c "SELECT apikey_partner_create('bench', NULL)")"
psql_as postgres -tA -v pid="$partner_id" -v n="$nkeys" -v rate="$rate" >"$work/tokens" <<'SQL'
SELECT i.token
FROM generate_series(1, :n) AS g,
     LATERAL apikey_issue(:'pid'::uuid, ARRAY['orders:read'], 'bench key ' || g,
                          rate_per_minute => :rate) AS i;
SQL
mapfile -t tokens <"$work/tokens"
[ "${#tokens[@]}" -eq "$nkeys" ] || die "expected $nkeys tokens, got ${#tokens[@]}"

script_args=()
for i in "${!tokens[@]}"; do
  token="${tokens[$i]}"
  # The token goes into SQL text verbatim; the token alphabet makes that safe, check it.
  [[ "$token" =~ ^[A-Za-z0-9_]+$ ]] || die "token $((i + 1)) has characters outside [A-Za-z0-9_]"
  f="$work/verify_$((i + 1)).sql"
  # Not '{orders:read}': pgbench reads ':read' as a pgbench variable and, with -M prepared,
  # turns it into a bind parameter the statement does not have, aborting every client.
  # PostgreSQL folds the concatenation once at plan time, so the measured work is the same.
  printf "SELECT * FROM apikey_verify('%s', ARRAY['orders:' || 'read']);\n" "$token" >"$f"
  script_args+=(-f "$f@1")
done

# A benchmark of rejections would be meaningless: every key must verify before and after.
check_keys() {
  local list bad
  printf -v list "'%s'," "${tokens[@]}"
  bad="$(psql_as postgres -tA -c "SELECT v.reason, count(*)
    FROM unnest(ARRAY[${list%,}]) AS t(token), apikey_verify(t.token, ARRAY['orders:read']) AS v
    WHERE v.reason IS DISTINCT FROM 'ok' GROUP BY v.reason")"
  if [ -n "$bad" ]; then
    die "$1: benchmark keys do not verify as ok (reason|count): $(echo "$bad" | tr '\n' ' ')"
  fi
}
check_keys "before the runs"

log "(b) warm: apikey_verify over $nkeys keys for $seconds s (first $warmup s not counted)"
run_pgbench "$work/warm.out" -n -M prepared -c 4 -j 2 -T "$seconds" --progress=5 "${script_args[@]}" apikey

log "(c) restarted: a clean restart of the server, then $seconds s, every second counted"
cluster_stop
cluster_start
run_pgbench "$work/restarted.out" -n -M prepared -c 4 -j 2 -T "$seconds" --progress=5 "${script_args[@]}" apikey

log "(d) cold: a new connection per transaction, $cold_seconds s each"
run_pgbench "$work/cold_select.out" -S -M prepared -C -c 4 -j 2 -T "$cold_seconds" pgbench
run_pgbench "$work/cold.out" -n -M prepared -C -c 4 -j 2 -T "$cold_seconds" "${script_args[@]}" apikey

check_keys "after the runs"

# Forged tokens: a valid checksum (computed here, as an attacker would) around a random key
# id, and around the first benchmark key's id with a random secret.
forge() {
  python3 - "$@" <<'PY'
import random, string, sys, zlib
ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase
def checksum(body):
    value, digits = zlib.crc32(body.encode()), []
    for _ in range(6):
        digits.append(ALPHABET[value % 62]); value //= 62
    return "".join(reversed(digits))
def rand(n):
    return "".join(random.choice(ALPHABET) for _ in range(n))
kind, known_key_id, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
for _ in range(count):
    key_id = "ak_live_" + rand(16) if kind == "unknown" else known_key_id
    body = key_id + "_" + rand(43)
    print(body + checksum(body))
PY
}
first_key_id="${tokens[0]%_*}"
flood_args=()
unknown_args=()
mismatch_args=()
i=0
while read -r token; do
  i=$((i + 1))
  f="$work/forged_$i.sql"
  printf "SELECT * FROM apikey_verify('%s', client_ip => '198.51.100.%d');\n" "$token" $((i % 250)) >"$f"
  flood_args+=(-f "$f@1")
  if [ "$i" -le 20 ]; then unknown_args+=(-f "$f@1"); else mismatch_args+=(-f "$f@1"); fi
done < <(forge unknown - 20; forge wrong "$first_key_id" 20)

single="$work/single.sql"
printf "SELECT * FROM apikey_verify('%s', ARRAY['orders:' || 'read']);\n" "${tokens[0]}" >"$single"
log "(e) flood: one warm key, 2 clients, $seconds s alone, then $seconds s beside 8 connections forging $flood_rate/s"
run_pgbench "$work/alone.out" -n -M prepared -c 2 -j 1 -T "$seconds" --progress=5 -f "$single" apikey
bench_pgbench -n -M prepared -c 8 -j 1 -T "$((seconds + 2))" --rate="$flood_rate" "${flood_args[@]}" apikey \
  >"$work/flood.out" 2>&1 &
flood_pid=$!
sleep 1
run_pgbench "$work/flooded.out" -n -M prepared -c 2 -j 1 -T "$seconds" --progress=5 -f "$single" apikey
wait "$flood_pid" || die "the flood pgbench failed: $(tail -n 5 "$work/flood.out")"

log "(f) rejections alone, $cold_seconds s each"
run_pgbench "$work/unknown.out" -n -M prepared -c 2 -j 2 -T "$cold_seconds" "${unknown_args[@]}" apikey
run_pgbench "$work/mismatch.out" -n -M prepared -c 2 -j 2 -T "$cold_seconds" "${mismatch_args[@]}" apikey

audit_rows="$(psql_as postgres -tA -c "SELECT count(*) FROM apikey.audit_log WHERE action = 'verify_failed'")"
status="$(psql_as postgres -tA -F ' ' -c "SELECT argon2_verified, argon2_failed, proof_hits FROM apikey_status()")"

ceiling_steady="$(steady_tps "$work/select.out")"
ceiling_all="$(overall_tps "$work/select.out")"
warm_steady="$(steady_tps "$work/warm.out")"
warm_all="$(overall_tps "$work/warm.out")"
restarted_all="$(overall_tps "$work/restarted.out")"
cold_select="$(overall_tps "$work/cold_select.out")"
cold_all="$(overall_tps "$work/cold.out")"
alone="$(steady_tps "$work/alone.out")"
flooded="$(steady_tps "$work/flooded.out")"
flood_done="$(overall_tps "$work/flood.out")"
unknown_all="$(overall_tps "$work/unknown.out")"
mismatch_all="$(overall_tps "$work/mismatch.out")"
warm_pct="$(ratio "$warm_steady" "$ceiling_steady" 100 '%.0f')"
connections_pct="$(ratio "$warm_all" "$ceiling_all" 100 '%.0f')"
restarted_pct="$(ratio "$restarted_all" "$ceiling_all" 100 '%.0f')"
cold_pct="$(ratio "$cold_all" "$cold_select" 100 '%.0f')"
flood_pct="$(ratio "$flooded" "$alone" 100 '%.0f')"
argon2="$(psql_as postgres -tA -c "SELECT concat_ws(', ',
  'memory_kib=' || current_setting('apikey.argon2_memory_kib', true),
  'iterations=' || current_setting('apikey.argon2_iterations', true),
  'parallelism=' || current_setting('apikey.argon2_parallelism', true))")"

echo
echo "apikey benchmark: $(machine_summary), Argon2id ${argon2:-defaults}"
echo "-M prepared, $seconds s per run; steady = mean of progress lines after $warmup s"
echo
printf '%-60s %12s %12s\n' "run" "steady tps" "overall tps"
printf '%-60s %12s %12s\n' "(a) pgbench -S, 4 clients (ceiling)" "$ceiling_steady" "$ceiling_all"
printf '%-60s %12s %12s\n' "(b) apikey_verify, $nkeys keys, new connections, 4 clients" "$warm_steady" "$warm_all"
printf '%-60s %12s %12s\n' "(c) apikey_verify, $nkeys keys, restarted server, 4 clients" "-" "$restarted_all"
printf '%-60s %12s %12s\n' "(d) pgbench -C -S, 4 clients" "-" "$cold_select"
printf '%-60s %12s %12s\n' "(d) apikey_verify -C, $nkeys proven keys, 4 clients" "-" "$cold_all"
printf '%-60s %12s %12s\n' "(e) one key, 2 clients, alone" "$alone" "-"
printf '%-60s %12s %12s\n' "(e) one key, 2 clients, beside the flood" "$flooded" "-"
printf '%-60s %12s %12s\n' "(e) the flood itself (8 clients, at most $flood_rate/s)" "-" "$flood_done"
printf '%-60s %12s %12s\n' "(f) rejected: unknown key id, 2 clients" "-" "$unknown_all"
printf '%-60s %12s %12s\n' "(f) rejected: wrong secret for a proven key, 2 clients" "-" "$mismatch_all"
echo
echo "warm / ceiling:            $warm_pct%   (steady)"
echo "new connections / ceiling: $connections_pct%   (every second)"
echo "restarted / ceiling:       $restarted_pct%   (every second)"
echo "cold -C / pgbench -C -S:   $cold_pct%"
echo "flooded / alone:           $flood_pct%"
echo "verify_failed audit rows:  $audit_rows (after every forged verification of the run)"
echo "argon2 verified/failed, proof hits: ${status:-?}"
echo
echo "RESULT warm_vs_pgbench_S=${warm_pct}% new_connections_vs_pgbench_S=${connections_pct}% restarted_vs_pgbench_S=${restarted_pct}% cold_vs_pgbench_C_S=${cold_pct}% flood=${flood_pct}%"
