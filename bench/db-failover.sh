#!/usr/bin/env bash
# DB failover time on the local PostgreSQL pair (heir-supervisor/tests/pgpair.sh: primary and
# synchronous standby in two network namespaces, 3 witnesses, floating IP on a bridge):
# kill -9 of the primary's postmaster and children → first write acknowledged again through
# the floating IP, alternating nodes, with a writer committing continuously; checks that no
# acknowledged commit was lost. Prints every trial, then median and p95.
#
#   bench/db-failover.sh [TRIALS]      (default 20; needs root and PostgreSQL 15)
#
# Target (issue 4): ≤ 10 s. Reference: Patroni defaults 20–40 s, pg_auto_failover 20–30 s.
set -euo pipefail
cd "$(dirname "$0")/.."
TRIALS="${1:-20}"
LOG="${TMPDIR:-/tmp}/db-failover-bench.log"
echo "building (cargo test --release -p heir-supervisor --test db_bench --no-run)..." >&2
cargo test --release -p heir-supervisor --test db_bench --no-run >/dev/null 2>&1 \
  || cargo test --release -p heir-supervisor --test db_bench --no-run
echo "running $TRIALS trials (full log: $LOG)..." >&2
set +e
HEIR_DB_BENCH_TRIALS="$TRIALS" cargo test --release -p heir-supervisor --test db_bench \
  -- --ignored --nocapture >"$LOG" 2>&1
rc=$?
set -e
grep -E '^(trial|db-failover:)' "$LOG" || true
if [ "$rc" != 0 ]; then
  echo "benchmark failed (exit $rc); see $LOG" >&2
  tail -30 "$LOG" >&2
fi
exit "$rc"
