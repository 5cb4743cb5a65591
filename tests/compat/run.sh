#!/usr/bin/env bash
# The compatibility suite (issue 13): hfplay runs the public roles of the corpus
# (shared/roles-corpus, unmodified) with the same changes as ansible-playbook.
#
# Per role, on two fresh SSH hosts from the project's base image (tests/hosts.sh set `hfc`),
# hfplay on one and ansible-playbook on the other, the same playbook (the role's
# molecule/default/converge.yml, or tests/compat/playbooks/ROLE.yml), in this order:
#   check-fresh  --check on the fresh host; then the host is created anew (tests/hosts.sh fresh)
#   real         the real run on the fresh host
#   rerun        the same again
#   check-conv   --check on the converged host
# and checks (tests/compat/compare.py), for hfplay, Ansible's result shown beside each:
#   converge                     exit 0, no failed task
#   changed set = ansible's      the tasks that reported changed (by name, with multiplicity)
#   re-run changed=0
#   --check converged changed=0
#   --check fresh = real run     the same changed set as hfplay's real run (up to a task that
#                                ran for real and stopped the check, see compare.py)
#   --check fresh leaves nothing no scratch directory, package lists or update stamp afterwards
# Exit 1 when any check fails. Roles run in parallel (COMPAT_JOBS at a time); the hosts, the
# network and the apt proxy are removed at the end (the apt cache stays in .cache/).
#
# usage: tests/compat/run.sh
# env:   HFPLAY=path (default: target/release/hfplay, built when missing or stale)
#        COMPAT_ROLES="a b"   only these roles       COMPAT_JOBS=3   roles at a time
#        COMPAT_TIMEOUT=1800  seconds per run        COMPAT_KEEP_HOSTS=1  leave the hosts up
#        COMPAT_RESULTS=dir   (default .cache/compat-results/<UTC time>; `latest` links to it)
#        COMPAT_CORPUS=dir    COMPAT_NET=172.28.0    ANSIBLE_CORE_VERSION=2.19.14
set -euo pipefail
cd "$(dirname "$0")/../.."
source cluster/lib.sh
source bench/lib.sh
source tests/compat/lib.sh
need_root

JOBS=${COMPAT_JOBS:-3}
[[ "$JOBS" =~ ^[1-9][0-9]*$ ]] || die "COMPAT_JOBS must be a positive integer"
select_roles
compat_tools

# the hfc hosts: one user at a time (bench/roles-corpus.sh takes the same lock)
mkdir -p "$HOSTS_DIR"
exec 6>"$HOSTS_DIR/compat.lock"
flock -n 6 || die "another compatibility suite or bench/roles-corpus.sh uses the hfc hosts (lock $HOSTS_DIR/compat.lock)"

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS=${COMPAT_RESULTS:-$CACHE_DIR/compat-results/$STAMP}
mkdir -p "$RESULTS"
[ -n "${COMPAT_RESULTS:-}" ] || ln -sfn "$STAMP" "$CACHE_DIR/compat-results/latest"

# --- cleanup: our role jobs (and what they started), then the hosts ---
JOB_PIDS=()
descendants() { local c; for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do descendants "$c"; echo "$c"; done; }
cleanup() {
  local p
  for p in "${JOB_PIDS[@]}"; do
    kill -0 "$p" 2>/dev/null || continue
    kill $(descendants "$p") "$p" 2>/dev/null || true
  done
  cp_cleanup
  [ "${COMPAT_KEEP_HOSTS:-0}" = 1 ] || hosts_down
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "compat: ${#ROLES[@]} roles, $JOBS at a time; $("$HFPLAY" --version) vs $("$VENV/bin/ansible-playbook" --version 2>/dev/null | sed -n 1p); results in $RESULTS"

# usage: tool_runs ROLE hf|an HOST DIR PLAYBOOK ARGS...   the four runs of one tool
tool_runs() {
  local role=$1 tool=$2 host=$3 dir=$4 pb=$5
  shift 5
  host_inventory "$host" "$dir/$tool.ini"
  prepare_host "$host" >> "$dir/hosts.log" 2>&1 || echo "prepare_host $host failed" >> "$dir/hosts.log"
  run_tool "$tool" "$dir/$tool.ini" "$pb" "$dir/$tool-check-fresh" --check "$@" || true
  # what a check run must not leave: scratch directories, package lists, a touched update stamp
  docker exec "$host" sh -c 'ls -d /var/tmp/hfplay-check-* /var/lib/apt/lists/*_Packages* /var/lib/apt/periodic/update-success-stamp 2>/dev/null' \
    > "$dir/$tool-check-fresh.leftovers" || true
  hosts_fresh "$host" 2>> "$dir/hosts.log" || { echo "tests/hosts.sh fresh $host failed" >> "$dir/$tool-real.err"; return 1; }
  prepare_host "$host" >> "$dir/hosts.log" 2>&1 || echo "prepare_host $host failed" >> "$dir/hosts.log"
  run_tool "$tool" "$dir/$tool.ini" "$pb" "$dir/$tool-real" "$@" || true
  run_tool "$tool" "$dir/$tool.ini" "$pb" "$dir/$tool-rerun" "$@" || true
  run_tool "$tool" "$dir/$tool.ini" "$pb" "$dir/$tool-check-conv" --check "$@" || true
}

# usage: role_job ROLE   both tools' runs of a role (in parallel), then its checks
role_job() {
  local role=$1 dir="$RESULTS/$1" hf an pb args=() t0
  t0=$(mnow)
  mkdir -p "$dir"
  hf=$(role_host "$role" hf); an=$(role_host "$role" an)
  pb=$(role_playbook "$role")
  mapfile -t args < <(role_vars_args "$role")
  local AN_VENV
  AN_VENV=$(role_reference_venv "$role") || { printf '== %s\n  reference                    FAIL  its Ansible could not be installed\n' "$role" > "$dir/checks.txt"; return 1; }
  echo "$pb ${args[*]}" > "$dir/playbook"
  echo "reference: $("$AN_VENV/bin/ansible-playbook" --version 2>/dev/null | sed -n 1p)" >> "$dir/playbook"
  if ! hosts_fresh "$hf" "$an" 2>> "$dir/hosts.log"; then
    printf '== %s\n  hosts                        FAIL  tests/hosts.sh fresh %s %s failed (%s)\n' "$role" "$hf" "$an" "$dir/hosts.log" > "$dir/checks.txt"
    return 1
  fi
  tool_runs "$role" hf "$hf" "$dir" "$pb" ${args[@]+"${args[@]}"} &
  local p1=$!
  tool_runs "$role" an "$an" "$dir" "$pb" ${args[@]+"${args[@]}"} &
  local p2=$!
  wait "$p1" || true; wait "$p2" || true
  local rc=0
  python3 "$COMPAT_DIR/compare.py" "$role" "$dir" > "$dir/checks.txt" 2>&1 || rc=$?
  {
    printf '  times (s): hfplay check-fresh %s real %s rerun %s check-conv %s | ansible check-fresh %s real %s rerun %s check-conv %s\n' \
      "$(cat "$dir/hf-check-fresh.time" 2>/dev/null)" "$(cat "$dir/hf-real.time" 2>/dev/null)" \
      "$(cat "$dir/hf-rerun.time" 2>/dev/null)" "$(cat "$dir/hf-check-conv.time" 2>/dev/null)" \
      "$(cat "$dir/an-check-fresh.time" 2>/dev/null)" "$(cat "$dir/an-real.time" 2>/dev/null)" \
      "$(cat "$dir/an-rerun.time" 2>/dev/null)" "$(cat "$dir/an-check-conv.time" 2>/dev/null)"
    echo "  playbook: $(cat "$dir/playbook")"
  } >> "$dir/checks.txt"
  # the hosts are done with: free them for the next roles
  [ "${COMPAT_KEEP_HOSTS:-0}" = 1 ] || docker rm -f "$hf" "$an" >/dev/null 2>&1 || true
  log "$role done in $(melapsed "$t0") s ($( [ "$rc" = 0 ] && echo pass || echo FAIL))"
  return "$rc"
}

# --- run, COMPAT_JOBS roles at a time ---
T0=$(mnow)
for role in "${ROLES[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
  role_job "$role" &
  JOB_PIDS+=($!)
done
FAILED=()
for i in "${!ROLES[@]}"; do wait "${JOB_PIDS[$i]}" || FAILED+=("${ROLES[$i]}"); done

echo
for role in "${ROLES[@]}"; do cat "$RESULTS/$role/checks.txt" 2>/dev/null || echo "== $role: no result"; done | tee "$RESULTS/summary.txt"
{
  echo
  echo "compat: $(( ${#ROLES[@]} - ${#FAILED[@]} ))/${#ROLES[@]} roles pass every check in $(melapsed "$T0") s${FAILED[*]:+; failing: ${FAILED[*]}}"
  echo "results: $RESULTS"
} | tee -a "$RESULTS/summary.txt"
[ ${#FAILED[@]} -eq 0 ]
