#!/usr/bin/env bash
# Measures webhook delivery: the time from an event's commit to its arrival at a receiver,
# and what a failed attempt costs. A private cluster and one shim (delivering to a receiver
# on 127.0.0.1) are started and removed on exit. For each poll interval in BENCH_POLLS, the
# shim is restarted with it, BENCH_EVENTS keys are issued one every 50 ms (each commits one
# key.issued event), and the receiver answers the first attempt of every fifth event with
# 500, so that the report also shows retries as they happen (the first retry is due 5 s after
# the failure). Printed per poll interval: latency from the event's created_at (written just
# before its commit) to its first arrival, p50 / p95 / max, and the retried events with the
# delay between their two arrivals.
#
# Then fairness, at the default poll interval: the same measurement for one partner alone,
# and again while another partner's BENCH_HANGING endpoints (a receiver that accepts and
# never answers) get an event each every 50 ms per endpoint, which on 0.4.0 took every
# delivery slot; printed with the ratio of the two p50s and p95s.
#
# Env: BENCH_EVENTS                 events per poll interval, default 100
#      BENCH_POLLS                  poll intervals in ms, default "1000 250 100" (250: the default)
#      BENCH_HANGING                hanging endpoints of the other partner, default 16 (0: no
#                                   fairness run)
#      APIKEY_BENCH_WEBHOOKS_STATE_DIR  default /tmp/apikey-bench-webhooks (wiped first)
#      APIKEY_BENCH_WEBHOOKS_PGPORT     default 54334
#      APIKEY_BENCH_WEBHOOKS_PORT       the shim's port on 127.0.0.1, default 8092
#      APIKEY_SKIP_BUILD=1          use the installed extension as is (the shim is always built)
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

export APIKEY_STATE_DIR="${APIKEY_BENCH_WEBHOOKS_STATE_DIR:-/tmp/apikey-bench-webhooks}"
export APIKEY_PGPORT="${APIKEY_BENCH_WEBHOOKS_PGPORT:-54334}"
APIKEY_PORT_KNOB=APIKEY_BENCH_WEBHOOKS_PGPORT
apikey_paths

events="${BENCH_EVENTS:-100}"
polls="${BENCH_POLLS:-1000 250 100}"
shim_port="${APIKEY_BENCH_WEBHOOKS_PORT:-8092}"
hanging="${BENCH_HANGING:-16}"
[[ "$hanging" =~ ^[0-9]{1,3}$ ]] || die "BENCH_HANGING must be a whole number from 0 to 999 (got '$hanging')"
[[ "$events" =~ ^[1-9][0-9]{0,3}$ ]] || die "BENCH_EVENTS must be a whole number from 1 to 9999 (got '$events')"
for poll in $polls; do
  [[ "$poll" =~ ^[1-9][0-9]{0,5}$ ]] || die "BENCH_POLLS must be whole numbers of ms (got '$poll')"
done

work="$(mktemp -d "${TMPDIR:-/tmp}/apikey-bench-webhooks-work.XXXXXX")"
chmod 0755 "$work"
receiver_pid=
hanging_pid=
flood_pid=
cleanup() {
  local rc=$?
  set +e
  trap '' INT TERM
  [ -n "$flood_pid" ] && kill "$flood_pid" 2>/dev/null
  [ -n "$receiver_pid" ] && kill "$receiver_pid" 2>/dev/null
  [ -n "$hanging_pid" ] && kill "$hanging_pid" 2>/dev/null
  shim_stop
  cluster_destroy >/dev/null 2>&1
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT INT TERM

cluster_preflight
build_extension
log "cargo build --release -p apikey-shim"
(cd "$APIKEY_REPO_ROOT" && cargo build --release -p apikey-shim)
cluster_start

# The receiver: records "webhook-id arrival-seconds status" per request; the first attempt of
# every fifth event (by arrival order of first attempts) is answered 500.
cat >"$work/receiver.py" <<'PY'
import sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = open(sys.argv[2], "a", buffering=1)
firsts = {}

class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        arrived = time.time()
        self.rfile.read(int(self.headers["content-length"]))
        msg_id = self.headers["webhook-id"]
        if msg_id not in firsts:
            firsts[msg_id] = len(firsts)
            status = 500 if firsts[msg_id] % 5 == 4 else 204
        else:
            status = 204
        log.write(f"{msg_id} {arrived:.6f} {status}\n")
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args):
        pass

class Server(ThreadingHTTPServer):
    # The default listen backlog (5) drops the connections of a burst of deliveries, and
    # their SYN retransmit a second later would be counted as delivery latency.
    request_queue_size = 128

Server(("127.0.0.1", int(sys.argv[1])), Receiver).serve_forever()
PY
receiver_port=$((shim_port + 1))
python3 "$work/receiver.py" "$receiver_port" "$work/arrivals" &
receiver_pid=$!

partner="$(psql_as postgres -tA -c "SELECT apikey_partner_create('bench-webhooks')")"
psql_as postgres -q -o /dev/null \
  -c "SELECT * FROM apikey_webhook_create('$partner', 'http://127.0.0.1:$receiver_port/hook')"

summary="$work/summary"
: >"$summary"

# measure LABEL: issues $events keys of $partner one every 50 ms and appends to the summary
# the latency from each key.issued event's commit to its first arrival (and the retries).
measure() {
  local label="$1" since expected
  : >"$work/arrivals"
  since="$(psql_as postgres -tA -c "SELECT clock_timestamp()")"
  for _ in $(seq 1 "$events"); do
    printf "SELECT count(*) FROM apikey_issue('%s', '{bench:read}');\nSELECT pg_sleep(0.05);\n" "$partner"
  done | psql_as postgres -q -o /dev/null
  # Every event once, and every failed one a second time (its retry is due 5 s later).
  expected=$((events + events / 5))
  for _ in $(seq 1 600); do
    [ "$(wc -l <"$work/arrivals")" -ge "$expected" ] && break
    sleep 0.1
  done
  psql_as postgres -tA -F ' ' -c "SELECT event_id, extract(epoch FROM created_at) FROM apikey.events
    WHERE partner_id = '$partner' AND created_at >= '$since'" >"$work/created"
  python3 - "$label" "$work/created" "$work/arrivals" >>"$summary" <<'PY'
import sys
label, created_path, arrivals_path = sys.argv[1], sys.argv[2], sys.argv[3]
created = dict((l.split()[0], float(l.split()[1])) for l in open(created_path) if l.strip())
arrivals = {}
for line in open(arrivals_path):
    msg_id, at, status = line.split()
    arrivals.setdefault(msg_id, []).append((float(at), int(status)))
latencies = sorted((arrivals[e][0][0] - c) * 1000 for e, c in created.items() if e in arrivals)
retried = [a for a in arrivals.values() if a[0][1] == 500]
retry_delays = sorted(a[1][0] - a[0][0] for a in retried if len(a) > 1)
def pct(values, p):
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))] if values else float("nan")
print(f"{label}: {len(latencies)}/{len(created)} events arrived; commit to first arrival "
      f"p50 {pct(latencies, 50):.0f} ms, p95 {pct(latencies, 95):.0f} ms, max {max(latencies or [0]):.0f} ms; "
      f"{len(retried)} answered 500 and {len(retry_delays)} retried, "
      f"{min(retry_delays or [0]):.1f} to {max(retry_delays or [0]):.1f} s after the failure")
PY
}

for poll in $polls; do
  log "poll interval ${poll} ms: issuing $events keys, one every 50 ms"
  export APIKEY_SHIM_WEBHOOK_POLL_MS="$poll"
  shim_start "127.0.0.1:$shim_port"
  measure "$(printf 'poll %5s ms' "$poll")"
done

if [ "$hanging" -gt 0 ]; then
  # A receiver that reads each request and never answers: every attempt to it lasts the
  # shim's whole attempt timeout.
  cat >"$work/hanging.py" <<'PY'
import sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Hanging(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers["content-length"]))
        time.sleep(3600)

    def log_message(self, *args):
        pass

class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024

Server(("127.0.0.1", int(sys.argv[1])), Hanging).serve_forever()
PY
  hanging_port=$((shim_port + 2))
  python3 "$work/hanging.py" "$hanging_port" &
  hanging_pid=$!
  export APIKEY_SHIM_WEBHOOK_POLL_MS=250
  shim_start "127.0.0.1:$shim_port"
  log "fairness: $events events alone, then beside $hanging hanging endpoints of another partner"
  measure "alone                "
  tenant="$(psql_as postgres -tA -c "SELECT apikey_partner_create('bench-webhooks-hanging')")"
  for i in $(seq 1 "$hanging"); do
    psql_as postgres -q -o /dev/null \
      -c "SELECT * FROM apikey_webhook_create('$tenant', 'http://127.0.0.1:$hanging_port/hang/$i')"
  done
  # Each key.issued event of the tenant goes to all of its endpoints.
  (while :; do
    printf "SELECT count(*) FROM apikey_issue('%s', '{bench:read}');\nSELECT pg_sleep(0.05);\n" "$tenant"
  done | psql_as postgres -q -o /dev/null) &
  flood_pid=$!
  # Long enough for every slot the tenant may take to be held by a hanging attempt.
  sleep 5
  measure "beside hanging tenant"
  kill "$flood_pid" 2>/dev/null
  flood_pid=
  python3 - "$summary" >>"$summary" <<'PY'
import re, sys
lines = [l for l in open(sys.argv[1]) if l.startswith(("alone", "beside"))]
value = lambda line, name: float(re.search(name + r" (\d+) ms", line).group(1))
alone, beside = lines[-2], lines[-1]
print(f"fairness: p50 beside the hanging tenant / alone = {value(beside, 'p50') / max(value(alone, 'p50'), 1):.2f}, "
      f"p95 {value(beside, 'p95') / max(value(alone, 'p95'), 1):.2f}")
PY
  in_flight="$(psql_as postgres -tA -c "SELECT count(*) FROM apikey.webhook_deliveries
    WHERE partner_id = '$tenant' AND leased_until > clock_timestamp()")"
  echo "the hanging tenant held $in_flight leased deliveries at the end" >>"$summary"
fi

echo
echo "webhook delivery, $(machine_summary)"
cat "$summary"
