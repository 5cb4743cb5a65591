#!/usr/bin/env bash
# Removes one host from the running local cluster, drained first: playbooks/drain.yml hands its
# work over (worker: warm shutdown; scheduler host: leaves the heir line, hands over if it
# leads; queue node: leaves the quorum queues and the RabbitMQ cluster; its KV ring nodes
# leave the ring), then its container goes and inventory/local no longer names it. The
# operator's next command makes the others forget it (balancers, broker URLs, /etc/hosts):
#   hfplay playbooks/site.yml -i inventory/local
# usage: cluster/remove.sh HOST   (make local-remove HOST=...)
#   NO_DRAIN=1: skip the drain (the host is already dead)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need_root
host=${1:-}
[ -n "$host" ] || die "usage: cluster/remove.sh HOST"
[ -s "$HOSTS_FILE" ] || die "no local cluster ($HOSTS_FILE missing): make local-up first"
mapfile -t HOSTS < <(cluster_hosts)
line=$(printf '%s\n' "${HOSTS[@]}" | awk -v h="$host" '$1 == h') || true
[ -n "$line" ] || die "$host is not a host of the local cluster ($(printf '%s\n' "${HOSTS[@]}" | awk '{ print $1 }' | tr '\n' ' '))"
read -r _ _ group <<< "$line"
left=$(printf '%s\n' "${HOSTS[@]}" | awk -v g="$group" '$3 == g' | wc -l)
case $group in
  db) die "the db group is a fixed pair: $host cannot be removed" ;;
  # 3 queue nodes: a quorum queue majority and the DB failover's witness majority survive one loss
  queue) min=3 ;;
  scheduler) min=2 ;;   # the heir line needs a standby
  *) min=1 ;;
esac
[ "$left" -gt "$min" ] || die "group $group has $left hosts, at least $min must stay: $host is not removed"
if [ -z "${NO_DRAIN:-}" ]; then
  log "draining $host (playbooks/drain.yml)"
  HFPLAY=${HFPLAY:-$REPO_ROOT/target/release/hfplay}
  [ -x "$HFPLAY" ] || die "no hfplay at $HFPLAY (make build)"
  (cd "$REPO_ROOT" && "$HFPLAY" playbooks/drain.yml -i inventory/local --limit "$host") \
    || die "draining $host failed: it stays in the cluster (fix, or NO_DRAIN=1 when the host is dead)"
fi
{ grep '^#' "$HOSTS_FILE" || true; printf '%s\n' "${HOSTS[@]}" | awk -v h="$host" '$1 != h'; } > "$HOSTS_FILE.tmp"
mv "$HOSTS_FILE.tmp" "$HOSTS_FILE"
# Its TLS key and certificate retire with it (a host added later under this name gets new ones).
rm -f "$INVENTORY_DIR/.secrets/tls/$host".{crt,key,san}
WORKERS= "$CLUSTER_DIR/up.sh"
info "next: hfplay playbooks/site.yml -i inventory/local   (the others forget $host)"
