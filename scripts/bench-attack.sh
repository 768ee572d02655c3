#!/usr/bin/env bash
# What a wrong-secret flood against keys never proven since the start costs everyone else:
# wrk verifies a warm key through the shim
#   (a) alone,
#   (b) while an attacker sends GET /v1/verify well-formed tokens (valid checksum, random
#       secrets) naming real key ids that no right secret has proven yet, so that every
#       attempt could cost Argon2id,
#   (c) while the same attacker sends as many tokens naming key ids that do not exist
#       (an index probe each): what any flood of requests costs, Argon2id aside,
# in alternating rounds, and prints the warm key's requests/s, latency and failures in both, their
# ratio, and what the attacker got back. One private cluster and shim, removed on exit.
#
# Env: BENCH_SECONDS                duration of each measured run, default 10
#      BENCH_ROUNDS                 rounds of (alone, attacked), default 3
#      BENCH_ATTACKERS              attacking connections, default 64
#      BENCH_VICTIMS                key ids attacked at once, default 1
#      BENCH_ATTACK_DELAY_MS        pause of each attacking connection between its requests,
#                                   default 50 (64 connections: up to 1280 guesses/s, thirty
#                                   times what one key's Argon2id can refute); 0 floods, and
#                                   then measures the shim's fairness to a request flood of
#                                   any kind, not what Argon2id costs
#      APIKEY_BENCH_ATTACK_STATE_DIR  default /tmp/apikey-bench-attack (wiped first)
#      APIKEY_BENCH_ATTACK_PGPORT   default 54334
#      APIKEY_BENCH_ATTACK_PORT     port of the shim on 127.0.0.1, default 8092
#      APIKEY_SKIP_BUILD=1          use the installed extension as is (the shim is always built)
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

export APIKEY_STATE_DIR="${APIKEY_BENCH_ATTACK_STATE_DIR:-/tmp/apikey-bench-attack}"
export APIKEY_PGPORT="${APIKEY_BENCH_ATTACK_PGPORT:-54334}"
APIKEY_PORT_KNOB=APIKEY_BENCH_ATTACK_PGPORT
apikey_paths

seconds="${BENCH_SECONDS:-10}"
rounds="${BENCH_ROUNDS:-3}"
attackers="${BENCH_ATTACKERS:-64}"
victims="${BENCH_VICTIMS:-1}"
delay_ms="${BENCH_ATTACK_DELAY_MS:-50}"
shim_port="${APIKEY_BENCH_ATTACK_PORT:-8092}"
shim_url="http://127.0.0.1:$shim_port"
shim_role=apikey_bench_attack
# The shim's default pool: the attack is on the connections a default shim has.
pool_size=16
warm_args=(-t1 -c8 "-d${seconds}s" --latency)
[[ "$seconds" =~ ^[1-9][0-9]*$ ]] || die "BENCH_SECONDS must be a whole number of seconds (got '$seconds')"
[[ "$rounds" =~ ^[1-9][0-9]?$ ]] || die "BENCH_ROUNDS must be a whole number from 1 to 99 (got '$rounds')"
[[ "$attackers" =~ ^[1-9][0-9]{0,3}$ ]] || die "BENCH_ATTACKERS must be a whole number from 1 to 9999 (got '$attackers')"
[[ "$victims" =~ ^[1-9][0-9]{0,2}$ ]] || die "BENCH_VICTIMS must be a whole number from 1 to 999 (got '$victims')"
[[ "$delay_ms" =~ ^[0-9]{1,5}$ ]] || die "BENCH_ATTACK_DELAY_MS must be a whole number of milliseconds (got '$delay_ms')"
[[ "$shim_port" =~ ^[0-9]+$ ]] || die "APIKEY_BENCH_ATTACK_PORT must be a port number (got '$shim_port')"

work="$(mktemp -d "${TMPDIR:-/tmp}/apikey-bench-attack-work.XXXXXX")"
bench_shim_pid=
attacker_pid=
cleanup() {
  local rc=$?
  set +e
  trap '' INT TERM
  for pid in "$attacker_pid" "$bench_shim_pid"; do
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid"
      wait "$pid" 2>/dev/null
    fi
  done
  (cluster_destroy)
  rm -rf -- "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cluster_destroy
cluster_preflight
if _apikey_port_in_use "$shim_port"; then
  die "port $shim_port is already in use; set APIKEY_BENCH_ATTACK_PORT to a free port"
fi
build_extension
command -v wrk >/dev/null || die "wrk is missing: run scripts/install-deps.sh (or apt-get install wrk)"
command -v curl >/dev/null || die "curl is missing: run scripts/install-deps.sh (or apt-get install curl)"
log "cargo build --release -p apikey-shim"
(cd "$APIKEY_REPO_ROOT" && cargo build --release -p apikey-shim)
cluster_start

bench_shim_start "$shim_role" "$shim_port" "$pool_size" "$work/shim.log"

log "issuing the warm key and $victims attacked key(s)"
token="$(psql_as postgres -tA <<'SQL'
SELECT token FROM apikey_issue(apikey_partner_create('bench-warm'), ARRAY['orders:read'],
                               'warm key', rate_per_minute => 2000000000);
SQL
)"
[[ "$token" =~ ^[A-Za-z0-9_]+$ ]] || die "apikey_issue returned no token"
psql_as postgres -tA -v n="$victims" >"$work/victims" <<'SQL'
SELECT key_id FROM apikey_partner_create('bench-victim') AS p,
       generate_series(1, :n), apikey_issue(p, ARRAY['orders:read'], 'attacked key');
SQL
[ "$(wc -l <"$work/victims")" = "$victims" ] || die "could not issue the attacked keys"
# Forged tokens, as an attacker makes them offline: the key ids are public, the checksum
# (CRC-32, base62) is in the format; only the secret is a guess.
echo ak_live_0000000000000000 >"$work/strangers"
forge() {
  python3 - "$1" "$2" <<'PY'
import secrets, sys, zlib
alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
def checksum(body):
    value, digits = zlib.crc32(body.encode()), []
    for _ in range(6):
        digits.append(alphabet[value % 62]); value //= 62
    return "".join(reversed(digits))
ids = open(sys.argv[1]).read().split()
with open(sys.argv[2], "w") as out:
    out.write("tokens = {\n")
    for i in range(4000):
        body = ids[i % len(ids)] + "_" + "".join(secrets.choice(alphabet) for _ in range(43))
        out.write('  "%s",\n' % (body + checksum(body)))
    out.write("}\n")
PY
}
forge "$work/victims" "$work/attacked.lua"
forge "$work/strangers" "$work/flooded.lua"
# attacker NAME TOKENS: the attacker's wrk script sending the forged tokens in TOKENS.
attacker() {
  cat >"$work/$1-attacker.lua" <<LUA
dofile("$2")
local next_token = 0
counts = {}
request = function()
  next_token = next_token % #tokens + 1
  return wrk.format("GET", "/v1/verify", { ["X-API-Key"] = tokens[next_token] })
end
response = function(status) counts[status] = (counts[status] or 0) + 1 end
delay = function() return $delay_ms end
-- done() runs in the main script, the counts in each thread's: collected through setup().
local threads = {}
setup = function(thread) table.insert(threads, thread) end
done = function()
  local out = io.open("$work/attack-statuses", "a")
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("counts")) do out:write(status, " ", n, "\n") end
  end
  out:close()
end
LUA
}
attacker attacked "$work/attacked.lua"
attacker flooded "$work/flooded.lua"
status="$(curl -sS -o "$work/warm.json" -w '%{http_code}' -H "X-API-Key: $token" "$shim_url/v1/verify")"
[ "$status" = 200 ] || die "GET /v1/verify with the warm key answered $status: $(cat "$work/warm.json")"

# warm NAME: the measured run of the warm key. Its refusals and timeouts are what the attack
# did, so they are reported, not fatal.
warm() {
  wrk "${warm_args[@]}" -H "X-API-Key: $token" "$shim_url/v1/verify" >"$work/$1.out" 2>&1 \
    || { cat "$work/$1.out" >&2; die "wrk failed"; }
  sed 's/^/    /' "$work/$1.out" >&2
}
# failed FILE: the run's non-2xx answers plus socket errors.
failed() {
  awk '/Non-2xx or 3xx responses:/ { n += $NF }
       /Socket errors:/ { for (i = 3; i <= NF; i += 2) n += $(i + 1) }
       END { print n + 0 }' "$1"
}

# during NAME: the warm key's run while the attacker sends the tokens of NAME.
during() {
  : >"$work/attack-statuses"
  wrk -t1 -c"$attackers" -d"$((seconds + 3))s" --timeout 30s -s "$work/$1-attacker.lua" \
    "$shim_url/v1/verify" >"$work/$1-attacker-$round.out" 2>&1 &
  attacker_pid=$!
  sleep 2
  warm "$1-$round"
  wait "$attacker_pid" || true
  attacker_pid=
  cp "$work/attack-statuses" "$work/$1-attacker-$round.statuses"
}
for round in $(seq 1 "$rounds"); do
  log "round $round of $rounds: the warm key alone"
  warm "alone-$round"
  log "round $round of $rounds: the warm key during guesses at unproven keys ($attackers connections)"
  during attacked
  log "round $round of $rounds: the warm key during as many unknown key ids ($attackers connections)"
  during flooded
done
psql_as postgres -c "SELECT argon2_verified, argon2_failed, argon2_waits FROM apikey_status()" >&2
echo
echo "apikey-shim under a wrong-secret flood: $(machine_summary)"
echo "warm key: wrk ${warm_args[*]}; attacker: wrk -t1 -c$attackers, ${delay_ms} ms between the"
echo "requests of each connection, forged tokens for $victims key id(s) never proven; shim pool"
echo "$pool_size, all on one machine"
echo
printf '%-28s %9s %8s %8s %8s %7s  %s\n' "round / run" "req/s" "p50 ms" "p90 ms" "p99 ms" "failed" "attacker: req/s, answers"
ratios=() p50s=() floods=()
for round in $(seq 1 "$rounds"); do
  for run in alone attacked flooded; do
    f="$work/$run-$round.out" answers=""
    if [ "$run" != alone ]; then
      answers="$(wrk_field "$work/$run-attacker-$round.out" rps)/s, $(sort -n "$work/$run-attacker-$round.statuses" | awk '{ printf "%s%s x%s", sep, $1, $2; sep = ", " }')"
    fi
    printf '%-28s %9s %8s %8s %8s %7s  %s\n' "$round warm key $run" "$(wrk_field "$f" rps)" \
      "$(wrk_field "$f" 50)" "$(wrk_field "$f" 90)" "$(wrk_field "$f" 99)" "$(failed "$f")" "$answers"
  done
  ratios+=("$(ratio "$(wrk_field "$work/attacked-$round.out" rps)" "$(wrk_field "$work/alone-$round.out" rps)" 100 '%.1f')")
  floods+=("$(ratio "$(wrk_field "$work/attacked-$round.out" rps)" "$(wrk_field "$work/flooded-$round.out" rps)" 100 '%.1f')")
  p50s+=("$(wrk_field "$work/attacked-$round.out" 50)")
done
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { printf "%s", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
echo
echo "warm throughput during the attack / alone: median $(median "${ratios[@]}")% (goal: at least 80%)"
echo "warm p50 during the attack: median $(median "${p50s[@]}") ms (goal: under 5 ms)"
echo "warm throughput during the attack / during as many unknown key ids: median $(median "${floods[@]}")%"
echo "(what the guesses cost beyond any flood of as many requests: Argon2id and its bookkeeping)"
echo
echo "RESULT attacked_vs_alone=$(median "${ratios[@]}")% attacked_p50_ms=$(median "${p50s[@]}") attacked_vs_flooded=$(median "${floods[@]}")%"
