#!/usr/bin/env bash
# Local-cluster benchmark: image build (cold, cached), cluster-up time, idle memory.
# env: RUNS=3           runs for the cheap measurements (median reported)
#      BENCH_COLD=1     also rebuild the image from scratch once (~2 min; otherwise the last
#                       recorded real build time from .cache/image-build-seconds is shown)
#      BENCH_FRESH=1    also measure local-down + local-up from scratch (recreates every host:
#                       do not use while someone deploys onto the cluster)
set -euo pipefail
cd "$(dirname "$0")/.."
source cluster/lib.sh
RUNS=${RUNS:-3}

median() { sort -n | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.2f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
timeit() { local t; t=$(now); "$@" >/dev/null 2>&1 || { echo "FAILED: $*" >&2; return 1; }; elapsed "$t"; echo; }

echo "# heirflow local cluster benchmark ($(nproc) cores, $(awk '/MemTotal/ { printf "%.1f GiB", $2/1048576 }' /proc/meminfo), docker $(docker version -f '{{.Server.Version}}'))"
if [ "${BENCH_COLD:-0}" = 1 ]; then
  echo "image build, cold (debootstrap + import + cache image): $(timeit cluster/image.sh --force) s"
elif [ -f "$CACHE_DIR/image-build-seconds" ]; then
  echo "image build, cold (last real build, recorded): $(cat "$CACHE_DIR/image-build-seconds") s"
else
  echo "image build, cold: not measured (BENCH_COLD=1)"
fi
echo "image build, cached (median of $RUNS): $(for _ in $(seq "$RUNS"); do timeit cluster/image.sh; done | median) s"
if [ "${BENCH_FRESH:-0}" = 1 ]; then
  timeit cluster/down.sh >/dev/null
  echo "cluster up from scratch (images cached): $(timeit cluster/up.sh) s"
  sleep 5   # let the fresh hosts settle before measuring memory
else
  cluster/up.sh >/dev/null 2>&1
fi
echo "cluster up, already running (median of $RUNS): $(for _ in $(seq "$RUNS"); do timeit cluster/up.sh; done | median) s"
mapfile -t cs < <(docker ps -q --filter "label=$HF_LABEL")
docker stats --no-stream --format '{{.Name}} {{.MemUsage}}' "${cs[@]}" | awk '
  function mib(v) { if (v ~ /GiB$/) return v * 1024; if (v ~ /MiB$/) return v + 0; if (v ~ /KiB$/) return v / 1024; return v / 1048576 }
  { m = mib($2); tot += m; n++; if ($1 ~ /^hf-(aptcache|pypi)$/) svc += m; else hosts += m }
  END { printf "memory, running cluster (docker stats): %.0f MiB total in %d containers (%.0f MiB hosts = %.1f MiB/host avg, %.0f MiB cache services)\n", tot, n, hosts, hosts / (n - 2), svc }'
