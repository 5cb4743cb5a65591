# shellcheck shell=bash
# Shared by tests/compat/run.sh and bench/roles-corpus.sh (sourced after cluster/lib.sh and
# bench/lib.sh): the role corpus, its hosts (a tests/hosts.sh set of its own), and one run of
# either tool on one host with the JSON output the suite compares.

COMPAT_DIR="$REPO_ROOT/tests/compat"
# The corpus of unmodified public roles (read-only): shared/ beside the repository.
CORPUS=${COMPAT_CORPUS:-$REPO_ROOT/../shared/roles-corpus}
[ -d "$CORPUS" ] || CORPUS=/work/shared/roles-corpus
[ -d "$CORPUS" ] || die "no role corpus (set COMPAT_CORPUS=path/to/roles-corpus)"
CORPUS=$(cd "$CORPUS" && pwd)

# Every role of the corpus, sorted: a role's place in this list numbers its hosts.
mapfile -t ALL_ROLES < <(cd "$CORPUS" && for d in */; do [ -f "$d/tasks/main.yml" ] && echo "${d%/}"; done | LC_ALL=C sort)
[ ${#ALL_ROLES[@]} -gt 0 ] || die "no roles in $CORPUS"

# The suite's hosts: their own tests/hosts.sh set (containers hfc-1..hfc-2n and hfc-aptcache on
# network heirflow-hfc, 172.28.0.0/24 unless COMPAT_NET says otherwise), two per role.
export HFT_NAME=hfc HFT_NET=${COMPAT_NET:-172.28.0} HFT_APT_CACHE=1 HFT_HOSTS=$((2 * ${#ALL_ROLES[@]}))
HOSTS_DIR="$CACHE_DIR/test-hosts-hfc"

# usage: select_roles   sets ROLES from COMPAT_ROLES (names, space or comma separated), else all
select_roles() {
  local r
  ROLES=()
  if [ -n "${COMPAT_ROLES:-}" ]; then
    for r in ${COMPAT_ROLES//,/ }; do
      role_index "$r" >/dev/null || die "COMPAT_ROLES: no role $r in $CORPUS (${ALL_ROLES[*]})"
      ROLES+=("$r")
    done
  else
    ROLES=("${ALL_ROLES[@]}")
  fi
}

role_index() { local i; for i in "${!ALL_ROLES[@]}"; do [ "${ALL_ROLES[$i]}" = "$1" ] && { echo $((i + 1)); return 0; }; done; return 1; }
# usage: role_host ROLE hf|an   the container of that tool for the role
role_host() { local i; i=$(role_index "$1"); [ "$2" = hf ] && echo "hfc-$((2 * i - 1))" || echo "hfc-$((2 * i))"; }
host_ip() { echo "$HFT_NET.$((10 + ${1#hfc-}))"; }

# The playbook of a role: tests/compat/playbooks/ROLE.yml if there is one, else the role's own
# molecule/default/converge.yml, unchanged.
role_playbook() {
  if [ -f "$COMPAT_DIR/playbooks/$1.yml" ]; then echo "$COMPAT_DIR/playbooks/$1.yml"
  else echo "$CORPUS/$1/molecule/default/converge.yml"; fi
}
# Extra variables of a role (tests/compat/vars/ROLE.yml, README.md says why), as arguments.
role_vars_args() { [ ! -f "$COMPAT_DIR/vars/$1.yml" ] || printf '%s\n' -e "@$COMPAT_DIR/vars/$1.yml"; }

# The Ansible a role is compared with: the pinned one (bench/lib.sh ensure_ansible), unless the
# role needs syntax that ansible-core has since removed. Then the last release that loads it,
# with the `ansible` package built on that core (its collections: ansible.posix's json callback).
# jnv.unattended-upgrades: bare `include:`, removed in ansible-core 2.16.
declare -A ROLE_REFERENCE=([jnv.unattended-upgrades]="2.15.13 8.7.0")
# usage: role_reference_venv ROLE   the reference venv of the role (installed when missing)
role_reference_venv() {
  local ref=${ROLE_REFERENCE[$1]:-}
  if [ -z "$ref" ]; then echo "$VENV"; return; fi
  ANSIBLE_CORE_VERSION=${ref% *} ANSIBLE_VERSION=${ref#* } "$REPO_ROOT/scripts/ansible-venv.sh" | sed 's|/bin/python$||'
}

# usage: hosts_fresh NAME...   these hosts removed and created anew from the base image
hosts_fresh() { "$REPO_ROOT/tests/hosts.sh" fresh "$@" >/dev/null; }
# usage: prepare_host NAME   python3-apt installed on a fresh host, for both tools alike
# (COMPAT_PYTHON_APT=0: not). Ansible's apt module needs it: without it, `--check` fails at the
# first apt task, and the real run installs it after an `apt-get update` of its own, so that
# the role's first `update_cache` finds a fresh cache and reports ok where it would report
# changed. The package lists are then removed again and the lists directory gets back the
# image's time, so that the roles' cache updates still do their work. Its partial/ and lock
# stay: Ansible takes the directory's time for the last update, and apt creating them anew
# (on a first look at the cache) would make an empty cache look just updated.
# That time is at most a week ago, as on a cloud image: when the base image was built less than
# `cache_valid_time` ago, Ansible's apt would take the empty lists for fresh and find no package
# (jnv.unattended-upgrades, 3600 s), whatever the tool.
prepare_host() {
  [ "${COMPAT_PYTHON_APT:-1}" = 1 ] || return 0
  docker exec "$1" sh -ec 'm=$(stat -c %Y /var/lib/apt/lists); w=$(($(date +%s) - 7 * 86400)); [ "$m" -le "$w" ] || m=$w
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-apt >/dev/null
    apt-get clean
    find /var/lib/apt/lists -maxdepth 1 -type f ! -name lock -delete
    touch -d "@$m" /var/lib/apt/lists'
}

hosts_down() { "$REPO_ROOT/tests/hosts.sh" down >/dev/null 2>&1 || true; }

# usage: host_inventory NAME FILE   a one-host inventory (root, the project key, its host keys)
host_inventory() {
  cat > "$2" <<EOF
$1 ansible_host=$(host_ip "$1")

[all:vars]
ansible_user=root
ansible_ssh_private_key_file=$SSH_KEY
ansible_ssh_common_args='-o StrictHostKeyChecking=yes -o UserKnownHostsFile=$HOSTS_DIR/known_hosts'
EOF
}

# usage: compat_tools   ansible-core and the `ansible` package (its collections: community.mysql,
# ...) in .cache/ansible-venv; HFPLAY (given, else target/release/hfplay built when stale),
# made absolute; then compat_env.
compat_tools() {
  ensure_ansible
  if [ -n "${HFPLAY:-}" ]; then
    [ -x "$HFPLAY" ] || die "HFPLAY=$HFPLAY is not an executable"
  else
    ensure_hfplay; HFPLAY=$PWD/target/release/hfplay
  fi
  HFPLAY=$(realpath "$HFPLAY")
  compat_env
}

# Settings of both tools: bench/ansible.cfg (pipelining, ControlPersist, forks 16, python3),
# roles from the corpus; hfplay runs modules it lacks through this Ansible installation.
compat_env() {
  export ANSIBLE_CONFIG="$REPO_ROOT/bench/ansible.cfg"
  export ANSIBLE_ROLES_PATH="$CORPUS"
  export HFPLAY_ANSIBLE_PYTHON="$VENV/bin/python"
  export ANSIBLE_NOCOLOR=1
  CP_ROOT=$(mktemp -d /tmp/hfc-cp.XXXX)   # ControlPersist sockets (short path)
}

# usage: host_cp_dir INVENTORY   the control-socket directory (ANSIBLE_SSH_CONTROL_PATH_DIR) of
# both tools' runs to the inventory's host, one per container: the runs on one container reuse
# their masters (bench/ansible.cfg's ControlPersist, as Ansible's default), a container created
# anew at that address gets a new directory
host_cp_dir() {
  local host id d
  host=$(awk 'NR == 1 { print $1 }' "$1")
  id=$(docker inspect -f '{{.Id}}' "$host" 2>/dev/null | cut -c1-12)
  d="$CP_ROOT/$host-${id:-none}"
  mkdir -p "$d"
  echo "$d"
}

# usage: cp_cleanup   the masters under CP_ROOT told to exit, the directory removed
cp_cleanup() {
  [ -n "${CP_ROOT:-}" ] && [ -d "$CP_ROOT" ] || return 0
  find "$CP_ROOT" -type s 2>/dev/null | while read -r s; do
    ssh -S "$s" -O exit hfc-master >/dev/null 2>&1 < /dev/null || true
  done
  rm -rf "$CP_ROOT"
}

# Monotonic clock (seconds since boot, /proc/uptime): this machine's wall clock has been seen
# to jump back an hour in the middle of a run (cluster/lib.sh `now` is the wall clock).
mnow() { local up _; read -r up _ < /proc/uptime; echo "$up"; }
melapsed() { awk -v a="$1" -v b="$(mnow)" 'BEGIN { printf "%.2f\n", b - a }'; }

# usage: run_tool hf|an INVENTORY PLAYBOOK OUT [ARGS...]
# One run, limited to COMPAT_TIMEOUT seconds (default 1800): OUT.json (stdout: hfplay --json /
# the ansible.posix.json callback), OUT.err, OUT.rc, OUT.time (seconds). Returns the exit code.
# ansible-playbook comes from AN_VENV (the role's reference venv), else VENV.
run_tool() {
  local tool=$1 inv=$2 pb=$3 out=$4 t0 rc=0
  shift 4
  local cp
  cp=$(host_cp_dir "$inv")
  t0=$(mnow)
  if [ "$tool" = hf ]; then
    ANSIBLE_SSH_CONTROL_PATH_DIR="$cp" \
      timeout "${COMPAT_TIMEOUT:-1800}" "$HFPLAY" --json -i "$inv" "$pb" "$@" > "$out.json" 2> "$out.err" || rc=$?
  else
    ANSIBLE_STDOUT_CALLBACK=ansible.posix.json ANSIBLE_SSH_CONTROL_PATH_DIR="$cp" \
      timeout "${COMPAT_TIMEOUT:-1800}" "${AN_VENV:-$VENV}/bin/ansible-playbook" -i "$inv" "$pb" "$@" > "$out.json" 2> "$out.err" || rc=$?
  fi
  melapsed "$t0" > "$out.time"
  echo "$rc" > "$out.rc"
  return "$rc"
}

# usage: json_changed FILE   the recap's changed= total of a run's JSON document (-1: no document)
json_changed() {
  python3 -c 'import json, sys
t = open(sys.argv[1]).read()
try:
    d = json.loads(t[t.index("{"):])
    print(sum(v.get("changed", 0) for v in d.get("stats", {}).values()))
except Exception:
    print(-1)' "$1"
}
