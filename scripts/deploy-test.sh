#!/usr/bin/env bash
# Tests the book's "Deploy on your own PostgreSQL" guide (docs/src/install.md) on this machine: runs its sh
# blocks, in order, in one shell, against a Debian-managed cluster of its own
# (pg_createcluster, on a port of its own), with the packages scripts/package.sh builds
# installed by apt onto the system's PostgreSQL 15. Then it checks the result (a key issued
# by the guide verifies in psql and through the packaged shim), removes the packages
# (checking that removal keeps the pepper file and the database, and what purge says), drops
# the cluster, and puts back the extension files a developer build had installed. Between the
# checks and the removal it runs the scale-out chapter (docs/src/scale-out.md) on from the
# guide: two standbys of the cluster, made as the chapter makes them, the shim verifying on
# them, then drops them.
#
# Two things differ from a real server, and only these: the cluster name and port (the guide's
# `CLUSTER=main PGPORT=5432` line), and `systemctl`, which a machine without systemd cannot
# run: the service is started as its unit would (same user, same environment file), on a
# free port instead of 8080.
#
# Env: APIKEY_SKIP_BUILD=1   package what is already built
#      APIKEY_DEPLOY_PGPORT  the cluster's port (default 25435; the shim takes the next one,
#                            the scale-out chapter's standbys the two after it).
#                            Below Linux's ephemeral range (32768-60999), where a client
#                            socket of the test run before could still hold the port.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

root="$APIKEY_REPO_ROOT"
cluster=apikeydeploy
standby1=apikeydeploy_standby1
standby2=apikeydeploy_standby2
port="${APIKEY_DEPLOY_PGPORT:-25435}"
shim_port=$((port + 1))
work="$(mktemp -d "${TMPDIR:-/tmp}/apikey-deploy.XXXXXX")"
chmod 0755 "$work"
extdir="$("$PGBIN/pg_config" --sharedir)/extension"
libdir="$("$PGBIN/pg_config" --pkglibdir)"

# The developer build's files, which installing and purging the package replaces and removes.
mkdir -p "$work/dev-files"
cp -a "$libdir/apikey.so" "$extdir"/apikey* "$work/dev-files/" 2>/dev/null || true

# stop_shim: TERM to the running service, then wait until it has exited (it lets its
# requests and webhook attempts finish first, as under systemd) and its port is free, so
# that a new one can take it.
stop_shim() {
  if [ -f "$work/shim.pid" ]; then
    local pid
    pid="$(cat "$work/shim.pid")"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 150); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "the shim did not stop within 15 s of TERM: killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$work/shim.pid"
    for _ in $(seq 1 50); do
      [ -z "$(ss -Hltn "sport = :$shim_port" 2>/dev/null)" ] && return 0
      sleep 0.1
    done
    echo "port $shim_port is still taken: $(ss -Hltnp "sport = :$shim_port" 2>/dev/null)" >&2
  fi
}

# A fresh machine's apt timers may hold the dpkg lock for a while: every apt-get here, the
# guide's under sudo included, waits for it instead of failing at once.
apt_wait="/etc/apt/apt.conf.d/99apikey-deploy-test-lock-wait"

# drop_clusters: the test's three clusters and their configuration directories, which
# pg_dropcluster keeps while they hold files it did not make (the pepper, a conf.d file the
# scale-out chapter wrote): a later run's cluster of the same name would read them.
drop_clusters() {
  local name
  for name in "$standby1" "$standby2" "$cluster"; do
    pg_dropcluster --stop 15 "$name" >/dev/null 2>&1
    rm -rf "/etc/postgresql/15/$name"
  done
}

finish() {
  local rc=$?
  set +e
  trap '' INT TERM
  if [ "$rc" -ne 0 ]; then
    echo "---- the deploy test failed: the packaged shim's log, and the sockets on its ports"
    tail -n 20 "$work/shim.log" 2>/dev/null
    ss -Htan "( sport = :$port or sport = :$shim_port )" 2>/dev/null
  fi
  stop_shim
  drop_clusters
  if dpkg-query -W postgresql-15-apikey >/dev/null 2>&1 || dpkg-query -W apikey-shim >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq postgresql-15-apikey apikey-shim >/dev/null 2>&1
  fi
  # Put the developer build back where the package was.
  cp -a "$work/dev-files/apikey.so" "$libdir/" 2>/dev/null
  find "$work/dev-files" -name 'apikey*' ! -name apikey.so -exec cp -a {} "$extdir/" \; 2>/dev/null
  rm -rf "$work"
  rm -f "$apt_wait"
  if [ "$rc" -eq 0 ]; then echo "DEPLOY TEST PASSED"; else echo "DEPLOY TEST FAILED"; fi
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

command -v pg_createcluster >/dev/null || die "pg_createcluster (postgresql-common) is missing"
drop_clusters || true
ports_in_use="( sport = :$port or sport = :$shim_port or sport = :$((shim_port + 1)) or sport = :$((shim_port + 2)) )"
if [ -n "$(ss -Htan "$ports_in_use" 2>/dev/null)" ]; then
  die "port $port or one of the three after it is in use: $(ss -Htan "$ports_in_use"); set APIKEY_DEPLOY_PGPORT"
fi
echo 'DPkg::Lock::Timeout "600";' >"$apt_wait"
log "pg_createcluster 15 $cluster on port $port"
pg_createcluster 15 "$cluster" -p "$port" --start >/dev/null

# The guide's sh blocks, in order.
guide="$work/guide.sh"
awk '
  /^## Deploy on your own PostgreSQL/ { inside = 1; next }
  inside && /^## / { inside = 0 }
  inside && /^```sh$/ { block = 1; next }
  inside && block && /^```$/ { block = 0; print ""; next }
  inside && block { print }
' "$root/docs/src/install.md" >"$guide"
grep -q '^CLUSTER=main PGPORT=5432$' "$guide" || die "the guide no longer names its cluster as expected"
[ "$(grep -c 'systemctl' "$guide")" -eq 2 ] || die "the guide's systemctl lines changed: update this script"

# systemctl, as the unit would run the service: the shim's own process as apikey_shim
# (setpriv execs it, so the pid file names the shim and TERM reaches it as systemd's would).
cat >"$work/preamble.sh" <<EOF
set -euo pipefail
cd "$root"
export DEBIAN_FRONTEND=noninteractive
export APIKEY_SKIP_BUILD="${APIKEY_SKIP_BUILD:-0}"
work="$work"
shim_port="$shim_port"
$(declare -f stop_shim)
start_shim() {
  stop_shim
  (
    while IFS= read -r line; do
      case "\$line" in ''|'#'*) continue ;; esac
      export "\${line%%=*}=\${line#*=}"
    done </etc/apikey-shim/apikey-shim.env
    export APIKEY_SHIM_LISTEN=127.0.0.1:$shim_port
    cd / && exec setsid setpriv --reuid=apikey_shim --regid=apikey_shim --init-groups -- /usr/bin/apikey-shim
  ) >"$work/shim.log" 2>&1 </dev/null &
  echo \$! >"$work/shim.pid"
  for _ in \$(seq 1 100); do
    # The new process, not one still going away, must be the one answering.
    kill -0 "\$(cat "$work/shim.pid")" 2>/dev/null || break
    curl -sf -o /dev/null "http://127.0.0.1:$shim_port/healthz" && return 0
    sleep 0.1
  done
  echo "the shim did not start; its log:" >&2
  cat "$work/shim.log" >&2
  return 1
}
EOF
sed -e "s/^CLUSTER=main PGPORT=5432\$/CLUSTER=$cluster PGPORT=$port/" \
    -e 's/^sudo systemctl enable --now apikey-shim$/start_shim/' \
    -e 's/^sudo systemctl restart apikey-shim$/start_shim/' \
    -e "s#127.0.0.1:8080#127.0.0.1:$shim_port#g" \
    "$guide" >"$work/steps.sh"
cat >>"$work/steps.sh" <<EOF
echo "\$ADMIN_TOKEN" >"$work/admin-token"
EOF

log "running the guide's blocks"
cat "$work/preamble.sh" "$work/steps.sh" >"$work/run.sh"
bash "$work/run.sh" 2>&1 | tee "$work/run.log" | sed 's/^/    /'

token="$(cat "$work/admin-token")"
[[ "$token" =~ ^ak_live_[A-Za-z0-9_]+$ ]] || die "the guide issued no token"
grep -q '"valid":true' "$work/run.log" || die "the guide's curl check did not answer valid"
psql_deploy() { runuser -u postgres -- psql -X -p "$port" -d apikey -v ON_ERROR_STOP=1 -Atc "$1"; }
[ "$(psql_deploy "SELECT reason FROM apikey_verify('$token')")" = ok ] || die "the token does not verify in psql"
[ "$(psql_deploy "SELECT extension_version || ' ' || library_version FROM apikey_version()")" \
  = "$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/extension/Cargo.toml" | head -n1) $(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/extension/Cargo.toml" | head -n1)" ] \
  || die "apikey_version() does not name the packaged release"
[ "$(psql_deploy "SELECT shared_memory FROM apikey_status()")" = t ] || die "the server runs without shared memory"
status="$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$shim_port/v1/partners" \
  -H "X-API-Key: $token" -H 'Content-Type: application/json' -d '{"name": "deployed"}')"
[ "$status" = 201 ] || die "the packaged shim could not create a partner (HTTP $status): $(tail -n 5 "$work/shim.log")"
[ "$(stat -c '%U %a' /etc/postgresql/15/$cluster/apikey-pepper)" = "postgres 600" ] || die "the pepper file's owner or mode is wrong"
[ "$(stat -c '%U:%G %a' /etc/apikey-shim/apikey-shim.env)" = "root:apikey_shim 640" ] || die "the environment file's owner or mode is wrong"
ps -o user= -p "$(pgrep -f '^/usr/bin/apikey-shim' | head -n1)" | grep -qx apikey_shim || die "the shim does not run as apikey_shim"

# The scale-out chapter, on from here in the same shell: two standbys as Debian clusters of
# their own, on the two ports after the shim's.
log "running the scale-out chapter's blocks"
awk '
  /^```sh$/ { block = 1; next }
  block && /^```$/ { block = 0; print ""; next }
  block { print }
' "$root/docs/src/scale-out.md" >"$work/scale-out.sh"
grep -q '^STANDBYS="standby1:5433 standby2:5434"$' "$work/scale-out.sh" \
  || die "the scale-out chapter no longer names its standbys as expected"
sed -e "s/^STANDBYS=.*\$/STANDBYS=\"$standby1:$((shim_port + 1)) $standby2:$((shim_port + 2))\"/" \
    -e 's/^sudo systemctl restart apikey-shim$/start_shim/' \
    -e "s#127.0.0.1:8080#127.0.0.1:$shim_port#g" \
    "$work/scale-out.sh" >"$work/scale-out-steps.sh"
{
  cat "$work/preamble.sh"
  echo "CLUSTER=$cluster PGPORT=$port ADMIN_TOKEN=$token"
  cat "$work/scale-out-steps.sh"
} >"$work/scale-out-run.sh"
bash "$work/scale-out-run.sh" 2>&1 | tee "$work/scale-out.log" | sed 's/^/    /'
# A standby's walreceiver may be reconnecting, or the shim's probe not yet back from the
# wait after the revoke: what is checked here must hold within 10 s, not at one instant.
replication_state() { psql_deploy "SELECT string_agg(application_name || ' ' || sync_state, ',' ORDER BY application_name) FROM pg_stat_replication"; }
replicas_in_use() {
  curl -s "http://127.0.0.1:$shim_port/healthz" \
    | python3 -c 'import json,sys; print(sum(r["in_use"] for r in json.load(sys.stdin)["replicas"]))'
}
for _ in $(seq 1 100); do
  state="$(replication_state)" in_use="$(replicas_in_use)"
  [ "$state" = "$standby1 quorum,$standby2 quorum" ] && [ "$in_use" = 2 ] && break
  sleep 0.1
done
[ "$state" = "$standby1 quorum,$standby2 quorum" ] \
  || die "the standbys are not both streaming as quorum standbys: $state"
[ "$in_use" = 2 ] || die "the shim does not verify with both standbys: $(curl -s "http://127.0.0.1:$shim_port/healthz")"
grep -q '"valid":true' "$work/scale-out.log" || die "the chapter's new key did not verify"
grep -q '"reason":"revoked"' "$work/scale-out.log" || die "the chapter's revoked key was not refused as revoked"
answered="$(curl -s "http://127.0.0.1:$shim_port/metrics" | awk '/^apikey_shim_replica_verifications_total/ { n += $2 } END { print n + 0 }')"
[ "$answered" -ge 2 ] || die "the standbys answered $answered verifications, not the chapter's two"
log "scale-out chapter: two standbys streaming, the shim verified on them ($answered verifications)"
rm -f "/etc/postgresql/15/$cluster/conf.d/replication.conf"
pg_ctlcluster 15 "$cluster" reload
for standby in "$standby1" "$standby2"; do pg_dropcluster --stop 15 "$standby" >/dev/null; done

if command -v systemd-analyze >/dev/null; then
  systemd-analyze verify /lib/systemd/system/apikey-shim.service || die "systemd-analyze finds fault with the unit"
fi
if command -v lintian >/dev/null; then
  log "lintian"
  for deb in "$APIKEY_TARGET_DIR"/debian/*.deb; do
    lintian --fail-on error --suppress-tags dir-or-file-in-opt "$deb" | sed 's/^/    /'
  done
fi

log "removing the packages: the database and the pepper file stay"
stop_shim
removal="$(DEBIAN_FRONTEND=noninteractive apt-get remove -y postgresql-15-apikey apikey-shim 2>&1)" \
  || die "apt-get remove failed: $removal"
echo "$removal" | grep -q 'Left untouched: every database' || die "removal does not say what it leaves: $removal"
[ -f "/etc/postgresql/15/$cluster/apikey-pepper" ] || die "removal took the pepper file"
[ -f /etc/apikey-shim/apikey-shim.env ] || die "remove (not purge) deleted the configuration"
[ "$(psql_deploy "SELECT count(*) FROM apikey.keys")" -ge 1 ] || die "the keys are gone"
purge="$(DEBIAN_FRONTEND=noninteractive apt-get purge -y postgresql-15-apikey apikey-shim 2>&1)" \
  || die "apt-get purge failed: $purge"
echo "$purge" | grep -q 'Left in place: the system user apikey_shim' || die "purge does not say what it leaves: $purge"
[ ! -e /etc/apikey-shim/apikey-shim.env ] || die "purge left the environment file"
[ -f "/etc/postgresql/15/$cluster/apikey-pepper" ] || die "purge took the pepper file"
log "deploy guide: every step ran, the key verified in psql and through the packaged shim"
