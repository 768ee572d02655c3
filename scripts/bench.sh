#!/usr/bin/env bash
# Measures apikey_verify throughput against the ceiling of the same machine and server:
#   (a) pgbench -S (primary-key SELECTs), what a trivial prepared query costs end to end;
#   (b) apikey_verify over 100 live keys, steady state, once every backend has proven each
#       key's hash (the per-backend cache; the first seconds pay Argon2id per key);
#   (c) apikey_verify with a new connection per transaction (-C), so every call is cold.
# All three run in one private cluster, destroyed on exit, so they share one configuration.
#
# Env: BENCH_SECONDS            duration of runs (a) and (b), default 20 (must exceed 10)
#      BENCH_RATE_PER_MINUTE    rate_per_minute of the benchmark keys, default 1000000, so
#                               that a rate limit does not turn the run into rejections
#      APIKEY_BENCH_STATE_DIR   default /tmp/apikey-bench (wiped first)
#      APIKEY_BENCH_PGPORT      default 54332
#      APIKEY_SKIP_BUILD=1      use the installed extension as is
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

export APIKEY_STATE_DIR="${APIKEY_BENCH_STATE_DIR:-/tmp/apikey-bench}"
export APIKEY_PGPORT="${APIKEY_BENCH_PGPORT:-54332}"
APIKEY_PORT_KNOB=APIKEY_BENCH_PGPORT
apikey_paths

seconds="${BENCH_SECONDS:-20}"
rate="${BENCH_RATE_PER_MINUTE:-1000000}"
nkeys=100
warmup=10
cold_seconds=10
[[ "$seconds" =~ ^[0-9]+$ ]] || die "BENCH_SECONDS must be a whole number of seconds (got '$seconds')"
[[ "$rate" =~ ^[0-9]+$ ]] || die "BENCH_RATE_PER_MINUTE must be a whole number (got '$rate')"
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

log "(c) cold: apikey_verify with a new connection per call (-C) for $cold_seconds s"
run_pgbench "$work/cold.out" -n -M prepared -C -c 2 -j 2 -T "$cold_seconds" "${script_args[@]}" apikey

check_keys "after the runs"

# (d) Timing must not tell which key ids exist: an unknown key id pays one Argon2id
# verification against a decoy hash, as a wrong secret does against the real one.
log "(d) rejections: unknown key id vs wrong secret, $cold_seconds s each"
psql_as postgres -tA -F ' ' -v pid="$partner_id" >"$work/rejects" <<'SQL'
SELECT g, i.key_id, i.token
FROM generate_series(1, 20) AS g, LATERAL apikey_issue(:'pid'::uuid, ARRAY['orders:read']) AS i;
SQL
unknown_args=()
mismatch_args=()
while read -r n key_id token; do
  f="$work/reject_$n.sql"
  printf "SELECT * FROM apikey_verify('%s');\n" "$token" >"$f"
  if [ "$n" -le 10 ]; then
    psql_as postgres -q -c "DELETE FROM apikey.keys WHERE key_id = '$key_id'"
    unknown_args+=(-f "$f@1")
  else
    # Give the key another key's hash: its own token no longer matches.
    psql_as postgres -q -c "UPDATE apikey.keys SET secret_hash = (SELECT secret_hash FROM apikey.keys
      WHERE key_id <> '$key_id' AND partner_id = '$partner_id' LIMIT 1) WHERE key_id = '$key_id'"
    mismatch_args+=(-f "$f@1")
  fi
done <"$work/rejects"
run_pgbench "$work/unknown.out" -n -M prepared -c 2 -j 2 -T "$cold_seconds" "${unknown_args[@]}" apikey
run_pgbench "$work/mismatch.out" -n -M prepared -c 2 -j 2 -T "$cold_seconds" "${mismatch_args[@]}" apikey

ceiling_steady="$(steady_tps "$work/select.out")"
ceiling_all="$(overall_tps "$work/select.out")"
warm_steady="$(steady_tps "$work/warm.out")"
warm_all="$(overall_tps "$work/warm.out")"
cold_all="$(overall_tps "$work/cold.out")"
unknown_all="$(overall_tps "$work/unknown.out")"
mismatch_all="$(overall_tps "$work/mismatch.out")"
unknown_vs_mismatch="$(ratio "$unknown_all" "$mismatch_all" 1 '%.2f')"
cold_conn_ms="$(awk '/^average connection time = / { print $5; exit }' "$work/cold.out")"
cold_lat_ms="$(awk '/^latency average = / { print $4; exit }' "$work/cold.out")"
warm_pct="$(ratio "$warm_steady" "$ceiling_steady" 100 '%.0f')"
warm_vs_cold="$(ratio "$warm_steady" "$cold_all" 1 '%.0f')"
argon2="$(psql_as postgres -tA -c "SELECT concat_ws(', ',
  'memory_kib=' || current_setting('apikey.argon2_memory_kib', true),
  'iterations=' || current_setting('apikey.argon2_iterations', true),
  'parallelism=' || current_setting('apikey.argon2_parallelism', true))")"

echo
echo "apikey benchmark: $(machine_summary), Argon2id ${argon2:-defaults}"
echo "4 clients / 2 threads, -M prepared, $seconds s per run; steady = mean of progress lines after $warmup s"
echo
printf '%-52s %14s %14s\n' "run" "steady tps" "overall tps"
printf '%-52s %14s %14s\n' "(a) pgbench -S, ceiling" "$ceiling_steady" "$ceiling_all"
printf '%-52s %14s %14s\n' "(b) apikey_verify, $nkeys keys, warm" "$warm_steady" "$warm_all"
printf '%-52s %14s %14s\n' "(c) apikey_verify, new connection per call (cold)" "-" "$cold_all"
printf '%-52s %14s %14s\n' "(d) rejected: unknown key id" "-" "$unknown_all"
printf '%-52s %14s %14s\n' "(d) rejected: wrong secret" "-" "$mismatch_all"
echo
echo "cold verifications/s:   $cold_all (2 clients; per call ${cold_lat_ms:-?} ms, of which connecting ${cold_conn_ms:-?} ms)"
echo "warm / ceiling:         $warm_pct%"
echo "warm / cold:            ${warm_vs_cold}x"
echo "unknown / wrong secret: ${unknown_vs_mismatch} (1.00 = timing reveals nothing about which key ids exist)"
echo "note: (c) is only cold while the proof cache is per backend; a shared cache would make it warm."
echo
echo "RESULT warm_vs_pgbench_S=${warm_pct}%"
