#!/usr/bin/env bash
# hfplay vs ansible-playbook: the same playbook (bench/hfplay-vs-ansible.yml, 32 tasks: files,
# templates, line edits, guarded commands, loops, facts) on the same SSH hosts (tests/hosts.sh,
# 4 containers). Per tool: a fresh run (the bench directory /srv/hfbench removed on every host
# first) and a no-change re-run, N times, interleaved; prints medians and ansible/hfplay ratios.
# Every run must exit 0, a fresh run must change something and a re-run nothing (else: error).
#
# ansible-core comes from PyPI into .cache/ansible-venv (pinned, installed when missing) and
# runs with bench/ansible.cfg: pipelining on, ControlMaster/ControlPersist 60 s, forks 16.
# hfplay is target/release/hfplay (built with cargo build --release when missing or older).
#
# usage: bench/hfplay-vs-ansible.sh
# env:   BENCH_RUNS=5 (runs per measurement)   ANSIBLE_CORE_VERSION=2.19.14
#        BENCH_KEEP_HOSTS=1 (leave the test hosts running; default: removed at the end if this
#        script started them)
#        BENCH_HFPLAY_BASELINE=path/to/hfplay (another hfplay build, e.g. of an older commit:
#        measured interleaved with the other two, and printed with its ratio to this one)
set -euo pipefail
cd "$(dirname "$0")/.."
source cluster/lib.sh
source bench/lib.sh

RUNS=${BENCH_RUNS:-5}
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive integer"
PLAYBOOK=bench/hfplay-vs-ansible.yml
HFPLAY=target/release/hfplay
BASELINE=${BENCH_HFPLAY_BASELINE:-}
[ -z "$BASELINE" ] || [ -x "$BASELINE" ] || die "BENCH_HFPLAY_BASELINE=$BASELINE is not an executable"
TOOLS=(hfplay ansible)
[ -z "$BASELINE" ] || TOOLS+=(baseline)
OUT_DIR=bench/results
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/hfplay-vs-ansible-$(date -u +%Y%m%dT%H%M%SZ).log"

median() { sort -n | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.2f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

# --- tools ---
ensure_ansible
ensure_hfplay

# --- hosts ---
test_hosts_up
trap test_hosts_down EXIT
mapfile -t HOSTS < <(awk '/^hft-/ { print $1 }' "$INV")

export ANSIBLE_CONFIG="$PWD/bench/ansible.cfg"
# ControlPersist sockets of this bench only (short path: sockets have a length limit).
export ANSIBLE_SSH_CONTROL_PATH_DIR=/tmp/hfbench-cp
mkdir -p "$ANSIBLE_SSH_CONTROL_PATH_DIR"

clean_hosts() {
  local h
  for h in "${HOSTS[@]}"; do docker exec "$h" rm -rf /srv/hfbench & done
  wait
}

# recap_changed FILE: total changed= over the PLAY RECAP lines (same format for both tools)
recap_changed() { awk '/ changed=/ { for (i = 1; i <= NF; i++) if ($i ~ /^changed=/) { split($i, a, "="); s += a[2] } } END { print s + 0 }' "$1"; }

# run TOOL KIND: one timed run; prints the seconds
run() {
  local tool=$1 kind=$2 out t0 secs changed
  out=$(mktemp)
  t0=$(now)
  case $tool in
    hfplay) "$HFPLAY" "$PLAYBOOK" -i "$INV" > "$out" 2>&1 || { cat "$out" >&2; die "hfplay $kind run failed"; } ;;
    baseline) "$BASELINE" "$PLAYBOOK" -i "$INV" > "$out" 2>&1 || { cat "$out" >&2; die "baseline hfplay $kind run failed"; } ;;
    ansible) "$VENV/bin/ansible-playbook" -i "$INV" "$PLAYBOOK" > "$out" 2>&1 || { cat "$out" >&2; die "ansible-playbook $kind run failed"; } ;;
  esac
  secs=$(elapsed "$t0")
  changed=$(recap_changed "$out")
  { echo "### $tool $kind: $secs s, changed=$changed"; cat "$out"; } >> "$LOG"
  rm -f "$out"
  case $kind in
    fresh) [ "$changed" -gt 0 ] || die "$tool fresh run changed nothing (see $LOG)" ;;
    rerun) [ "$changed" -eq 0 ] || die "$tool re-run changed $changed (not idempotent, see $LOG)" ;;
  esac
  echo "$secs"
}

declare -A T=([hfplay_fresh]="" [hfplay_rerun]="" [ansible_fresh]="" [ansible_rerun]="" [baseline_fresh]="" [baseline_rerun]="")
log "warm-up (not timed): one fresh run and one re-run per tool"
for tool in "${TOOLS[@]}"; do clean_hosts; run $tool fresh >/dev/null; run $tool rerun >/dev/null; done
for ((i = 1; i <= RUNS; i++)); do
  for tool in "${TOOLS[@]}"; do
    clean_hosts
    T[${tool}_fresh]+="$(run $tool fresh) "
    T[${tool}_rerun]+="$(run $tool rerun) "
  done
  printf '    run %d/%d done\n' "$i" "$RUNS"
done
clean_hosts

med() { tr ' ' '\n' <<< "${T[$1]}" | grep . | median; }
hf=$(med hfplay_fresh); hr=$(med hfplay_rerun); af=$(med ansible_fresh); ar=$(med ansible_rerun)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a / b }'; }
{
  echo
  echo "# hfplay vs ansible-playbook: $PLAYBOOK ($(grep -c '^    - name:' "$PLAYBOOK") tasks, facts gathered) on ${#HOSTS[@]} SSH hosts"
  echo "# $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); $("$HFPLAY" --version); ansible-core $ANSIBLE_CORE_VERSION (pipelining, ControlPersist, forks 16); medians of $RUNS"
  printf '%-16s %12s %12s %10s\n' run hfplay ansible ratio
  printf '%-16s %11ss %11ss %9sx\n' "fresh run" "$hf" "$af" "$(ratio "$af" "$hf")"
  printf '%-16s %11ss %11ss %9sx\n' "no-change re-run" "$hr" "$ar" "$(ratio "$ar" "$hr")"
  echo "all runs (s): hfplay fresh: ${T[hfplay_fresh]}| re-run: ${T[hfplay_rerun]}"
  echo "              ansible fresh: ${T[ansible_fresh]}| re-run: ${T[ansible_rerun]}"
  if [ -n "$BASELINE" ]; then
    bf=$(med baseline_fresh); br=$(med baseline_rerun)
    echo "# baseline $BASELINE ($("$BASELINE" --version)): baseline/hfplay ratio (> 1: this build is faster)"
    printf '%-16s %12s %12s %10s\n' run hfplay baseline ratio
    printf '%-16s %11ss %11ss %9sx\n' "fresh run" "$hf" "$bf" "$(awk -v a="$bf" -v b="$hf" 'BEGIN { printf "%.2f", a / b }')"
    printf '%-16s %11ss %11ss %9sx\n' "no-change re-run" "$hr" "$br" "$(awk -v a="$br" -v b="$hr" 'BEGIN { printf "%.2f", a / b }')"
    echo "all runs (s): baseline fresh: ${T[baseline_fresh]}| re-run: ${T[baseline_rerun]}"
  fi
  echo "log: $LOG"
} | tee -a "$LOG"
