#!/usr/bin/env bash
# Deploy benchmark (issues 3, 9): cluster up + full deploy with hfplay from an empty cluster,
# cold (empty apt and PyPI caches: every package from the internet through the cluster's
# apt-cacher-ng and uv) and warm (caches filled by the previous run), TRIALS times each;
# then the no-change re-run and --check (RUNS times) and the deployed cluster's memory.
# Prints every trial and the medians; the anchor is the cold trial of the same run.
# env: TRIALS=3  RUNS=3  BENCH_COLD_IMAGE=1 (also time an image rebuild from scratch)
#      BENCH_KEEP=1 (leave the cluster up)   BENCH_WARM_ONLY=1 (skip the cold trials)
# Destroys and recreates the local cluster (and empties its package caches): do not run while
# someone uses it.
set -euo pipefail
source "$(dirname "$0")/../tests/cluster/lib.sh"
cd "$REPO_ROOT"
TRIALS=${TRIALS:-3}
RUNS=${RUNS:-3}
median() { sort -n | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.1f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
timeit() { local t; t=$(now); "$@" > "$LOG" 2>&1 || { tail -30 "$LOG" >&2; echo "FAILED: $*" >&2; exit 1; }; elapsed "$t"; }
LOG=$(mktemp /tmp/heirflow-bench.XXXXXX)
mkdir -p bench/results
OUT=bench/results/deploy-$(date -u +%Y%m%dT%H%M%S).log

cargo build --release -q --workspace --bins --examples
say() { echo "$*" | tee -a "$OUT"; }
say "# Heirflow deploy benchmark: $(nproc) cores, $(awk '/MemTotal/ { printf "%.1f GiB", $2/1048576 }' /proc/meminfo), $(date -u +%F), Debian $HF_SUITE hosts, $(cluster_hosts | wc -l) hosts"
if [ "${BENCH_COLD_IMAGE:-0}" = 1 ]; then
  say "image build, cold:           $(timeit cluster/image.sh --force) s"
fi
say "image build, cached:         $(timeit cluster/image.sh) s"

# trial KIND: down (emptying the caches when cold), up, deploy; prints "up deploy total"
trial() {
  local up dep
  if [ "$1" = cold ]; then timeit cluster/down.sh --caches > /dev/null; else timeit cluster/down.sh > /dev/null; fi
  up=$(timeit cluster/up.sh)
  dep=$(timeit "$HFPLAY" playbooks/site.yml -i inventory/local)
  awk -v a="$up" -v b="$dep" 'BEGIN { printf "%s %s %.1f\n", a, b, a + b }'
}
declare -A TOT=()
kinds=(cold warm); [ "${BENCH_WARM_ONLY:-0}" = 1 ] && kinds=(warm)
# A warm trial needs filled caches: the first cold trial (or a previous run) leaves them.
for kind in "${kinds[@]}"; do
  for i in $(seq "$TRIALS"); do
    res=$(trial "$kind") || exit 1
    read -r up dep tot <<< "$res"
    say "$kind trial $i: up $up s + deploy $dep s = $tot s"
    TOT[$kind]+="$tot "
  done
done
for kind in "${kinds[@]}"; do
  # shellcheck disable=SC2086
  say "$kind up + deploy: median $(printf '%s\n' ${TOT[$kind]} | median) s over $TRIALS (target: cold <= 300, warm <= 180)"
done
if [ "${#kinds[@]}" = 2 ]; then
  # shellcheck disable=SC2086
  awk -v c="$(printf '%s\n' ${TOT[cold]} | median)" -v w="$(printf '%s\n' ${TOT[warm]} | median)" \
    'BEGIN { printf "warm / cold: %.2f\n", w / c }' | tee -a "$OUT"
fi

re=(); ck=()
for _ in $(seq "$RUNS"); do re+=("$(timeit "$HFPLAY" playbooks/site.yml -i inventory/local)"); done
grep -q 'changed=[1-9]' "$LOG" && say "WARNING: the last re-run changed something:" && grep 'changed=[1-9]' "$LOG" | tee -a "$OUT"
for _ in $(seq "$RUNS"); do ck+=("$(timeit "$HFPLAY" playbooks/site.yml -i inventory/local --check)"); done
say "no-change re-run:            median $(printf '%s\n' "${re[@]}" | median) s, max $(printf '%s\n' "${re[@]}" | sort -n | tail -1) s over $RUNS (target <= 10)"
say "--check:                     median $(printf '%s\n' "${ck[@]}" | median) s over $RUNS"
mapfile -t cs < <(docker ps -q --filter "label=$HF_LABEL")
docker stats --no-stream --format '{{.Name}} {{.MemUsage}}' "${cs[@]}" | awk '
  function mib(v) { if (v ~ /GiB$/) return v * 1024; if (v ~ /MiB$/) return v + 0; if (v ~ /KiB$/) return v / 1024; return v / 1048576 }
  { m = mib($2); tot += m; if ($1 ~ /^hf-(aptcache|pypi)$/) svc += m; else hosts += m }
  END { printf "memory of the deployed cluster: %.2f GiB total (%.2f GiB hosts, %.2f GiB package caches) (target <= 8)\n", tot / 1024, hosts / 1024, svc / 1024 }' | tee -a "$OUT"
[ "${BENCH_KEEP:-0}" = 1 ] || cluster/down.sh > /dev/null
rm -f "$LOG"
echo "log: $OUT"
