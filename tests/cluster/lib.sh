# shellcheck shell=bash
# Helpers for the cluster tests (sourced): ssh into local-cluster hosts, read the inventory,
# parse hfplay's --json output.
TESTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$TESTS_DIR/../../cluster/lib.sh"
HFPLAY="${HFPLAY:-$REPO_ROOT/target/release/hfplay}"
INV="$INVENTORY_DIR/hosts.ini"

step() { printf '\n\033[1;35m### %s  (%s)\033[0m\n' "$*" "$(date -u +%T)"; }
pass() { printf '\033[1;32mPASS\033[0m %s\n' "$*"; }
fail() { printf '\033[1;31mFAIL\033[0m %s\n' "$*" >&2; exit 1; }

# ip of an inventory host (from the cluster's fixed layout)
host_ip() { cluster_hosts | awk -v h="$1" '$1 == h { print $2 }'; }
# hosts of a group, one per line
group_hosts() { cluster_hosts | awk -v g="$1" '$3 == g { print $1 }'; }

# hssh HOST CMD...: run a command as root on a cluster host over SSH (the project's key).
hssh() {
  local h=$1; shift
  ssh -i "$SSH_KEY" -o UserKnownHostsFile="$SSH_KNOWN_HOSTS" -o StrictHostKeyChecking=yes \
    -o BatchMode=yes -o ConnectTimeout=10 -o LogLevel=ERROR "root@$(host_ip "$h")" "$@"
}

# psql on the current primary (as postgres, airflow DB): hpsql SQL
hpsql() {
  local db
  for db in $(group_hosts db); do
    if [ "$(hssh "$db" "cd / && sudo -u postgres psql -Atqc 'select pg_is_in_recovery()'" 2>/dev/null)" = f ]; then
      hssh "$db" "cd / && sudo -u postgres psql -d airflow -Atq -F '|' -c \"$1\""
      return
    fi
  done
  fail "no Postgres primary found"
}

AIRFLOW_CMD="sudo -u airflow env AIRFLOW_HOME=/opt/airflow /opt/airflow/venv/bin/airflow"

# json_changed FILE: prints "host changed" for every host of an hfplay --json document
json_changed() {
  python3 -c 'import json,sys
d = json.load(open(sys.argv[1]))
for h, s in sorted(d["stats"].items()): print(h, s["changed"], s["failed"], s["unreachable"])' "$1"
}
