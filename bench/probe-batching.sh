#!/usr/bin/env bash
# Would batching the probes of consecutive tasks into one SSH round trip pay? (issue 12)
#
# The most batching can save on a run is one round trip per probe beyond the first of each
# batch. This measures both factors on the hosts and playbook of bench/hfplay-vs-ansible.sh
# (tests/hosts.sh, 4 containers; bench/hfplay-vs-ansible.yml): the median round trip of a
# command over one multiplexed SSH connection (what hfplay's connection does per probe), and the
# no-change re-run of hfplay with --json, whose per-task start times give every task's time.
# It prints the re-run's wall time, the round trips per host (one per item of every task that
# runs on the host, one for facts) and the upper bound of the saving ((round trips - 1) x round
# trip, i.e. all of them batched into one), also as a share of the wall time.
#
# usage: bench/probe-batching.sh
# env:   BENCH_RUNS=5   BENCH_KEEP_HOSTS=1 (as hfplay-vs-ansible.sh)
#        BENCH_HFPLAY=path (an hfplay binary; default target/release/hfplay, built when stale)
set -euo pipefail
cd "$(dirname "$0")/.."
source cluster/lib.sh
source bench/lib.sh

RUNS=${BENCH_RUNS:-5}
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive integer"
PLAYBOOK=bench/hfplay-vs-ansible.yml
HFPLAY=${BENCH_HFPLAY:-target/release/hfplay}
[ -n "${BENCH_HFPLAY:-}" ] || ensure_hfplay

test_hosts_up
WORK=$(mktemp -d)
cleanup() {
  [ -S "$WORK/cm" ] && ssh -S "$WORK/cm" -O exit x 2>/dev/null || true
  rm -rf "$WORK"
  test_hosts_down
}
trap cleanup EXIT
median() { sort -n | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.4f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

# --- one multiplexed connection to the first host, 50 round trips of a trivial command ---
read -r host ip < <(awk '/^hft-/ { sub("ansible_host=", "", $2); print $1, $2; exit }' "$INV")
KNOWN="$CACHE_DIR/test-hosts/known_hosts"
ssh -i "$SSH_KEY" -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$KNOWN" -o ControlMaster=yes \
  -o ControlPath="$WORK/cm" -fN "root@$ip"
for _ in $(seq 50); do
  t0=$(date +%s.%N)
  ssh -S "$WORK/cm" x 'test -e /etc/hostname' >/dev/null
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f\n", b - a }'
done > "$WORK/rtt"
rtt=$(median < "$WORK/rtt")

# --- hfplay no-change re-runs with --json ---
"$HFPLAY" "$PLAYBOOK" -i "$INV" > /dev/null 2>&1 || die "hfplay run failed"
: > "$WORK/walls"
for ((i = 1; i <= RUNS; i++)); do
  "$HFPLAY" "$PLAYBOOK" -i "$INV" --json > "$WORK/run$i.json" 2>/dev/null || die "hfplay re-run failed"
  python3 - "$WORK/run$i.json" "$PLAYBOOK" >> "$WORK/walls" <<'EOF'
import json, sys, yaml
doc = json.load(open(sys.argv[1]))
changed = sum(s.get("changed", 0) for s in doc["stats"].values())
if changed:
    sys.exit(f"re-run changed {changed}: not a no-change run")
# The module of each task, from the playbook; debug/set_fact/assert run on the controller only.
controller = {"debug", "set_fact", "assert", "fail", "meta"}
keywords = {"name", "loop", "loop_control", "when", "register", "notify", "tags", "vars",
            "changed_when", "failed_when", "become", "ignore_errors", "no_log", "args"}
module = {}
for play in yaml.safe_load(open(sys.argv[2])):
    for t in play.get("tasks", []):
        module[t["name"]] = next(k for k in t if k not in keywords).split(".")[-1]
# Round trips per host: one per item of a host task (a loop result is a list), one for facts.
trips = 0
for play in doc["plays"]:
    for t in play["tasks"]:
        if module.get(t["task"]) in controller:
            continue
        for r in list(t["hosts"].values())[:1]:
            trips += len(r) if isinstance(r, list) else 1
print(f'{doc["elapsed_s"]:.3f} {trips}')
EOF
done
wall=$(cut -d' ' -f1 "$WORK/walls" | median)
trips=$(cut -d' ' -f2 "$WORK/walls" | sort -n | tail -1)
saving=$(awk -v n="$trips" -v r="$rtt" 'BEGIN { printf "%.3f", (n > 1 ? n - 1 : 0) * r }')
{
  echo "# probe batching, upper bound: $PLAYBOOK on $(grep -c '^hft-' "$INV") hosts; $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); medians of $RUNS"
  printf '%-44s %10s\n' "multiplexed SSH round trip (median of 50)" "${rtt}s"
  printf '%-44s %10s\n' "no-change re-run, wall (hosts in parallel)" "${wall}s"
  printf '%-44s %10s\n' "round trips per host (task items, facts)" "$trips"
  printf '%-44s %10s\n' "most batching can save per host" "${saving}s"
  printf '%-44s %9s%%\n' "  as a share of the re-run" "$(awk -v s="$saving" -v w="$wall" 'BEGIN { printf "%.1f", 100 * s / w }')"
}
