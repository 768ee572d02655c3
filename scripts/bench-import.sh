#!/usr/bin/env bash
# What tokens that find no key cost apikey_verify once keys were imported, in one private
# cluster (destroyed on exit) with apikey in shared_preload_libraries:
#   (a) native tokens with a valid checksum naming key ids that do not exist (an index probe
#       each): today's cost of an unknown key;
#   (b) foreign-looking garbage (`mpk_<hex>.<hex>`, answered `malformed`) in a database of
#       PAR-pack imports (the `id:` lookup form: one index probe);
#   (c) the same garbage where sha256 keys were imported, one of them used since (the `hmac:`
#       form: one probe, plus a SHA-256 and an HMAC of the token);
#   (d) the same garbage where keys of every kind were imported: sha256, PAR-pack and bcrypt
#       (all three forms, `hmac:`, `id:` and `prefix:`: three candidates, probed in one index
#       scan), the most a database can make garbage cost,
#   (e) the same garbage in a database without imported keys (no probe),
# each run for BENCH_SECONDS in turn, BENCH_ROUNDS times over, then the ratios of the summed
# throughputs.
#
# Env: BENCH_SECONDS                 duration of each run, default 10
#      BENCH_ROUNDS                  rounds of the five runs, default 3
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

for db in plain keypal every; do
  APIKEY_PGDATABASE=postgres psql_as postgres -q -c "CREATE DATABASE $db"
  APIKEY_PGDATABASE="$db" psql_as postgres -q -c 'CREATE EXTENSION apikey'
done

# Unknown native key ids: keys issued, then deleted, so their tokens are well formed.
partner="$(psql_as postgres -tA -c "SELECT apikey_partner_create('bench', NULL)")"
psql_as postgres -tA -v pid="$partner" -v n="$ntokens" >"$work/unknown.tokens" <<'SQL'
SELECT i.token FROM generate_series(1, :n) AS g, LATERAL apikey_issue(:'pid'::uuid, '{}') AS i;
SQL
psql_as postgres -q -c "DELETE FROM apikey.keys WHERE partner_id = '$partner'"

# PAR-pack keys (the hash need not match anything: no token of theirs is presented).
psql_as postgres -q -v pid="$partner" <<'SQL' >/dev/null
SELECT apikey_import(:'pid',
    '$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$6xJMq0pbH4Lg0dVYq+8TK3XGBSwx2cQmrWzEyLm5DB8',
    'argon2id-hmac', '{}', lookup => 'mpk_' || g)
FROM generate_series(1, 100) AS g;
SQL
# sha256 keys, one of them used once (its hash replaced with apikey's).
used="kp_$(openssl rand -hex 24)"
APIKEY_PGDATABASE=keypal psql_as postgres -q -v used="$used" <<'SQL' >/dev/null
WITH partner AS MATERIALIZED (SELECT apikey_partner_create('bench', NULL) AS id)
SELECT apikey_import(partner.id, encode(sha256(convert_to(t, 'UTF8')), 'hex'), 'sha256', '{}')
FROM partner,
     (SELECT :'used' UNION ALL SELECT 'kp_' || g FROM generate_series(1, 100) AS g) AS s(t);
SELECT reason FROM apikey_verify(:'used');
SQL
# Keys of every kind (none of whose tokens is presented).
APIKEY_PGDATABASE=every psql_as postgres -q <<'SQL' >/dev/null
WITH partner AS MATERIALIZED (SELECT apikey_partner_create('bench', NULL) AS id)
SELECT apikey_import(partner.id, k.hash, k.format, '{}', lookup => k.lookup)
FROM partner, generate_series(1, 100) AS g,
     LATERAL (VALUES
       (encode(sha256(convert_to('kp_' || g, 'UTF8')), 'hex'), 'sha256', NULL),
       ('$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$6xJMq0pbH4Lg0dVYq+8TK3XGBSwx2cQmrWzEyLm5DB8',
        'argon2id-hmac', 'mpk_' || g),
       ('$2b$04$/lA8NuKCXS2Vqxm.YhbL6.16dwlpHAwcUFqyXDcFU2NXK2RnWhDsy', 'bcrypt',
        'mbk_live_' || lpad(g::text, 7, '0'))) AS k(hash, format, lookup);
SQL
forms="$(APIKEY_PGDATABASE=every psql_as postgres -tA -c "SELECT string_agg(form, ',' ORDER BY form) FROM apikey.import_forms")"
[ "$forms" = "hmac,id,prefix" ] || die "the every-kind database's lookup forms are '$forms'"
forms="$(APIKEY_PGDATABASE=keypal psql_as postgres -tA -c "SELECT string_agg(form, ',' ORDER BY form) FROM apikey.import_forms")"
[ "$forms" = "hmac" ] || die "the keypal database's lookup forms are '$forms', not hmac"
forms="$(psql_as postgres -tA -c "SELECT string_agg(form, ',' ORDER BY form) FROM apikey.import_forms")"
[ "$forms" = "id" ] || die "the PAR database's lookup forms are '$forms', not id"
for i in $(seq 1 "$ntokens"); do echo "mpk_$(openssl rand -hex 6).$(openssl rand -hex 32)"; done >"$work/garbage.tokens"

# scripts_for KIND: one pgbench script per token of KIND, printing the -f arguments.
scripts_for() {
  local kind="$1" i=0 token
  while read -r token; do
    [[ "$token" =~ ^[A-Za-z0-9_.]+$ ]] || die "a token has characters outside [A-Za-z0-9_.]"
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
for db in apikey keypal every plain; do expect_reason "$db" "$work/garbage.tokens" malformed; done

tps() {
  awk '/^tps = / { printf "%.1f", $3; found = 1; exit } END { if (!found) print "0" }' "$1"
}
runs=(unknown par keypal every plain)
declare -A total=([unknown]=0 [par]=0 [keypal]=0 [every]=0 [plain]=0)
for round in $(seq 1 "$rounds"); do
  log "round $round of $rounds: unknown key ids, then garbage with PAR-pack keys, sha256 keys, every kind, none ($seconds s each)"
  # Every other round the other way round, so that neither end of a round favours a side.
  if [ $((round % 2)) = 1 ]; then order=("${runs[@]}"); else order=(plain every keypal par unknown); fi
  for run in "${order[@]}"; do
    case "$run" in
      unknown) args=("${unknown_args[@]}" apikey) ;;
      par) args=("${garbage_args[@]}" apikey) ;;
      keypal) args=("${garbage_args[@]}" keypal) ;;
      every) args=("${garbage_args[@]}" every) ;;
      plain) args=("${garbage_args[@]}" plain) ;;
    esac
    "$PGBIN/pgbench" -h "$APIKEY_SOCKET_DIR" -p "$APIKEY_PGPORT" -U postgres \
      -n -M prepared -c 4 -j 2 -T "$seconds" "${args[@]}" >"$work/$run.out" 2>&1
  done
  for run in "${runs[@]}"; do
    t="$(tps "$work/$run.out")"
    [ "$t" != 0 ] || die "the $run run failed: $(tail -n 5 "$work/$run.out")"
    total[$run]="$(awk -v a="${total[$run]}" -v b="$t" 'BEGIN { printf "%.1f", a + b }')"
    echo "    $run: $t tps"
  done
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f%%", 100 * a / b }'; }
cat <<EOF

== tokens that find no key, $rounds rounds of $seconds s, 4 clients ==
unknown native key ids                ${total[unknown]} tps (summed over the rounds)
garbage, one lookup form (PAR pack)   ${total[par]} tps   $(ratio "${total[par]}" "${total[unknown]}") of unknown key ids
garbage, sha256 keys (hmac lookups)   ${total[keypal]} tps   $(ratio "${total[keypal]}" "${total[unknown]}") of unknown key ids
garbage, every kind (three forms)     ${total[every]} tps   $(ratio "${total[every]}" "${total[unknown]}") of unknown key ids
garbage, no imported keys             ${total[plain]} tps   $(ratio "${total[plain]}" "${total[unknown]}") of unknown key ids
EOF
