#!/usr/bin/env bash
# Measures what a credit balance costs a warm apikey_verify, in one private cluster
# (destroyed on exit) with apikey in shared_preload_libraries: 100 keys without a balance,
# 100 with one (large enough never to run out), 100 with one whose partner also has a
# partner-wide rate and balance (every limit a verification can meet), and pgbench -S as the
# ceiling, each run for
# BENCH_SECONDS in turn, BENCH_ROUNDS times over (so a noisy moment of a shared machine hits
# both sides alike), then the ratios of the summed throughputs.
#
# Env: BENCH_SECONDS            duration of each run, default 10
#      BENCH_ROUNDS             rounds of the three runs, default 3
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

seconds="${BENCH_SECONDS:-10}"
rounds="${BENCH_ROUNDS:-3}"
nkeys=100
[[ "$seconds" =~ ^[0-9]+$ ]] && [ "$seconds" -gt 0 ] || die "BENCH_SECONDS must be a positive whole number (got '$seconds')"
[[ "$rounds" =~ ^[0-9]+$ ]] && [ "$rounds" -gt 0 ] || die "BENCH_ROUNDS must be a positive whole number (got '$rounds')"

work="$(mktemp -d "${TMPDIR:-/tmp}/apikey-bench-credits.XXXXXX")"
cleanup() {
  local rc=$?
  set +e
  trap '' INT TERM
  (cluster_destroy)
  rm -rf -- "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cluster_destroy
cluster_preflight
build_extension
cluster_start

bench_pgbench() {
  "$PGBIN/pgbench" -h "$APIKEY_SOCKET_DIR" -p "$APIKEY_PGPORT" -U postgres "$@"
}

APIKEY_PGDATABASE=postgres psql_as postgres -q -c 'CREATE DATABASE pgbench'
bench_pgbench -i -s 10 -q pgbench >"$work/init.out" 2>&1 || { cat "$work/init.out" >&2; die "pgbench -i failed"; }

partner_id="$(psql_as postgres -tA -c "SELECT apikey_partner_create('bench', NULL)")"
limited_partner="$(psql_as postgres -tA -c "SELECT apikey_partner_create('bench limited', NULL)")"
psql_as postgres -q -c "SELECT apikey_partner_set_limits('$limited_partner', 1000000000, 1000000000000000)" >/dev/null
# scripts_for KIND: issues $nkeys keys (KIND "credits": each with a balance of 10^15;
# "partner": the same, of the partner with limits) and writes one pgbench script per key,
# printing the -f arguments.
scripts_for() {
  local kind="$1" i=0 token pid="$partner_id"
  [ "$kind" = partner ] && pid="$limited_partner"
  psql_as postgres -tA -v pid="$pid" -v n="$nkeys" >"$work/$kind.tokens" <<'SQL'
SELECT i.token
FROM generate_series(1, :n) AS g,
     LATERAL apikey_issue(:'pid'::uuid, ARRAY['orders:read'], 'bench key ' || g,
                          rate_per_minute => 1000000000) AS i;
SQL
  while read -r token; do
    [[ "$token" =~ ^[A-Za-z0-9_]+$ ]] || die "a token has characters outside [A-Za-z0-9_]"
    i=$((i + 1))
    if [ "$kind" != plain ]; then
      psql_as postgres -q -c "SELECT apikey_set_credits('${token%_*}', 1000000000000000)" >/dev/null
    fi
    printf "SELECT * FROM apikey_verify('%s', ARRAY['orders:' || 'read']);\n" "$token" >"$work/$kind-$i.sql"
    printf -- "-f %s@1 " "$work/$kind-$i.sql"
  done <"$work/$kind.tokens"
}
read -r -a plain_args <<<"$(scripts_for plain)"
read -r -a credit_args <<<"$(scripts_for credits)"
read -r -a partner_args <<<"$(scripts_for partner)"

# One verification of each first, so that every key is proven and no run pays Argon2id.
for kind in plain credits partner; do
  bad="$(psql_as postgres -tA -c "SELECT count(*) FROM unnest(string_to_array(
    '$(tr '\n' ' ' <"$work/$kind.tokens")', ' ')) AS t(token), apikey_verify(t.token) AS v
    WHERE t.token <> '' AND v.reason <> 'ok'")"
  [ "$bad" = 0 ] || die "$bad $kind keys do not verify as ok"
done

tps() {
  awk '/^tps = / { printf "%.1f", $3; found = 1; exit } END { if (!found) print "0" }' "$1"
}
declare -A total=([select]=0 [plain]=0 [credits]=0 [partner]=0)
for round in $(seq 1 "$rounds"); do
  log "round $round of $rounds: pgbench -S, keys without a balance, with one, with partner limits too ($seconds s each)"
  bench_pgbench -S -M prepared -c 4 -j 2 -T "$seconds" pgbench >"$work/select.out" 2>&1
  # Every other round the other way round: whatever runs later in a round (a warmer cache,
  # a quieter neighbour) favours neither side.
  if [ $((round % 2)) = 1 ]; then order=(plain credits partner); else order=(partner credits plain); fi
  for run in "${order[@]}"; do
    case "$run" in
      plain) args=("${plain_args[@]}") ;;
      credits) args=("${credit_args[@]}") ;;
      partner) args=("${partner_args[@]}") ;;
    esac
    bench_pgbench -n -M prepared -c 4 -j 2 -T "$seconds" "${args[@]}" apikey >"$work/$run.out" 2>&1
  done
  for run in select plain credits partner; do
    t="$(tps "$work/$run.out")"
    [ "$t" != 0 ] || die "the $run run failed: $(tail -n 5 "$work/$run.out")"
    total[$run]="$(awk -v a="${total[$run]}" -v b="$t" 'BEGIN { printf "%.1f", a + b }')"
    echo "    $run: $t tps"
  done
done

spent="$(psql_as postgres -tA -c "SELECT 1000000000000000 * $nkeys - sum(v.credits_remaining)
  FROM unnest(string_to_array('$(tr '\n' ' ' <"$work/credits.tokens")', ' ')) AS t(token),
       apikey_verify(t.token, cost => 0) AS v WHERE t.token <> ''")"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f%%", 100 * a / b }'; }
cat <<EOF

== warm verification with a credit balance, $rounds rounds of $seconds s, 4 clients ==
pgbench -S                     ${total[select]} tps (summed over the rounds)
keys without a balance         ${total[plain]} tps   $(ratio "${total[plain]}" "${total[select]}") of pgbench -S
keys with a balance            ${total[credits]} tps   $(ratio "${total[credits]}" "${total[select]}") of pgbench -S
... and partner-wide limits    ${total[partner]} tps   $(ratio "${total[partner]}" "${total[select]}") of pgbench -S
with / without a balance       $(ratio "${total[credits]}" "${total[plain]}")   (goal: at least 95%)
with partner limits / without  $(ratio "${total[partner]}" "${total[plain]}")
credits spent, as the balances say: $spent
EOF
