#!/usr/bin/env bash
# hfplay vs ansible-playbook over the corpus of public roles (shared/roles-corpus), with the
# playbooks and variables of the compatibility suite (tests/compat/README.md). Per role and
# tool, BENCH_RUNS times, interleaved: a fresh run (on a container created anew from the base
# image, tests/hosts.sh fresh) and a no-change re-run. Prints per role the medians and the
# ansible/hfplay ratios, and the median of the per-role ratios, fresh and re-run; and per role
# the seconds of hfplay's fresh run spent in apt tasks, with the fresh ratio they leave possible.
# A run that fails, a fresh run that changes nothing or a re-run that changes something leaves
# that role out of the medians (said in the table); it is not an error of the bench.
#
# Before the timed runs, one untimed fresh run of each role with ansible-playbook
# (BENCH_WARMUP=0: none) fills the suite's apt cache (hfc-aptcache, .cache/apt-cacher-ng-hfc),
# so that neither tool is timed downloading packages from Debian. Both tools run with
# bench/ansible.cfg (pipelining, ControlPersist: each tool's re-run reuses the master of its fresh
# run, forks 16); Ansible with the json callback and hfplay with --json, as in the suite.
#
# usage: bench/roles-corpus.sh
# env:   BENCH_RUNS=3   BENCH_WARMUP=1   BENCH_KEEP_HOSTS=1 (leave the hosts up)
#        HFPLAY=path (default target/release/hfplay, built when missing or stale)
#        COMPAT_ROLES="a b" (only these roles)   COMPAT_TIMEOUT=1800 (seconds per run)
set -euo pipefail
cd "$(dirname "$0")/.."
source cluster/lib.sh
source bench/lib.sh
source tests/compat/lib.sh
need_root

RUNS=${BENCH_RUNS:-3}
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive integer"
select_roles
compat_tools
OUT_DIR=bench/results
mkdir -p "$OUT_DIR" "$HOSTS_DIR"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
LOG="$OUT_DIR/roles-corpus-$STAMP.log"
RUN_DIR=$(mktemp -d /tmp/hfc-bench.XXXX)

# the suite's hosts: one user at a time (tests/compat/run.sh takes the same lock)
exec 6>"$HOSTS_DIR/compat.lock"
flock -n 6 || die "the compatibility suite or another bench uses the hfc hosts (lock $HOSTS_DIR/compat.lock)"
cleanup() {
  cp_cleanup
  rm -rf "$RUN_DIR"
  [ "${BENCH_KEEP_HOSTS:-0}" = 1 ] || hosts_down
}
trap cleanup EXIT

nonempty() { grep . || true; }
median() { sort -n | awk '{ a[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print a[(NR + 1) / 2]; else printf "%.2f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.1f", a / b }'; }

# usage: pkg_secs JSON TOTAL   seconds an hfplay run spent in apt tasks (their results carry
# `cache_updated`; a task lasts until the next one starts, the last until the run's TOTAL): the
# package manager's own work on the host, which no tool can skip
pkg_secs() {
  python3 - "$1" "$2" <<'PY'
import json, sys
t = open(sys.argv[1]).read()
doc = json.loads(t[t.index("{"):])
tasks = [x for p in doc.get("plays", []) for x in p.get("tasks", [])]
def apt(res):
    items = res if isinstance(res, list) else [res]
    return any(isinstance(i, dict) and "cache_updated" in i for i in items)
s = 0.0
for i, x in enumerate(tasks):
    end = tasks[i + 1]["start_s"] if i + 1 < len(tasks) else float(sys.argv[2])
    if any(apt(r) for r in x.get("hosts", {}).values()):
        s += end - x["start_s"]
print(f"{s:.1f}")
PY
}

# usage: timed ROLE TOOL KIND   one run, appended to the log; prints its seconds, or fails
timed() {
  local role=$1 tool=$2 kind=$3 host out rc=0 changed secs
  host=$(role_host "$role" "$tool")
  out="$RUN_DIR/$role-$tool-$kind"
  [ "$kind" != rerun ] || [ -f "$RUN_DIR/$role-$tool.ini" ] || return 1
  if [ "$kind" != rerun ]; then
    hosts_fresh "$host" 2>> "$LOG" || { echo "### $role $tool: tests/hosts.sh fresh $host failed" >> "$LOG"; return 1; }
    prepare_host "$host" >> "$LOG" 2>&1 || { echo "### $role $tool: prepare_host $host failed" >> "$LOG"; return 1; }
    host_inventory "$host" "$RUN_DIR/$role-$tool.ini"
  fi
  mapfile -t args < <(role_vars_args "$role")
  local AN_VENV
  AN_VENV=$(role_reference_venv "$role") || return 1
  run_tool "$tool" "$RUN_DIR/$role-$tool.ini" "$(role_playbook "$role")" "$out" ${args[@]+"${args[@]}"} || rc=$?
  secs=$(cat "$out.time"); changed=$(json_changed "$out.json")
  { echo "### $role $tool $kind: $secs s, rc=$rc, changed=$changed"; grep -v '^\s*$' "$out.err" | tail -5 || true; } >> "$LOG"
  [ "$rc" = 0 ] || return 1
  # (timed runs in a subshell: the apt seconds go through a file)
  [ "$tool$kind" != hffresh ] || pkg_secs "$out.json" "$secs" >> "$RUN_DIR/$role.pkg" 2>> "$LOG" || true
  case $kind in
    fresh|warmup) [ "$changed" -gt 0 ] || return 1 ;;
    rerun) [ "$changed" -eq 0 ] || return 1 ;;
  esac
  echo "$secs"
}

{
  echo "# roles-corpus bench $STAMP: $("$HFPLAY" --version) vs $("$VENV/bin/ansible-playbook" --version 2>/dev/null | sed -n 1p)"
  echo "# $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); runs per measurement: $RUNS; roles: ${ROLES[*]}"
} >> "$LOG"
log "roles-corpus bench: ${#ROLES[@]} roles, $RUNS runs each; log $LOG"

declare -A T=() BAD=()
for role in "${ROLES[@]}"; do
  if [ "${BENCH_WARMUP:-1}" = 1 ]; then
    timed "$role" an warmup >/dev/null || true
  fi
  for ((i = 1; i <= RUNS; i++)); do
    for tool in hf an; do
      for kind in fresh rerun; do
        [ -z "${BAD[$role-$tool]:-}" ] || continue
        if s=$(timed "$role" "$tool" "$kind"); then T[$role-$tool-$kind]+="$s "
        else BAD[$role-$tool]="$kind run $i failed or changed wrongly"; fi
      done
    done
  done
  docker rm -f "$(role_host "$role" hf)" "$(role_host "$role" an)" >/dev/null 2>&1 || true
  printf '    %s done\n' "$role"
done

med() { tr ' ' '\n' <<< "${T[$1]:-}" | nonempty | median; }
RF=() RR=()
{
  echo
  echo "# hfplay vs ansible-playbook on the role corpus: medians of $RUNS (s); ratio = ansible / hfplay"
  printf '%-26s %9s %9s %7s %9s %7s   %9s %9s %7s\n' role "hf fresh" "an fresh" ratio "hf apt" ceiling "hf rerun" "an rerun" ratio
  for role in "${ROLES[@]}"; do
    hf=$(med "$role-hf-fresh"); af=$(med "$role-an-fresh"); hr=$(med "$role-hf-rerun"); ar=$(med "$role-an-rerun")
    note=""
    if [ -n "${BAD[$role-hf]:-}${BAD[$role-an]:-}" ]; then
      note="  (left out: ${BAD[$role-hf]:+hfplay ${BAD[$role-hf]}}${BAD[$role-hf]:+${BAD[$role-an]:+; }}${BAD[$role-an]:+ansible ${BAD[$role-an]}})"
      rf="-"; rr="-"
    else
      rf=$(ratio "$af" "$hf"); rr=$(ratio "$ar" "$hr")
      RF+=("$rf"); RR+=("$rr")
    fi
    hp=$({ cat "$RUN_DIR/$role.pkg" 2>/dev/null || true; } | nonempty | median)
    printf '%-26s %9s %9s %6sx %9s %6sx   %9s %9s %6sx%s\n' "$role" "$hf" "$af" "$rf" "$hp" "$(ratio "$af" "$hp")" "$hr" "$ar" "$rr" "$note"
  done
  mf=$(printf '%s\n' ${RF[@]+"${RF[@]}"} | nonempty | median); mr=$(printf '%s\n' ${RR[@]+"${RR[@]}"} | nonempty | median)
  echo "median of the ratios over ${#RF[@]} roles: fresh ${mf}x, re-run ${mr}x (targets: >= 5x fresh, >= 30x re-run)"
  echo "hf apt: hfplay's fresh-run seconds in apt tasks (the package manager's work on the host);"
  echo "ceiling: ansible fresh / hf apt, the fresh ratio of a tool that took no time of its own"
  echo "all runs (s):"
  for role in "${ROLES[@]}"; do
    echo "  $role: hfplay fresh ${T[$role-hf-fresh]:-}| re-run ${T[$role-hf-rerun]:-}| ansible fresh ${T[$role-an-fresh]:-}| re-run ${T[$role-an-rerun]:-}"
  done
  echo "log: $LOG"
} | tee -a "$LOG"
