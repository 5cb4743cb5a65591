#!/usr/bin/env bash
# Least privilege on the deployed local cluster (issue 16), against the real services:
#  1. the airflow DB login (in every worker's airflow.cfg) cannot read or write
#     heir-supervisor's registry, which lives in the heir_registry login's own schema;
#  2. the heir_supervisor superuser cannot log in from a host that is not a db host, even with
#     its password; the registry login still can (its supervisors run on scheduler hosts);
#  3. a supervised Airflow command runs as airflow, has no supervisor credentials in its
#     environment and cannot read the supervisor's environment file;
#  4. the DB witnesses run as their own account, listen on the cluster address only, and refuse
#     a replayed voter request and a stale one (while a fresh, signed one is answered).
# usage: tests/cluster/least-privilege-test.sh   (after a deploy, e.g. from deploy-test.sh)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

ensure_host_pkgs psql:postgresql-client
VIP=$HF_FLOATING_IP
SECRETS="$INVENTORY_DIR/.secrets"
secret() { awk '{ print $1; exit }' "$SECRETS/$1"; }

# psql from the controller (not a db host) through the floating IP: LOGIN PASSWORD DB SQL
ctl_psql() {
  PGCONNECT_TIMEOUT=5 PGPASSWORD=$2 psql "host=$VIP port=5432 user=$1 dbname=$3 $PG_TLS_CTL" -XAtqc "$4" 2>&1
}

step "the airflow login cannot touch heir-supervisor's registry"
out=$(ctl_psql heir_registry "$(secret postgres_heir_registry_password)" airflow \
  "select count(*) from heirflow_leases") || fail "the registry login cannot read its own table: $out"
[ "$out" -ge 1 ] || fail "no lease rows in heir_registry.heirflow_leases: $out"
pass "heir_registry reads its leases ($out groups) with its default search_path"
pw=$(secret postgres_airflow_password)
for sql in "update heir_registry.heirflow_leases set epoch = epoch + 1" \
           "insert into heir_registry.heirflow_members select * from heir_registry.heirflow_members limit 0" \
           "select count(*) from heir_registry.heirflow_members" \
           "create table heir_registry.x (i int)"; do
  out=$(ctl_psql airflow "$pw" airflow "$sql") && fail "airflow login: '$sql' succeeded: $out"
  grep -q "permission denied" <<< "$out" || fail "airflow login: '$sql' failed for another reason: $out"
done
out=$(ctl_psql airflow "$pw" airflow "select count(*) from heirflow_leases") \
  && fail "airflow login sees a heirflow_leases table: $out"
pass "airflow login: update, insert, select and create in schema heir_registry all refused (permission denied)"

step "the failover superuser only from the db hosts"
out=$(ctl_psql heir_supervisor "$(secret heir_db_admin_password)" postgres "select 1") \
  && fail "heir_supervisor logged in from the controller: $out"
grep -q "no pg_hba.conf entry" <<< "$out" || fail "heir_supervisor from the controller: unexpected error: $out"
db1=$(group_hosts db | head -1)
out=$(hssh "$db1" "PGCONNECT_TIMEOUT=5 PGPASSWORD='$(secret heir_db_admin_password)' psql 'host=$VIP port=5432 user=heir_supervisor dbname=postgres $PG_TLS_HOST' -XAtqc 'select rolsuper from pg_roles where rolname = current_user'" 2>&1) \
  || fail "heir_supervisor cannot log in from $db1: $out"
[ "$out" = t ] || fail "heir_supervisor from $db1: $out"
pass "heir_supervisor: refused from the controller (no pg_hba.conf entry), a superuser from $db1"

step "supervised commands hold no supervisor credentials"
n=0
for h in $(group_hosts scheduler); do
  for pid in $(docker exec "$h" pgrep -f 'airflow-warm.py (scheduler|dag-processor)$'); do
    # only the command itself (its parent is the guard), not its own children
    pp=$(docker exec "$h" awk '{print $4}' "/proc/$pid/stat" 2>/dev/null) || continue
    docker exec "$h" grep -q guard "/proc/$pp/cmdline" 2>/dev/null || continue
    user=$(docker exec "$h" ps -o user= -p "$pid" | tr -d ' ')
    [ "$user" = airflow ] || fail "$h: supervised command $pid runs as $user, not airflow"
    env=$(docker exec "$h" sh -c "tr '\0' '\n' < /proc/$pid/environ")
    ! grep -E '^HEIR_(DSN|DSN_FILE|NEWS_URL|NEWS_KEY_FILE)=' <<< "$env" \
      || fail "$h: supervised command $pid has supervisor credentials in its environment"
    grep -q '^HEIR_GROUP=' <<< "$env" || fail "$h: supervised command $pid lacks HEIR_GROUP (not a heir child?)"
    grep -qx 'HOME=/opt/airflow' <<< "$env" || fail "$h: command $pid: HOME is not airflow's: $(grep '^HOME=' <<< "$env")"
    n=$((n + 1))
  done
  docker exec "$h" runuser -u airflow -- cat /etc/heirflow/heir-supervisor.env > /dev/null 2>&1 \
    && fail "$h: the airflow account can read /etc/heirflow/heir-supervisor.env"
  [ "$(docker exec "$h" stat -c '%U %a' /etc/heirflow/heir-supervisor.env)" = "root 600" ] \
    || fail "$h: heir-supervisor.env is not root 0600"
done
[ "$n" -ge 2 ] || fail "found only $n supervised Airflow commands on the scheduler hosts"
pass "$n supervised commands: user airflow, no HEIR_DSN/HEIR_NEWS_URL in their environment; env file root 0600, unreadable by airflow"

step "DB witnesses: own account, cluster address, no replays"
vsecret=$(secret heir_db_voter_secret)
for w in $(group_hosts queue | head -3); do
  ip=$(host_ip "$w")
  user=$(docker exec "$w" ps -o user= -C heir-supervisor | head -1 | tr -d ' ')
  [ "$user" = heir-witness ] || fail "$w: the witness runs as '$user', not heir-witness"
  docker exec "$w" ss -ltnH "( sport = :7433 )" | awk '{print $4}' | grep -qx "$ip:7433" \
    || fail "$w: the witness does not listen on $ip:7433 only: $(docker exec "$w" ss -ltnH '( sport = :7433 )')"
  out=$(python3 - "$ip" "$vsecret" <<'PY'
import hashlib, hmac, os, socket, sys, time
ip, secret = sys.argv[1], sys.argv[2].encode()
def send(raw):
    s = socket.create_connection((ip, 7433), timeout=5)
    s.sendall(raw)
    data = b""
    while True:
        b = s.recv(65536)
        if not b:
            break
        data += b
    return data.split(b"\r\n", 1)[0].decode()
def request(ts_ms):
    nonce = os.urandom(16).hex()
    mac = hmac.new(secret, b"req|" + nonce.encode() + b"|" + str(ts_ms).encode(), hashlib.sha256).hexdigest()
    return (f"GET /v1/view?nonce={nonce}&ts={ts_ms} HTTP/1.1\r\nHost: {ip}\r\n"
            f"X-Heir-Auth: {mac}\r\nConnection: close\r\n\r\n").encode()
raw = request(int(time.time() * 1000))
print(send(raw)); print(send(raw))
print(send(request(int(time.time() * 1000) - 120_000)))
PY
)
  mapfile -t st <<< "$out"
  [[ ${st[0]} == *" 200 "* ]] || fail "$w: a fresh signed request was not answered: ${st[0]}"
  [[ ${st[1]} == *" 401 "* ]] || fail "$w: a replayed request was answered: ${st[1]}"
  [[ ${st[2]} == *" 401 "* ]] || fail "$w: a request 2 minutes old was answered: ${st[2]}"
  pass "$w: runs as heir-witness, listens on $ip:7433; fresh request 200, replay 401, stale 401"
done
