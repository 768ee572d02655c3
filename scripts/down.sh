#!/usr/bin/env bash
# Stops the cluster started by up.sh. With --purge also deletes its state directory: the
# data, the log and the pepper, so every key issued there becomes unverifiable for good.
#
# Env: APIKEY_STATE_DIR (default /tmp/apikey-dev).
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { echo "usage: $0 [--purge]" >&2; exit "${1:-2}"; }

purge=0
while [ $# -gt 0 ]; do
  case "$1" in
    --purge) purge=1 ;;
    -h|--help) usage 0 ;;
    *) echo "unknown argument: $1" >&2; usage ;;
  esac
  shift
done

apikey_paths
use_cluster_postgres
shim_stop
if [ "$purge" = 1 ]; then
  cluster_destroy
  echo "apikey cluster stopped and $APIKEY_STATE_DIR removed."
elif cluster_running; then
  cluster_stop
  echo "apikey cluster stopped; data kept in $APIKEY_STATE_DIR (scripts/up.sh starts it again)."
elif [ -d "$APIKEY_PGDATA" ]; then
  echo "apikey cluster in $APIKEY_STATE_DIR is not running; nothing to stop."
else
  echo "no apikey cluster in $APIKEY_STATE_DIR; nothing to stop."
fi
