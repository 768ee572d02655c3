#!/usr/bin/env bash
# Installs everything a fresh Debian 12 machine needs to build, run and test apikey.
# Idempotent: each step is skipped when its result is already present.
set -euo pipefail

PGRX_VERSION=0.18.1
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config

log() { printf '==> %s\n' "$*" >&2; }

need_apt=()
for pkg in postgresql-15 postgresql-server-dev-15 postgresql-contrib python3-venv libclang-dev clang sudo pkg-config libssl-dev openssl curl jq wrk chromium chromium-driver fonts-dejavu-core nginx caddy pgbouncer lintian; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  log "apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# nginx and Caddy are only run by the gateway tests, with configurations of their own; the
# services Debian's packages start (where systemd runs) would only hold port 80.
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  systemctl disable --now nginx caddy >/dev/null 2>&1 || true
fi

# Debian's package starts a default cluster on 5432; apikey never uses it, but it must not
# hold the port a user may want, and it wastes memory on a 2-core machine.
if command -v pg_lsclusters >/dev/null && pg_lsclusters -h 2>/dev/null | grep -q online; then
  log "stopping Debian's default PostgreSQL cluster (apikey runs its own)"
  pg_ctlcluster 15 main stop 2>/dev/null || true
fi

export PATH="$HOME/.cargo/bin:$PATH"
if ! cargo pgrx --version 2>/dev/null | grep -q "$PGRX_VERSION"; then
  log "cargo install cargo-pgrx $PGRX_VERSION (about 5 minutes)"
  cargo install cargo-pgrx --version "$PGRX_VERSION" --locked
fi

# The documentation book (docs/), built by scripts/test.sh.
MDBOOK_VERSION=0.4.52
if ! mdbook --version 2>/dev/null | grep -q "v$MDBOOK_VERSION"; then
  log "cargo install mdbook $MDBOOK_VERSION (about 3 minutes)"
  cargo install mdbook --version "$MDBOOK_VERSION" --locked
fi

# Other systems' own hashing libraries, for the import tests (tests/tests/import.rs): keys
# hashed the way the systems teams move from made them.
PYTHON_TOOLS=/opt/apikey-python
if ! "$PYTHON_TOOLS/bin/python" -c 'import argon2, bcrypt' 2>/dev/null; then
  log "python venv $PYTHON_TOOLS with argon2-cffi and bcrypt"
  /usr/bin/python3 -m venv "$PYTHON_TOOLS"
  "$PYTHON_TOOLS/bin/pip" install -q 'argon2-cffi==23.1.0' 'bcrypt==4.2.1'
fi

if ! grep -qs "pg15" "$HOME/.pgrx/config.toml"; then
  log "cargo pgrx init --pg15 $PG_CONFIG"
  cargo pgrx init --pg15 "$PG_CONFIG"
fi
log "dependencies ready"
