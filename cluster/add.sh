#!/usr/bin/env bash
# Adds one host of a group to the running local cluster: the next free name and address of the
# group, its container (cluster/up.sh), and inventory/local (as an operator edits
# inventory/prod). Nothing is deployed onto it yet: that is the operator's next command,
#   hfplay playbooks/site.yml -i inventory/local
# which also tells the other hosts (/etc/hosts, balancers, broker URLs).
# usage: cluster/add.sh GROUP   (queue, scheduler, worker, web; make local-add GROUP=...)
# The new host's name is the last line printed.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need_root
group=${1:-}
case $group in
  queue|scheduler|worker|web) ;;
  db) die "the db group is a fixed pair (primary + synchronous standby): a third node is not supported" ;;
  *) die "usage: cluster/add.sh GROUP (queue, scheduler, worker or web; got '${group}')" ;;
esac
[ -s "$HOSTS_FILE" ] || die "no local cluster ($HOSTS_FILE missing): make local-up first"
mapfile -t HOSTS < <(cluster_hosts)
prefix=$(group_prefix "$group"); base=$(group_base "$group"); max=$(group_max "$group")
n=1
while printf '%s\n' "${HOSTS[@]}" | awk '{ print $1 }' | grep -qx "$prefix$n"; do n=$((n + 1)); done
[ "$n" -le "$max" ] || die "group $group is full ($max hosts: addresses $HF_PREFIX.$((base + 1))..$((base + max)))"
name="$prefix$n"; ip="$HF_PREFIX.$((base + n))"
log "adding $name ($ip) to group $group"
{ grep '^#' "$HOSTS_FILE" || true; printf '%s\n' "${HOSTS[@]}" "$name $ip $group"; } > "$HOSTS_FILE.tmp"
mv "$HOSTS_FILE.tmp" "$HOSTS_FILE"
WORKERS= "$CLUSTER_DIR/up.sh"
info "next: hfplay playbooks/site.yml -i inventory/local   (deploys $name, tells the others)"
echo "$name"
