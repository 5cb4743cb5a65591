#!/usr/bin/env bash
# Checks one host's membership after an operator step (tests/cluster/scale-test.sh):
#   present HOST  it does its group's work: a worker consumes the task queue and answers Celery's
#                 ping; a scheduler host
#                 is a live member of both heir lines, its api-server is healthy and in every
#                 balancer; a queue node runs in the RabbitMQ cluster, holds a replica of every
#                 quorum queue and is in every balancer.
#   absent HOST   nothing names it any more: no balancer, no heir line, no RabbitMQ member or
#                 quorum queue replica, no news URL, no /etc/hosts line, no Celery worker.
# Each check is retried for up to 3 minutes (services restarted by the run need a while).
# usage: tests/cluster/scale-check.sh present|absent HOST [GROUP]   (GROUP: for absent)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
mode=${1:-}; host=${2:-}
[ -n "$host" ] && { [ "$mode" = present ] || [ "$mode" = absent ]; } \
  || fail "usage: scale-check.sh present|absent HOST [GROUP]"
group=${3:-$(cluster_hosts | awk -v h="$host" '$1 == h { print $3 }')}
[ -n "$group" ] || fail "$host: no group (give it as the third argument)"
# its address: from the host list, or (once removed) from the group's fixed address block
ip=$(cluster_hosts | awk -v h="$host" '$1 == h { print $2 }')
[ -n "$ip" ] || ip="$HF_PREFIX.$(( $(group_base "$group") + ${host##*[!0-9]} ))"

eventually() {  # eventually WHAT CHECK...: retries CHECK every 5 s for up to 180 s
  local what=$1 i; shift
  for ((i = 0; i < 36; i++)); do "$@" && { pass "$host: $what"; return 0; }; sleep 5; done
  fail "$host: $what (not after 180 s)"
}
airflow_hosts() { group_hosts scheduler; group_hosts worker; group_hosts web; }
first_queue() { group_hosts queue | grep -vx "$host" | head -1; }

heir_members() {  # the live members of heir group $1
  local s; s=$(group_hosts scheduler | grep -vx "$host" | head -1)
  hssh "$s" 'set -a; . /etc/heirflow/heir-supervisor.env; heir-supervisor status --json' 2>/dev/null \
    | python3 -c 'import json, sys
d = json.load(sys.stdin)
for g in d["groups"]:
    if g["group"] == sys.argv[1]:
        print(" ".join(m["member"] for m in g["members"] if m["live"]))' "$1"
}
in_heir_lines() { [[ " $(heir_members scheduler) " == *" $host "* ]] && [[ " $(heir_members dag-processor) " == *" $host "* ]]; }
out_of_heir_lines() { [[ " $(heir_members scheduler) $(heir_members dag-processor) " != *" $host "* ]]; }
balancers_name_it() {  # every Airflow host's haproxy.cfg has a server line for it
  local h
  for h in $(airflow_hosts | grep -vx "$host"); do hssh "$h" "grep -qw 'server $host' /etc/haproxy/haproxy.cfg" || return 1; done
}
nobody_names_it() {  # no host's balancer, /etc/hosts or heir-supervisor news URLs (name or address)
  local h
  for h in $(cluster_hosts | awk '{ print $1 }' | grep -vx "$host"); do
    hssh "$h" "! grep -qwF -e '$host' -e '$ip' /etc/hosts /etc/haproxy/haproxy.cfg /etc/heirflow/*.env 2>/dev/null" || return 1
  done
}
rmq_members() { hssh "$(first_queue)" "rabbitmqctl -q cluster_status --formatter json" | python3 -c 'import json,sys; print(" ".join(json.load(sys.stdin)["running_nodes"]))'; }
qq_without() {  # the quorum queues of vhost airflow whose replicas do (present) or do not (absent) include it
  hssh "$(first_queue)" "rabbitmqctl -q list_queues -p airflow name type members --formatter json" | python3 -c 'import json, sys
want = sys.argv[2] == "present"
qs = [q for q in json.load(sys.stdin) if q.get("type") == "quorum"]
bad = [q["name"] for q in qs if (("rabbit@" + sys.argv[1]) in q.get("members", [])) != want]
print(len(qs), " ".join(bad))' "$host" "$mode"
}
qq_ok() { read -r n bad < <(qq_without); [ "$n" -ge 1 ] && [ -z "$bad" ]; }
in_rabbitmq() { [[ " $(rmq_members) " == *" rabbit@$host "* ]]; }
out_of_rabbitmq() { [[ " $(rmq_members) " != *" rabbit@$host "* ]]; }
# Workers: one consumer each on the task queue, and this one answers a ping addressed to it.
# Not "every worker answers a broadcast ping": a worker's remote-control queue is a classic
# (unreplicated) queue, lost with the RabbitMQ node that held it, and Celery does not declare it
# again while its connection lives (seen after the chaos test's queue-node kills: those workers
# ran tasks but no longer answered `inspect ping`).
task_consumers() {
  hssh "$(first_queue)" "rabbitmqctl -q list_queues -p airflow name consumers --formatter json" \
    | python3 -c 'import json,sys; print(sum(q["consumers"] for q in json.load(sys.stdin) if q["name"] == "default"))'
}
it_pongs() {
  hssh "$(group_hosts worker | grep -vx "$host" | head -1)" "cd /opt/airflow && sudo -u airflow env AIRFLOW_HOME=/opt/airflow /opt/airflow/venv/bin/celery -A airflow.providers.celery.executors.celery_executor.app inspect ping -t 10 -j -d celery@$host" 2>/dev/null | grep -q '"pong"'
}
workers_answer() { [ "$(task_consumers)" -eq "$(group_hosts worker | grep -cvx "$host")" ] && ! it_pongs; }
new_worker_answers() { [ "$(task_consumers)" -eq "$(group_hosts worker | wc -l)" ] && it_pongs; }
api_healthy() { hssh "$host" "curl -fsS -m 5 -o /dev/null --cacert /etc/heirflow/tls/ca.crt https://127.0.0.1:8080/api/v2/monitor/health"; }

case $mode/$group in
  present/worker) eventually "one task-queue consumer per worker, the new one too, and it answers Celery's ping" new_worker_answers ;;
  present/scheduler)
    eventually "api-server healthy" api_healthy
    eventually "in every balancer" balancers_name_it
    eventually "a live member of the scheduler and dag-processor heir lines" in_heir_lines ;;
  present/queue)
    eventually "running in the RabbitMQ cluster" in_rabbitmq
    eventually "holds a replica of every quorum queue of vhost airflow" qq_ok
    eventually "in every balancer" balancers_name_it ;;
  absent/worker) eventually "one task-queue consumer per remaining worker, and it no longer answers Celery's ping" workers_answer ;;
  absent/scheduler) eventually "in no heir line" out_of_heir_lines ;;
  absent/queue)
    eventually "no RabbitMQ cluster member" out_of_rabbitmq
    eventually "no replica of any quorum queue of vhost airflow" qq_ok ;;
  *) fail "no checks for group $group" ;;
esac
[ "$mode" = present ] || eventually "no balancer, /etc/hosts or news URL names it" nobody_names_it
