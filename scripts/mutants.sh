#!/usr/bin/env bash
# Mutation testing of the pure modules with cargo-mutants: each mutant (an operator flipped,
# a function body replaced, a match arm deleted) is built and the unit tests of its crate
# are run against it; a mutant the tests do not catch is a change no test would notice.
#
#   scripts/mutants.sh                 every group below
#   scripts/mutants.sh contract core   only those groups
#
# Groups (the pure code of each crate; SQL, shared-memory and HTTP glue is tested end to end
# against a real cluster by scripts/test.sh, which cargo-mutants does not run):
#   contract  apikey-contract: token, scope, reason, redact, key_state, address, argument
#   core      apikey-core: hash, pepper, validate, net, webhook, seal, outbox
#   shim      apikey-shim: key extraction and client IP (auth), JSON extraction (extract),
#             error mapping (error), rate-limit header fields (rate), required scopes from
#             parameters, headers and methods (routes/verify, without the handler itself),
#             webhook target addresses (delivery/address), GitHub's report signatures
#             (github_signature)
#
# Prints caught / missed / timeouts / unviable per group and in all, and the share of viable
# mutants caught (a timeout counts as caught: the mutant made the tests hang). Fails when a
# missed mutant is not explained in docs/mutation-survivors.md (one "- `<mutant>`: why"
# line each, the mutant as cargo-mutants names it without its line and column), or when
# less than 90% are caught.
#
# Env: APIKEY_MUTANTS_JOBS   parallel builds, default 2
#      APIKEY_MUTANTS_OUT    where the reports go, default target/mutants (<group>/mutants.out)
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

version=27.1.0
jobs="${APIKEY_MUTANTS_JOBS:-2}"
out="${APIKEY_MUTANTS_OUT:-$APIKEY_TARGET_DIR/mutants}"
survivors="$APIKEY_REPO_ROOT/docs/mutation-survivors.md"
goal=90

if [ "$(cargo mutants --version 2>/dev/null)" != "cargo-mutants $version" ]; then
  log "installing cargo-mutants $version (a few minutes)"
  cargo install cargo-mutants --version "$version" --locked
fi

group_args() {
  case "$1" in
    contract) echo "-p apikey-contract" ;;
    core) echo "-p apikey-core" ;;
    shim)
      echo "-p apikey-shim -f shim/src/auth.rs -f shim/src/extract.rs -f shim/src/error.rs" \
        "-f shim/src/rate.rs -f shim/src/routes/verify.rs -f shim/src/delivery/address.rs" \
        "-f shim/src/github_signature.rs"
      ;;
    *) die "unknown group '$1' (contract, core, shim)" ;;
  esac
}

groups=("$@")
[ "${#groups[@]}" -gt 0 ] || groups=(contract core shim)
for group in "${groups[@]}"; do group_args "$group" >/dev/null; done

# Lines of a cargo-mutants list, without line and column (they move with every edit).
names() { sed -E 's/^([^:]+):[0-9]+:[0-9]+: /\1: /' "$1" 2>/dev/null || true; }
count() { grep -c . "$1" 2>/dev/null || true; }

total_caught=0 total_missed=0 total_timeout=0 total_unviable=0
unexplained=()
report=()
for group in "${groups[@]}"; do
  log "cargo mutants $(group_args "$group")"
  mkdir -p "$out/$group"
  rc=0
  # The handler, its router and its extractor in routes/verify.rs only glue the pure
  # functions to axum; the end-to-end suite exercises them.
  # shellcheck disable=SC2046
  (cd "$APIKEY_REPO_ROOT" && cargo mutants $(group_args "$group") --jobs "$jobs" \
    --exclude-re 'routes/verify.rs:.*(replace (router|verify) ->|in verify$|from_request_parts)' \
    --output "$out/$group") || rc=$?
  # 0: all caught; 2: some missed; 3: some timed out. Anything else is a failed run.
  case "$rc" in 0|2|3) ;; *) die "cargo mutants failed for $group (exit $rc)" ;; esac
  dir="$out/$group/mutants.out"
  caught=$(count "$dir/caught.txt") missed=$(count "$dir/missed.txt")
  timeout=$(count "$dir/timeout.txt") unviable=$(count "$dir/unviable.txt")
  report+=("$(printf '%-9s %7s %7s %9s %9s' "$group" "$caught" "$missed" "$timeout" "$unviable")")
  total_caught=$((total_caught + caught)) total_missed=$((total_missed + missed))
  total_timeout=$((total_timeout + timeout)) total_unviable=$((total_unviable + unviable))
  while IFS= read -r mutant; do
    [ -n "$mutant" ] || continue
    grep -qF -- "- \`$mutant\`:" "$survivors" 2>/dev/null || unexplained+=("$mutant")
  done < <(names "$dir/missed.txt")
done

viable=$((total_caught + total_missed + total_timeout))
echo
printf '%-9s %7s %7s %9s %9s\n' group caught missed timeouts unviable
printf '%s\n' "${report[@]}"
printf '%-9s %7s %7s %9s %9s\n' all "$total_caught" "$total_missed" "$total_timeout" "$total_unviable"
if [ "$viable" -gt 0 ]; then
  percent=$(( (total_caught + total_timeout) * 1000 / viable ))
  printf 'caught: %d.%d%% of %d viable mutants (goal: at least %d%%)\n' \
    $((percent / 10)) $((percent % 10)) "$viable" "$goal"
else
  percent=0
fi
status=0
if [ "${#unexplained[@]}" -gt 0 ]; then
  echo "missed and not explained in docs/mutation-survivors.md:"
  printf '  - `%s`\n' "${unexplained[@]}"
  status=1
fi
if [ "$percent" -lt $((goal * 10)) ]; then
  echo "below the goal of $goal%"
  status=1
fi
exit "$status"
