#!/usr/bin/env bash
# Extra DAG time per host fault, per component class (issue 10), on the deployed local cluster.
# For each class, one heirflow-chaos run with TRIALS host crashes (docker kill, started again
# after 5-15 s) spaced GAP s apart while ledger DAG runs go on (one every 30 s); db and scheduler
# faults hit whoever leads the class at that moment (--leaders: the Postgres primary, the
# scheduler's lease holder). A fault's cost is the longest DAG run that overlapped it minus the
# fault-free DAG time measured in the same run (the anchor: the median of the runs no fault
# touched). Prints median and p95 per class against the issue's target, and the median time a
# DAG file written when a fault started took to be parsed (the dag-processor's figure, target
# <= 20 s); the invariants of every run must hold too (a breach fails the benchmark).
#
#   bench/chaos-classes.sh                      TRIALS=5 GAP=60 CLASSES="queue worker scheduler db web"
#   KINDS=freeze bench/chaos-classes.sh         other fault kinds (comma-separated)
# Per-run reports stay in bench/results/chaos-<class>/ (report.json, timeline.png).
set -euo pipefail
source "$(dirname "$0")/../tests/cluster/lib.sh"
need_root
cd "$REPO_ROOT"
TRIALS=${TRIALS:-5}
GAP=${GAP:-60}
KINDS=${KINDS:-crash}
CLASSES=${CLASSES:-queue worker scheduler db web}
RES=bench/results
mkdir -p "$RES"
# The same build as deploy-test.sh's (a one-package build would re-resolve features and rebuild).
cargo build --release -q --workspace --bins --examples
CHAOS=./target/release/heirflow-chaos

declare -A TARGET=([queue]=10 [worker]=45 [scheduler]=10 [db]=20 [web]=10)
rows=()
for c in $CLASSES; do
  out="$RES/chaos-$c"
  rm -rf "$out"
  echo "=== $c: $TRIALS x $KINDS (gap $GAP s)" >&2
  "$CHAOS" run -i "$INVENTORY_DIR" --classes "$c" --kinds "$KINDS" --count "$TRIALS" --gap "$GAP" \
    --leaders --seed 11 --out "$out" >&2 || { echo "ERROR: the $c run failed (report: $out)" >&2; exit 1; }
  rows+=("$(python3 - "$out/report.json" "$c" "${TARGET[$c]}" <<'EOF'
import json, statistics, sys
r = json.load(open(sys.argv[1]))
x = sorted(f["extra_s"] for f in r["faults"] if f["extra_s"] is not None)
p95 = x[min(len(x) - 1, round(0.95 * (len(x) - 1)))] if x else float("nan")
med = statistics.median(x) if x else float("nan")
nd = sorted(f["new_dag_s"] for f in r["faults"] if f.get("new_dag_s") is not None)
ndm = f"{statistics.median(nd):.1f}" if nd else "-"
print(f'{sys.argv[2]:<10} {len(x):>6} {r["baseline_s"]:>10.1f} {med:>10.1f} {p95:>8.1f} {med / r["baseline_s"]:>12.2f} {sys.argv[3]:>8}  {"met" if med <= float(sys.argv[3]) else "NOT met":<8} {ndm:>10}')
EOF
)")
done
printf '\n%-10s %6s %10s %10s %8s %12s %8s  %-8s %10s\n' class faults "anchor s" "median s" "p95 s" "median/anchor" "target" "" "new DAG s"
printf '%s\n' "${rows[@]}"
