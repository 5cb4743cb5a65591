#!/usr/bin/env bash
# Deploy benchmark (issue 3): image build (cold, cached), cluster up, full deploy with hfplay from
# an empty cluster, no-change re-run and --check (medians), and the running cluster's memory.
# env: RUNS=3 (re-run/--check repetitions)  BENCH_COLD=1 (also rebuild the image from scratch)
#      BENCH_KEEP=1 (leave the cluster up)
# Destroys and recreates the local cluster: do not run while someone uses it.
set -euo pipefail
source "$(dirname "$0")/../tests/cluster/lib.sh"
cd "$REPO_ROOT"
RUNS=${RUNS:-3}
median() { sort -n | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.1f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
p95() { sort -n | awk '{ a[NR] = $1 } END { i = int(NR * 0.95 + 0.999); if (i < 1) i = 1; print a[i] }'; }
timeit() { local t; t=$(now); "$@" > "$LOG" 2>&1 || { tail -30 "$LOG" >&2; echo "FAILED: $*" >&2; exit 1; }; elapsed "$t"; }
LOG=$(mktemp /tmp/heirflow-bench.XXXXXX)

cargo build --release -q --workspace --bins --examples
echo "# Heirflow deploy benchmark: $(nproc) cores, $(awk '/MemTotal/ { printf "%.1f GiB", $2/1048576 }' /proc/meminfo), $(date -u +%F)"
if [ "${BENCH_COLD:-0}" = 1 ]; then
  echo "image build, cold:           $(timeit cluster/image.sh --force) s"
fi
echo "image build, cached:         $(timeit cluster/image.sh) s"
timeit cluster/down.sh > /dev/null
T_UP=$(timeit cluster/up.sh)
echo "cluster up (images cached):  $T_UP s"
T_DEPLOY=$(timeit "$HFPLAY" playbooks/site.yml -i inventory/local)
echo "full deploy (hfplay):        $T_DEPLOY s"
awk -v a="$T_UP" -v b="$T_DEPLOY" 'BEGIN { printf "cluster up + deploy:         %.1f s (target <= 600)\n", a + b }'
re=(); ck=()
for _ in $(seq "$RUNS"); do re+=("$(timeit "$HFPLAY" playbooks/site.yml -i inventory/local)"); done
grep -q 'changed=[1-9]' "$LOG" && echo "WARNING: the last re-run changed something:" && grep 'changed=[1-9]' "$LOG"
for _ in $(seq "$RUNS"); do ck+=("$(timeit "$HFPLAY" playbooks/site.yml -i inventory/local --check)"); done
echo "no-change re-run:            median $(printf '%s\n' "${re[@]}" | median) s, max $(printf '%s\n' "${re[@]}" | sort -n | tail -1) s over $RUNS (target <= 30)"
echo "--check:                     median $(printf '%s\n' "${ck[@]}" | median) s over $RUNS"
mapfile -t cs < <(docker ps -q --filter "label=$HF_LABEL")
docker stats --no-stream --format '{{.Name}} {{.MemUsage}}' "${cs[@]}" | awk '
  function mib(v) { if (v ~ /GiB$/) return v * 1024; if (v ~ /MiB$/) return v + 0; if (v ~ /KiB$/) return v / 1024; return v / 1048576 }
  { m = mib($2); tot += m; if ($1 ~ /^hf-(aptcache|pypi)$/) svc += m; else hosts += m }
  END { printf "memory of the deployed cluster: %.2f GiB total (%.2f GiB hosts, %.2f GiB package caches) (target <= 8)\n", tot / 1024, hosts / 1024, svc / 1024 }'
[ "${BENCH_KEEP:-0}" = 1 ] || cluster/down.sh > /dev/null
rm -f "$LOG"
