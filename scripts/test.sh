#!/usr/bin/env bash
# Builds and installs the extension, runs the unit tests, then the end-to-end tests against a
# throwaway cluster that is destroyed on exit whatever happens. This is what .ci/run calls.
#
# Usage: scripts/test.sh                       everything on PostgreSQL 15, then the
#                                             end-to-end files that exercise the server's
#                                             internals on 16 and 18 (each version built and
#                                             tested in a run of this script of its own)
#        scripts/test.sh --test gateways ...  only these end-to-end test files (cargo test
#                                             arguments), no unit tests: for working on them
# Env: APIKEY_PG_MAJOR          the PostgreSQL to test on (default 15); on 16 or 18 the full
#                               run is everything but the Debian package test
#      APIKEY_SKIP_BUILD=1      use the installed extension as is
#      APIKEY_TEST_STATE_DIR    test cluster directory (default /tmp/apikey-test, with
#                               -MAJOR appended for 16 and 18; wiped first)
#      APIKEY_TEST_PGPORT       test cluster port (default 54331 on 15, 54300 + MAJOR else)
# Exported to the end-to-end tests: APIKEY_TEST_PGHOST (socket dir), APIKEY_TEST_PGPORT,
# APIKEY_TEST_STATE_DIR, APIKEY_TEST_PGDATA, APIKEY_TEST_LOG (server log),
# APIKEY_TEST_PEPPER_FILE, APIKEY_TEST_PGBIN, APIKEY_TEST_PGUSER, APIKEY_TEST_PGDATABASE,
# APIKEY_TEST_SHIM_BIN (the apikey-shim binary the HTTP tests start).
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# The end-to-end files that exercise the server's internals (verification, caches, the
# lifecycle, roles and row security, shared memory and the workers, dump/restore, upgrades,
# standbys, hostile input): run on every supported version. The HTTP, browser and gateway
# files add nothing that depends on the server version and run on 15 only.
internals_suite=(--test verify --test caches --test lifecycle --test revocation --test roles
  --test escalation --test hardening --test pepper --test shared_state --test dump
  --test upgrade --test standby --test events --test leaks --test credits --test import)

# A fixed directory rather than one per run: a run killed with SIGKILL leaves a postmaster
# holding the port, and only a known directory lets the next run find and stop it.
if [ "$APIKEY_PG_MAJOR" = 15 ]; then
  export APIKEY_STATE_DIR="${APIKEY_TEST_STATE_DIR:-/tmp/apikey-test}"
  export APIKEY_PGPORT="${APIKEY_TEST_PGPORT:-54331}"
else
  export APIKEY_STATE_DIR="${APIKEY_TEST_STATE_DIR:-/tmp/apikey-test-$APIKEY_PG_MAJOR}"
  export APIKEY_PGPORT="${APIKEY_TEST_PGPORT:-$((54300 + APIKEY_PG_MAJOR))}"
fi
APIKEY_PORT_KNOB=APIKEY_TEST_PGPORT
apikey_paths

# The server log dies with the state dir; a copy outlives it so CI failures can be read.
saved_log="${TMPDIR:-/tmp}/$(basename "$APIKEY_STATE_DIR")-postgresql.log"
rm -f "$saved_log"
# What cargo test printed, to check that every test target ran.
cargo_output="$(mktemp "${TMPDIR:-/tmp}/apikey-cargo-test.XXXXXX")"
book_output="$(mktemp "${TMPDIR:-/tmp}/apikey-book.XXXXXX")"

results=()
failed=0
# Lines printed after the summary: why a step failed, when its own output is far above.
failure_notes=()
record() {
  results+=("$(printf '%-4s  %s' "$2" "$1")")
  case "$2" in ok|skip) ;; *) failed=1 ;; esac
}

finish() {
  local rc=$?
  set +e
  # A second Ctrl-C or TERM must not cut the cleanup short and leave a postmaster behind.
  trap '' INT TERM
  if [ -f "$APIKEY_LOG" ]; then
    cp -f "$APIKEY_LOG" "$saved_log"
  fi
  rm -f "$cargo_output" "$book_output"
  # In a subshell: a die inside cluster_destroy must not skip the summary below.
  (cluster_destroy)
  echo
  echo "---- test summary ----"
  local line
  for line in "${results[@]}"; do
    echo "$line"
  done
  if [ "$rc" -ne 0 ] || [ "$failed" -ne 0 ]; then
    for line in "${failure_notes[@]}"; do
      echo "$line"
    done
    [ -f "$saved_log" ] && echo "server log of the test cluster: $saved_log"
    echo "TESTS FAILED"
    [ "$rc" -ne 0 ] || rc=1
  else
    echo "ALL TESTS PASSED"
  fi
  exit "$rc"
}
trap finish EXIT
# Without these, Ctrl-C would kill bash before the EXIT trap has stopped the cluster.
trap 'exit 130' INT
trap 'exit 143' TERM

# Whatever a killed earlier run left behind would hold the port or carry stale data.
cluster_destroy
cluster_preflight

# A build failure ends the run: nothing after it would test the current code.
build_extension
if [ "${APIKEY_SKIP_BUILD:-0}" = 1 ]; then record "build (APIKEY_SKIP_BUILD=1)" skip; else record build ok; fi

rc=0
log "building apikey-shim: cargo build --release -p apikey-shim"
(cd "$APIKEY_REPO_ROOT" && cargo build --release -p apikey-shim) || rc=$?
if [ "$rc" -eq 0 ]; then record "shim build" ok; else record "shim build" FAIL; fi
export APIKEY_TEST_SHIM_BIN="$APIKEY_TARGET_DIR/release/apikey-shim"

# The extension's library only (its other target is pgrx's schema generator); every target of
# the pure crates and the shim (its tests/ directory included).
if [ "$#" -eq 0 ]; then
  rc=0
  log "unit tests: cargo test --release -p apikey --lib --features pg$APIKEY_PG_MAJOR"
  (cd "$APIKEY_REPO_ROOT" && cargo test --release -p apikey --lib --no-default-features \
    --features "pg$APIKEY_PG_MAJOR" 2>&1 | tee -a "$cargo_output") || rc=$?
  log "unit tests: cargo test --release -p apikey-contract -p apikey-core -p apikey-shim"
  (cd "$APIKEY_REPO_ROOT" && cargo test --release -p apikey-contract -p apikey-core -p apikey-shim 2>&1 \
    | tee -a "$cargo_output") || rc=$?
  if [ "$rc" -eq 0 ]; then record "unit tests" ok; else record "unit tests" FAIL; fi
  # Routes registered past utoipa_axum::routes! would be served without being in
  # /openapi.json: shim/clippy.toml forbids the calls that do it.
  if cargo clippy --version >/dev/null 2>&1; then
    rc=0
    log "routes only through routes!: cargo clippy -p apikey-shim -- -D clippy::disallowed_methods"
    (cd "$APIKEY_REPO_ROOT" && cargo clippy --release -p apikey-shim --lib --bins -- \
      -D clippy::disallowed_methods 2>&1 | tee -a "$cargo_output") || rc=$?
    if [ "$rc" -eq 0 ]; then record "routes only through routes! (clippy)" ok
    else record "routes only through routes! (clippy)" FAIL; fi
  else
    record "routes only through routes! (cargo clippy is not installed)" skip
  fi
  # The book builds (every page of SUMMARY.md exists, every {{#include}} is found), no link
  # in it is broken, and the README stays an introduction that links into it.
  if [ "$APIKEY_PG_MAJOR" = 15 ]; then
    rc=0
    log "book: mdbook build docs"
    (cd "$APIKEY_REPO_ROOT" && mdbook build docs 2>&1 | tee "$book_output") || rc=$?
    if grep -q '\[ERROR\]\|\[WARN\]' "$book_output"; then rc=1; fi
    (cd "$APIKEY_REPO_ROOT" && python3 scripts/check-book.py target/book) || rc=$?
    readme_bytes="$(wc -c <"$APIKEY_REPO_ROOT/README.md")"
    if [ "$readme_bytes" -gt 16384 ]; then
      failure_notes+=("README.md is $readme_bytes bytes: at most 16384 (move the rest into docs/src)")
      rc=1
    fi
    if [ "$rc" -eq 0 ]; then record "book builds, no broken link, README at most 16 KB" ok
    else record "book builds, no broken link, README at most 16 KB" FAIL; fi
  fi
else
  record "unit tests (only end-to-end files asked for)" skip
fi

# Started with RUST_BACKTRACE=1, as a server may well be: no error a client sees may carry a
# Rust backtrace even then (tests/tests/hardening.rs checks).
RUST_BACKTRACE=1 cluster_start
# The background worker writes last_used_at and usage every 10 s by default; tests that wait
# for it should not have to.
# Standbys the tests start stream from this cluster without a slot: keep enough WAL that a
# busy run (databases created, workers flushing) does not recycle what they still need.
psql_as postgres -q -c "ALTER SYSTEM SET apikey.usage_flush_interval = '200ms'" \
  -c "ALTER SYSTEM SET wal_keep_size = '1GB'" -c 'SELECT pg_reload_conf()' >/dev/null
record "test cluster start + CREATE EXTENSION" ok

# A few seconds of SQL that catch a broken build or install before the long suite runs,
# and that still test something while the end-to-end crate does not exist yet.
rc=0
smoke="$(psql_as postgres -tA <<'SQL'
SELECT reason FROM apikey_verify(NULL);
WITH p AS (SELECT apikey_partner_create('smoke') AS id),
     k AS (SELECT i.token FROM p, apikey_issue(p.id, ARRAY['smoke:read']) AS i)
SELECT v.reason FROM k, apikey_verify(k.token, ARRAY['smoke:read']) AS v;
SQL
)" || rc=$?
if [ "$rc" -eq 0 ] && [ "$smoke" = $'missing_key\nok' ]; then
  record "SQL smoke test" ok
else
  printf 'SQL smoke test: expected "missing_key" then "ok", got:\n%s\n' "$smoke" >&2
  record "SQL smoke test" FAIL
fi

rc=0
log "SQL golden tests: scripts/installcheck"
bash "$APIKEY_REPO_ROOT/scripts/installcheck" || rc=$?
if [ "$rc" -eq 0 ]; then record "SQL golden tests" ok; else record "SQL golden tests" FAIL; fi

export APIKEY_TEST_PGHOST="$APIKEY_SOCKET_DIR"
export APIKEY_TEST_PGPORT="$APIKEY_PGPORT"
export APIKEY_TEST_STATE_DIR="$APIKEY_STATE_DIR"
export APIKEY_TEST_PGDATA="$APIKEY_PGDATA"
export APIKEY_TEST_LOG="$APIKEY_LOG"
export APIKEY_TEST_PEPPER_FILE="$APIKEY_PEPPER_FILE"
export APIKEY_TEST_PGBIN="$PGBIN"
export APIKEY_TEST_PGUSER=postgres
export APIKEY_TEST_PGDATABASE=apikey

if [ -f "$APIKEY_REPO_ROOT/tests/Cargo.toml" ]; then
  rc=0
  # --no-fail-fast: one failing file must not hide the others' results.
  log "end-to-end tests: cargo test --release --no-fail-fast -p apikey-tests $* -- --test-threads=2"
  (cd "$APIKEY_REPO_ROOT" && cargo test --release --no-fail-fast -p apikey-tests "$@" \
    -- --test-threads=2 2>&1 | tee -a "$cargo_output") || rc=$?
  if [ "$rc" -eq 0 ]; then record "end-to-end tests" ok; else record "end-to-end tests" FAIL; fi
  if [ "$#" -eq 0 ]; then
    rc=0
    (cd "$APIKEY_REPO_ROOT" && python3 scripts/check-test-targets.py "$cargo_output") || rc=$?
    if [ "$rc" -eq 0 ]; then record "every test target ran" ok; else record "every test target ran" FAIL; fi
  fi
else
  log "tests/Cargo.toml does not exist yet: skipping the end-to-end tests"
  record "end-to-end tests (tests/Cargo.toml missing)" skip
fi

# The book's deploy guide, run on a Debian-managed cluster of its own with the packages
# installed by apt (it puts the developer build's extension files back afterwards).
if [ "$#" -eq 0 ] && [ "$APIKEY_PG_MAJOR" = 15 ]; then
  rc=0
  log "deploy guide: scripts/deploy-test.sh"
  deploy_output="$(mktemp "${TMPDIR:-/tmp}/apikey-deploy-test.XXXXXX")"
  bash "$APIKEY_REPO_ROOT/scripts/deploy-test.sh" 2>&1 | tee "$deploy_output" || rc=$?
  if [ "$rc" -eq 0 ]; then
    record "packages + deploy guide" ok
  else
    record "packages + deploy guide" FAIL
    # Where a CI log is cut to its end, the reason still shows.
    failure_notes+=("why packages + deploy guide failed (its errors, then the end of its output):" \
      "$(grep -a '^error: ' "$deploy_output" | tail -n 5)" "$(tail -n 15 "$deploy_output")")
  fi
  rm -f "$deploy_output"

  # The other versions, one after the other, each in a run of its own (its own build and
  # cluster; this run's cluster keeps running meanwhile, on another port).
  for major in $APIKEY_WHEEL_MAJORS; do
    rc=0
    started=$SECONDS
    log "PostgreSQL $major: scripts/test.sh ${internals_suite[*]}"
    APIKEY_PG_MAJOR="$major" APIKEY_TEST_STATE_DIR="$APIKEY_STATE_DIR-$major" \
      APIKEY_TEST_PGPORT=$((APIKEY_PGPORT + major)) \
      bash "$APIKEY_REPO_ROOT/scripts/test.sh" "${internals_suite[@]}" || rc=$?
    took="$(( (SECONDS - started) / 60 ))m$(( (SECONDS - started) % 60 ))s"
    if [ "$rc" -eq 0 ]; then verdict=ok; else verdict=FAIL; fi
    record "PostgreSQL $major: build + internals end-to-end files ($took)" "$verdict"
  done
fi
