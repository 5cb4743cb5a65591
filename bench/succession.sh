#!/usr/bin/env bash
# heir-supervisor takeover benchmark with local processes and a throwaway local Postgres:
# kill -9 the leader's supervisor → the next member's child has started (both instants on
# CLOCK_MONOTONIC). Each trial uses a fresh group with two members.
#
#   bench/succession.sh                 20 trials cold + 20 trials --warm, default timings
#   TRIALS=30 bench/succession.sh
#   RUN_ARGS="--ttl 2 --interval 0.3 --margin 0.7" bench/succession.sh   other timings
#
# Needs: PostgreSQL server binaries (apt-get install -y postgresql), python3, cargo.
set -euo pipefail
cd "$(dirname "$0")/.."
TRIALS=${TRIALS:-20}
RUN_ARGS=${RUN_ARGS:-}
MODES=${MODES:-"cold warm"}

cargo build --release -q --workspace --bins --examples
# The real interpreter, not a version-manager shim (its start-up would be measured too).
PY=$(python3 -c 'import sys; print(sys.executable)')
BIN=$PWD/target/release/heir-supervisor
DSN=$(heir-supervisor/tests/pg.sh up)
WORK=$(mktemp -d /tmp/heir-bench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# The child: in --warm mode it is pre-started and waits for "go" on stdin (like the Airflow
# warm wrapper after its imports); it records `start <member> <monotonic ns>`, then idles.
cat >"$WORK/child.py" <<'PY'
import os, sys, time
rec, member = sys.argv[1], sys.argv[2]
if os.environ.get("HEIR_WARM") == "1":
    if not sys.stdin.readline().startswith("go"):
        sys.exit(0)
with open(rec, "a") as f:
    f.write(f"start {member} {time.monotonic_ns()}\n")
time.sleep(1000)
PY
mono() { python3 -c 'import time; print(time.monotonic_ns())'; }
wait_line() { # file pattern timeout_s
  local end=$((SECONDS + $3))
  until grep -q "$2" "$1" 2>/dev/null; do
    [ $SECONDS -lt $end ] || return 1
    sleep 0.02
  done
}
live_members() {
  "$BIN" status --json --group "$1" --dsn "$DSN" |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print(sum(1 for m in d["groups"][0]["members"] if m["live"]))'
}

stats() { # label, file of ms values
  python3 - "$1" "$2" <<'PY'
import statistics, sys
label, path = sys.argv[1], sys.argv[2]
v = sorted(float(x) for x in open(path) if x.strip())
if not v:
    print(f"{label}: no successful trial"); sys.exit(0)
p95 = v[min(len(v) - 1, max(0, round(0.95 * len(v) + 0.5) - 1))]
print(f"{label}: n={len(v)} median={statistics.median(v):.0f} ms p95={p95:.0f} ms "
      f"min={v[0]:.0f} ms max={v[-1]:.0f} ms")
PY
}

echo "# heir-supervisor takeover after kill -9 of the leader ($(nproc) cores; run args: ${RUN_ARGS:-defaults: --ttl 3 --interval 0.5 --margin 1})"
for mode in $MODES; do
  extra=()
  [ "$mode" = warm ] && extra=(--warm)
  : >"$WORK/$mode.ms"
  failed=0
  for t in $(seq "$TRIALS"); do
    g="bench-$mode-$$-$t"
    rec="$WORK/rec-$mode-$t"
    : >"$rec"
    # shellcheck disable=SC2086
    "$BIN" run --group "$g" --dsn "$DSN" --member-id a $RUN_ARGS "${extra[@]}" -- "$PY" "$WORK/child.py" "$rec" a 2>>"$WORK/log" &
    a=$!; PIDS+=("$a")
    wait_line "$rec" "^start a" 15 || { echo "trial $t: a never started" >&2; failed=$((failed + 1)); kill -9 $a; continue; }
    # shellcheck disable=SC2086
    "$BIN" run --group "$g" --dsn "$DSN" --member-id b $RUN_ARGS "${extra[@]}" -- "$PY" "$WORK/child.py" "$rec" b 2>>"$WORK/log" &
    b=$!; PIDS+=("$b")
    for _ in $(seq 100); do [ "$(live_members "$g")" = 2 ] && break; sleep 0.05; done
    sleep 1   # b settled (and, warm, its child pre-started)
    t0=$(mono)
    kill -9 "$a"
    if wait_line "$rec" "^start b" 15; then
      t1=$(awk '$1 == "start" && $2 == "b" { print $3 }' "$rec")
      echo "$(( (t1 - t0) / 1000 ))" | awk '{ printf "%.1f\n", $1 / 1000 }' >>"$WORK/$mode.ms"
    else
      echo "trial $t: b never took over" >&2; failed=$((failed + 1))
    fi
    kill -TERM "$b" 2>/dev/null || true
    wait "$b" 2>/dev/null || true
    wait "$a" 2>/dev/null || true
  done
  stats "takeover ($mode)" "$WORK/$mode.ms"
  [ "$failed" = 0 ] || echo "  ($failed failed trials)"
  mkdir -p bench/results
  cp "$WORK/$mode.ms" "bench/results/succession-$mode.ms"
done
