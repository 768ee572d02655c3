#!/usr/bin/env bash
# What tokens that find no key cost apikey_verify once keys were imported, in one private
# cluster (destroyed on exit) with apikey in shared_preload_libraries:
#   (a) native tokens with a valid checksum naming key ids that do not exist (an index probe
#       each): today's cost of an unknown key;
#   (b) foreign-looking garbage (`kp_<random>`) in a database whose imported keys use three
#       lookup forms (sha256, a used sha256 key's hmac, a 16-character bcrypt prefix): one
#       index probe per form;
#   (c) the same garbage in a database without imported keys (answered `malformed` at once),
# each run for BENCH_SECONDS in turn, BENCH_ROUNDS times over, then the ratios of the summed
# throughputs.
#
# Env: BENCH_SECONDS                 duration of each run, default 10
#      BENCH_ROUNDS                  rounds of the three runs, default 3
#      APIKEY_BENCH_IMPORT_STATE_DIR default /tmp/apikey-bench-import (wiped first)
#      APIKEY_BENCH_IMPORT_PGPORT    default 54335
#      APIKEY_SKIP_BUILD=1           use the installed extension as is
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

export APIKEY_STATE_DIR="${APIKEY_BENCH_IMPORT_STATE_DIR:-/tmp/apikey-bench-import}"
export APIKEY_PGPORT="${APIKEY_BENCH_IMPORT_PGPORT:-54335}"
APIKEY_PORT_KNOB=APIKEY_BENCH_IMPORT_PGPORT
apikey_paths

seconds="${BENCH_SECONDS:-10}"
rounds="${BENCH_ROUNDS:-3}"
ntokens=100
[[ "$seconds" =~ ^[0-9]+$ ]] && [ "$seconds" -gt 0 ] || die "BENCH_SECONDS must be a positive whole number (got '$seconds')"
[[ "$rounds" =~ ^[0-9]+$ ]] && [ "$rounds" -gt 0 ] || die "BENCH_ROUNDS must be a positive whole number (got '$rounds')"

work="$(mktemp -d "${TMPDIR:-/tmp}/apikey-bench-import.XXXXXX")"
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

APIKEY_PGDATABASE=postgres psql_as postgres -q -c 'CREATE DATABASE plain'
APIKEY_PGDATABASE=plain psql_as postgres -q -c 'CREATE EXTENSION apikey'

# Unknown native key ids: keys issued, then deleted, so their tokens are well formed.
partner="$(psql_as postgres -tA -c "SELECT apikey_partner_create('bench', NULL)")"
psql_as postgres -tA -v pid="$partner" -v n="$ntokens" >"$work/unknown.tokens" <<'SQL'
SELECT i.token FROM generate_series(1, :n) AS g, LATERAL apikey_issue(:'pid'::uuid, '{}') AS i;
SQL
psql_as postgres -q -c "DELETE FROM apikey.keys WHERE partner_id = '$partner'"

# Imported keys of three lookup forms; one sha256 key used once, so its lookup is an hmac.
used="kp_$(openssl rand -hex 24)"
psql_as postgres -q -v pid="$partner" -v used="$used" -v other="kp_$(openssl rand -hex 24)" <<'SQL' >/dev/null
SELECT apikey_import(:'pid', encode(sha256(convert_to(:'used', 'UTF8')), 'hex'), 'sha256', '{}');
SELECT apikey_import(:'pid', encode(sha256(convert_to(:'other', 'UTF8')), 'hex'), 'sha256', '{}');
SELECT apikey_import(:'pid', '$2b$04$mnEQ7RE6zPfUl92ifVhWW.wXJyUaRc5cQc5sUCOGEs31Moqcwgmii',
                     'bcrypt', '{}', lookup => 'mbk_live_Zq8rT2v');
SELECT reason FROM apikey_verify(:'used');
SQL
forms="$(psql_as postgres -tA -c "SELECT string_agg(form || prefix_length, ',' ORDER BY form) FROM apikey.import_forms")"
[ "$forms" = "hmac0,prefix16,sha2560" ] || die "imported lookup forms are '$forms', not hmac, prefix16 and sha256"
for i in $(seq 1 "$ntokens"); do echo "kp_$(openssl rand -hex 24)"; done >"$work/garbage.tokens"

# scripts_for KIND: one pgbench script per token of KIND, printing the -f arguments.
scripts_for() {
  local kind="$1" i=0 token
  while read -r token; do
    [[ "$token" =~ ^[A-Za-z0-9_]+$ ]] || die "a token has characters outside [A-Za-z0-9_]"
    i=$((i + 1))
    printf "SELECT * FROM apikey_verify('%s');\n" "$token" >"$work/$kind-$i.sql"
    printf -- "-f %s@1 " "$work/$kind-$i.sql"
  done <"$work/$kind.tokens"
}
read -r -a unknown_args <<<"$(scripts_for unknown)"
read -r -a garbage_args <<<"$(scripts_for garbage)"

expect_reason() {
  local db="$1" file="$2" reason="$3" bad
  bad="$(APIKEY_PGDATABASE="$db" psql_as postgres -tA -c "SELECT count(*) FROM unnest(string_to_array(
    '$(tr '\n' ' ' <"$file")', ' ')) AS t(token), apikey_verify(t.token) AS v
    WHERE t.token <> '' AND v.reason <> '$reason'")"
  [ "$bad" = 0 ] || die "$bad tokens of $file in $db are not $reason"
}
expect_reason apikey "$work/unknown.tokens" unknown_key
expect_reason apikey "$work/garbage.tokens" unknown_key
expect_reason plain "$work/garbage.tokens" malformed

tps() {
  awk '/^tps = / { printf "%.1f", $3; found = 1; exit } END { if (!found) print "0" }' "$1"
}
declare -A total=([unknown]=0 [imported]=0 [plain]=0)
for round in $(seq 1 "$rounds"); do
  log "round $round of $rounds: unknown key ids, garbage with imported keys, without ($seconds s each)"
  if [ $((round % 2)) = 1 ]; then order=(unknown imported plain); else order=(plain imported unknown); fi
  for run in "${order[@]}"; do
    case "$run" in
      unknown) args=("${unknown_args[@]}" apikey) ;;
      imported) args=("${garbage_args[@]}" apikey) ;;
      plain) args=("${garbage_args[@]}" plain) ;;
    esac
    "$PGBIN/pgbench" -h "$APIKEY_SOCKET_DIR" -p "$APIKEY_PGPORT" -U postgres \
      -n -M prepared -c 4 -j 2 -T "$seconds" "${args[@]}" >"$work/$run.out" 2>&1
  done
  for run in unknown imported plain; do
    t="$(tps "$work/$run.out")"
    [ "$t" != 0 ] || die "the $run run failed: $(tail -n 5 "$work/$run.out")"
    total[$run]="$(awk -v a="${total[$run]}" -v b="$t" 'BEGIN { printf "%.1f", a + b }')"
    echo "    $run: $t tps"
  done
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f%%", 100 * a / b }'; }
cat <<EOF

== tokens that find no key, $rounds rounds of $seconds s, 4 clients ==
unknown native key ids                  ${total[unknown]} tps (summed over the rounds)
garbage, three lookup forms imported    ${total[imported]} tps   $(ratio "${total[imported]}" "${total[unknown]}") of unknown key ids
garbage, no imported keys               ${total[plain]} tps   $(ratio "${total[plain]}" "${total[unknown]}") of unknown key ids
EOF
