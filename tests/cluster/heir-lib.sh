# shellcheck shell=bash
# Helpers for the heir-supervisor cluster test and benchmark (sourced after lib.sh): status of
# the succession groups, the Airflow singletons' processes on a host (through `docker exec`, so
# they work while the host is cut off the network), job heartbeats, lease times.
# All instants are CLOCK_REALTIME seconds of the one kernel the containers share with us.

HEIR_STATUS_CMD='. /etc/heirflow/heir-supervisor.env && export HEIR_DSN && heir-supervisor status --json'

# heir_status HOST...: status JSON from the first host that answers
heir_status() {
  local h out
  for h in "$@"; do
    out=$(hssh "$h" "$HEIR_STATUS_CMD" 2>/dev/null) && { printf '%s\n' "$out"; return 0; }
  done
  return 1
}

# group_summary JSON GROUP: "<live members> <leader or -> <epoch> <states member:state,...>"
group_summary() {
  python3 -c 'import json,sys
d = json.loads(sys.argv[1]); g = [x for x in d["groups"] if x["group"] == sys.argv[2]]
if not g: print(0, "-", 0, "-"); sys.exit()
g = g[0]; live = [m for m in g["members"] if m["live"]]
st = ",".join("%s:%s" % (m["member"], "leader" if m["member"] == g["leader"] else ("live" if m["live"] else "dead")) for m in g["members"])
print(len(live), g["leader"] or "-", g["epoch"] or 0, st or "-")' "$1" "$2"
}

# wait_group GROUP N TIMEOUT HOST...: until GROUP has N live members and a leader; prints summary
wait_group() {
  local g=$1 n=$2 t=$3; shift 3
  local end=$((SECONDS + t)) s=""
  while [ $SECONDS -lt $end ]; do
    s=$(group_summary "$(heir_status "$@" || echo '{"groups":[]}')" "$g")
    read -r live leader _ <<< "$s"
    if [ "$live" -ge "$n" ] && [ "$leader" != - ]; then echo "$s"; return 0; fi
    sleep 0.5
  done
  echo "$s"; return 1
}

# Process view of one group on a host, through docker exec (no network needed). One line per
# Airflow child of the group's guard: "<pid> <active|standby> <procs in its group> <threads>
# <db connections of its group> <age s>". A warm standby (airflow-warm.py before "go": importing
# Airflow, then parked in a read on its stdin pipe) is one single-threaded process without a
# database connection; after "go" it runs the Airflow command, which holds connections to the
# metadata DB (port 5432) and starts threads/processes.
heir_procs() {
  local host=$1 g=$2
  docker exec "$host" sh -c '
    conns=$(ss -tnpH state established "( dport = :5432 )" 2>/dev/null)
    for p in $(pgrep -f "airflow-warm.py '"$g"'\$"); do
      pp=$(awk "{print \$4}" /proc/$p/stat 2>/dev/null) || continue
      # the top of the child tree (its parent is the guard)
      grep -q "guard" /proc/$pp/cmdline 2>/dev/null || continue
      grp=$(pgrep -g $p | tr "\n" " ")
      np=$(echo $grp | wc -w); n=$(ls /proc/$p/task 2>/dev/null | wc -l); db=0
      for q in $grp; do db=$((db + $(echo "$conns" | grep -c "pid=$q,"))); done
      a=$(ps -o etimes= -p $p | tr -d " ")
      s=standby; if [ "$np" -gt 1 ] || [ "$n" -gt 1 ] || [ "$db" -gt 0 ]; then s=active; fi
      echo "$p $s $np $n $db $a"
    done' 2>/dev/null
}
# active_count HOST GROUP
active_count() { heir_procs "$1" "$2" | awk '$2 == "active"' | wc -l; }

# jobs_advancing SECONDS: "<job_type> <hostname>" of the running Airflow jobs whose heartbeat
# advanced within SECONDS (under load the dag-processor heartbeats only every ~10-15 s)
jobs_advancing() {
  local win=$1 a b
  a=$(hpsql "select id || ':' || extract(epoch from latest_heartbeat) from job where state = 'running'")
  sleep "$win"
  b=$(hpsql "select id || ':' || extract(epoch from latest_heartbeat) || ':' || job_type || ':' || hostname from job where state = 'running'")
  python3 -c 'import sys
a = dict(l.split(":")[:2] for l in sys.argv[1].split() if l)
for l in sys.argv[2].split():
    i, hb, typ, host = l.split(":", 3)
    if a.get(i) != hb: print(typ, host)' "$a" "$b"
}

# lease_acquired GROUP: "<epoch> <acquired_at epoch seconds> <holder>"
lease_acquired() {
  hpsql "select epoch, extract(epoch from acquired_at), holder from heir_registry.heirflow_leases where grp = '$1'" | tr '|' ' '
}

fsub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a - b }'; }
flt() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a < b) }'; }

# The operator's view: `heir-supervisor interface` from the controller, in a real terminal (a
# detached tmux session), reading the registry through the floating IP and the news exchange on
# the first queue host. ui_start DIR: starts it (DSN in a 0600 file); ui_screen: the rendered
# screen; ui_wait SECONDS REGEX...: until every regex matches the screen; ui_stop: q, then kill.
UI_SESSION="heirflow-ui-$$"
ui_start() {
  local dir=$1 q
  ensure_host_pkgs tmux:tmux
  q=$(group_hosts queue | head -1)
  printf 'host=%s port=5432 dbname=airflow user=heir_registry password=%s connect_timeout=2 %s\n' \
    "$HF_FLOATING_IP" "$(cat "$INVENTORY_DIR/.secrets/postgres_heir_registry_password")" "$PG_TLS_CTL" > "$dir/ui.dsn"
  chmod 600 "$dir/ui.dsn"
  (umask 077 && cat "$INVENTORY_DIR/.secrets/news_hmac_key" > "$dir/ui.newskey")
  printf 'amqps://heirnews:%s@%s:5671/heirflow-news' \
    "$(cat "$INVENTORY_DIR/.secrets/rabbitmq_news_password")" "$(host_ip "$q")" > "$dir/ui.news"
  tmux new-session -d -s "$UI_SESSION" -x 160 -y 45 \
    "HEIR_NEWS_URL=\$(cat '$dir/ui.news') '$REPO_ROOT/target/release/heir-supervisor' interface --dsn-file '$dir/ui.dsn' --news-key-file '$dir/ui.newskey' --news-ca-file '$INVENTORY_DIR/.secrets/tls/ca.crt' --group scheduler --refresh 0.5; echo \"interface exited: \$?\"; sleep 60"
}
ui_screen() { tmux capture-pane -p -t "$UI_SESSION" 2>/dev/null; }
ui_wait() {
  local secs=$1 end re ok; shift
  end=$((SECONDS + secs))
  while [ $SECONDS -lt "$end" ]; do
    ok=1
    for re in "$@"; do ui_screen | grep -Eq -- "$re" || { ok=0; break; }; done
    [ "$ok" = 1 ] && return 0
    sleep 0.3
  done
  return 1
}
ui_stop() { tmux kill-session -t "$UI_SESSION" 2>/dev/null || true; }
