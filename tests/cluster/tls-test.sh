#!/usr/bin/env bash
# TLS on the deployed local cluster (issue 16), against the real services:
#  1. every host holds the cluster CA and its own certificate, which names its address (and,
#     on db hosts, the floating IP) and is signed by the CA the controller keeps;
#  2. Postgres refuses a plaintext connection (no pg_hba entry without encryption), refuses a
#     client that checks against another CA, and one that expects another name;
#  3. every TCP client Postgres is serving right now uses TLS: Airflow's schedulers, workers,
#     api-servers and triggerers, heir-supervisor's registry, heir-db's own probes and the
#     standby's replication stream — and there is at least one of each kind;
#  4. heir-supervisor refuses a database signed by another CA;
#  5. RabbitMQ: no plain AMQP from the network (5672 on the loopback only, plaintext to 5671 gets
#     no AMQP frame), the TLS port verifies against the cluster CA and not another; Celery's own
#     transport with airflow.cfg's broker URL connects with the cluster CA, is refused with
#     another CA or without TLS; every client connection of the node is TLS;
#  6. RabbitMQ's Erlang distribution (node to node, and the CLI tools) is TLS: each node runs
#     inet_tls and every link is tls; the distribution port verifies for the node's name
#     against the cluster CA and wants a client certificate; a plain-distribution rabbitmqctl
#     reaches nothing;
#  7. Flower serves HTTPS only, verified against the cluster CA, behind its login;
#  8. every api-server serves HTTPS only (its certificate verified for its address; another CA
#     and plain HTTP get no answer), every Airflow host's balancer too (the Execution API path:
#     airflow.cfg's execution_api_server_url is https), and the login is FAB's: the UI sends
#     an anonymous browser to /auth/login/, a token needs the admin's password, and the
#     admin holds the Admin role. (The browser test is ui-login-test.sh.)
# usage: tests/cluster/tls-test.sh   (after a deploy, e.g. from deploy-test.sh)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

ensure_host_pkgs psql:postgresql-client openssl:openssl
VIP=$HF_FLOATING_IP
CA="$INVENTORY_DIR/.secrets/tls/ca.crt"
WORK=$(mktemp -d /tmp/heirflow-tls-test.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
pw=$(awk '{ print $1; exit }' "$INVENTORY_DIR/.secrets/postgres_airflow_password")
# psql from the controller as the airflow login: CONNINFO-OPTIONS SQL (prints output and error)
try_psql() { PGCONNECT_TIMEOUT=5 PGPASSWORD=$pw psql "host=$VIP port=5432 user=airflow dbname=airflow $1" -XAtqc "$2" 2>&1; }

step "every host: the cluster CA and a certificate naming the host"
[ -s "$CA" ] || fail "no cluster CA at $CA"
[ "$(stat -c %a "$INVENTORY_DIR/.secrets/tls/ca.key")" = 600 ] || fail "ca.key is not 0600"
n=0
while read -r h ip group; do
  hssh "$h" "cat /etc/heirflow/tls/host.crt" < /dev/null > "$WORK/$h.crt" || fail "$h: no /etc/heirflow/tls/host.crt"
  hssh "$h" "cat /etc/heirflow/tls/ca.crt" < /dev/null | cmp -s - "$CA" || fail "$h: /etc/heirflow/tls/ca.crt is not the controller's CA"
  openssl verify -CAfile "$CA" "$WORK/$h.crt" > /dev/null 2>&1 || fail "$h: its certificate is not signed by the cluster CA"
  sans=$(openssl x509 -in "$WORK/$h.crt" -noout -ext subjectAltName | tail -1)
  grep -q "IP Address:$ip\b" <<< "$sans" || fail "$h: certificate does not name $ip: $sans"
  grep -q "DNS:$h\b" <<< "$sans" || fail "$h: certificate does not name $h: $sans"
  if [ "$group" = db ]; then
    grep -q "IP Address:$VIP\b" <<< "$sans" || fail "$h: db certificate does not name the floating IP $VIP: $sans"
  fi
  n=$((n + 1))
done < <(cluster_hosts)
pass "$n hosts: CA and host certificate present, signed by the cluster CA, naming the host and its address (db hosts: and $VIP)"

step "Postgres refuses plaintext, another CA, another name"
out=$(try_psql "sslmode=disable" "select 1") && fail "plaintext connection accepted: $out"
grep -q "no pg_hba.conf entry.*no encryption" <<< "$out" || fail "plaintext refused for another reason: $out"
pass "plaintext (sslmode=disable): $(grep -o 'no pg_hba.conf entry.*' <<< "$out" | head -1)"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/other.key" \
  -out "$WORK/other.crt" -subj "/CN=another CA" -days 1 2> /dev/null
out=$(try_psql "sslmode=verify-full sslrootcert=$WORK/other.crt" "select 1") && fail "a server not signed by the client's CA was accepted: $out"
grep -qi "certificate verify failed" <<< "$out" || fail "wrong CA refused for another reason: $out"
pass "client trusting another CA: $(grep -io 'certificate verify failed.*' <<< "$out" | head -1)"
# the right address and CA, but the client expects a name the certificate does not carry
out=$(PGCONNECT_TIMEOUT=5 PGPASSWORD=$pw psql "host=db.elsewhere.example hostaddr=$VIP port=5432 user=airflow dbname=airflow sslmode=verify-full sslrootcert=$CA" -XAtqc "select 1" 2>&1) \
  && fail "a certificate for another name was accepted: $out"
grep -qi "does not match host name" <<< "$out" || fail "name mismatch refused for another reason: $out"
pass "client expecting another name: $(grep -io 'server certificate.*does not match host name.*' <<< "$out" | head -1)"
out=$(try_psql "sslmode=verify-full sslrootcert=$CA" "select ssl, version from pg_stat_ssl where pid = pg_backend_pid()") \
  || fail "verify-full with the cluster CA through $VIP refused: $out"
[ "${out%%|*}" = t ] || fail "the verified connection is not TLS: $out"
pass "verify-full with the cluster CA through $VIP: TLS ${out#*|}"

step "every TCP client of Postgres uses TLS"
for db in $(group_hosts db); do
  # Every connection but the local socket's (client_addr null) and our own: who, from where, TLS?
  rows=$(hssh "$db" "cd / && sudo -u postgres psql -XAtq -F '|' -c \"select coalesce(a.usename, ''), a.backend_type, host(a.client_addr), s.ssl
    from pg_stat_activity a join pg_stat_ssl s using (pid) where a.client_addr is not null\"") || fail "$db: pg_stat_activity"
  plain=$(awk -F'|' '$4 != "t"' <<< "$rows")
  [ -z "$plain" ] || fail "$db: connections without TLS (user|kind|from|ssl): $plain"
  grep . <<< "$rows" >> "$WORK/conns" || true
  echo "  $db: $(grep -c . <<< "$rows") TCP connections, all TLS"
done
# (the witnesses' probes last milliseconds: rarely caught here; a plaintext probe would find no
# pg_hba entry, and db-test.sh's failover needs their votes)
for who in "airflow|client backend" "heir_registry|client backend" "replicator|walsender"; do
  grep -q "^$who|" "$WORK/conns" || fail "no TLS connection of $who seen (is it connected at all?): $(cut -d'|' -f1,2 "$WORK/conns" | sort | uniq -c | tr '\n' ';')"
done
pass "TLS connections: $(cut -d'|' -f1,2 "$WORK/conns" | sort | uniq -c | awk '{ $1 = $1; print }' | paste -sd ';' | sed 's/;/; /g')"

step "heir-supervisor refuses a database it cannot verify"
sched=$(group_hosts scheduler | head -1)
hssh "$sched" "mkdir -p /tmp/tls-test && cat > /tmp/tls-test/other.crt" < "$WORK/other.crt"
# the supervisors' own DSN, with another CA: status must fail on the certificate
out=$(hssh "$sched" '. /etc/heirflow/heir-supervisor.env && HEIR_DSN="${HEIR_DSN/sslrootcert=\/etc\/heirflow\/tls\/ca.crt/sslrootcert=/tmp/tls-test/other.crt}" heir-supervisor status --timeout 5' 2>&1) \
  && fail "heir-supervisor status trusted a server signed by another CA: $out"
grep -qi "certificate\|UnknownIssuer" <<< "$out" || fail "heir-supervisor status failed for another reason: $out"
pass "heir-supervisor with another CA: $(grep -i -m1 -o '[^:]*certificate[^;]*\|[^:]*UnknownIssuer[^;]*' <<< "$out" | head -1)"
out=$(hssh "$sched" '. /etc/heirflow/heir-supervisor.env && HEIR_DSN="$HEIR_DSN" heir-supervisor status --timeout 5' 2>&1) \
  || fail "heir-supervisor status with the cluster CA: $out"
pass "heir-supervisor status with the cluster CA over TLS: ok"

step "RabbitMQ: AMQPS only, with verification"
q1=$(group_hosts queue | head -1); q1_ip=$(host_ip "$q1")
if timeout 3 bash -c "exec 3<>/dev/tcp/$q1_ip/5672" 2> /dev/null; then fail "$q1: plain AMQP port 5672 open on $q1_ip"; fi
# plaintext AMQP to the TLS port: no Connection.Start comes back
reply=$(python3 - "$q1_ip" <<'PY'
import socket, sys
s = socket.create_connection((sys.argv[1], 5671), timeout=3)
s.sendall(b"AMQP\x00\x00\x09\x01")
try:
    data = s.recv(64)
except OSError as e:
    data = b""
print(data[:8].hex())
PY
)
[ "${reply:0:2}" != 01 ] || fail "$q1:5671 answered plaintext AMQP with a frame ($reply)"
pass "$q1: plain AMQP refused (5672 closed on $q1_ip; 5671 answers no AMQP frame to plaintext: '${reply:-nothing}')"
out=$(openssl s_client -connect "$q1_ip:5671" -CAfile "$CA" -verify_return_error -verify_ip "$q1_ip" < /dev/null 2>&1) \
  || fail "TLS to $q1:5671 with the cluster CA failed: $(tail -3 <<< "$out")"
out=$(openssl s_client -connect "$q1_ip:5671" -CAfile "$WORK/other.crt" -verify_return_error < /dev/null 2>&1) \
  && fail "TLS to $q1:5671 verified against another CA"
pass "$q1:5671: verifies against the cluster CA (name $q1_ip), not against another CA"

worker=$(group_hosts worker | head -1)
hssh "$worker" "mkdir -p /tmp/tls-test && cat > /tmp/tls-test/other.crt" < "$WORK/other.crt"
# Celery's own transport (kombu, py-amqp) with the broker URL of airflow.cfg: the cluster CA
# connects, another CA is refused, and no TLS at all is refused (the balancer passes TLS only).
celery_try() {  # celery_try CA|none
  hssh "$worker" "cd /opt/airflow && /opt/airflow/venv/bin/python - '$1' '$(awk '/^heirflow_tls_rabbitmq_name:/ { print $2 }' playbooks/vars/secrets.yml)'" <<'PY' 2>&1
import configparser, ssl, sys
from kombu import Connection
c = configparser.ConfigParser(interpolation=None)
c.read("/opt/airflow/airflow.cfg")
url = c["celery"]["broker_url"].split(";")[0]
tls = False if sys.argv[1] == "none" else {"ca_certs": sys.argv[1], "cert_reqs": ssl.CERT_REQUIRED, "server_hostname": sys.argv[2]}
try:
    with Connection(url, ssl=tls, connect_timeout=5) as conn:
        conn.ensure_connection(max_retries=1)
        print("connected", "tls" if tls else "plain")
except Exception as e:
    print("refused:", type(e).__name__, e)
    sys.exit(1)
PY
}
out=$(celery_try /etc/heirflow/tls/ca.crt) || fail "$worker: Celery's transport with the cluster CA: $out"
out=$(celery_try /tmp/tls-test/other.crt) && fail "$worker: Celery's transport trusted another CA: $out"
grep -qi "CERTIFICATE_VERIFY_FAILED\|certificate verify failed" <<< "$out" || fail "$worker: another CA refused for another reason: $out"
pass "$worker: Celery with another CA: $(grep -io 'certificate verify failed[^)]*' <<< "$out" | head -1)"
out=$(celery_try none) && fail "$worker: Celery without TLS connected: $out"
pass "$worker: Celery without TLS: ${out:0:120}"

conns=$(hssh "$q1" "rabbitmqctl -q list_connections user peer_host ssl --formatter json" 2>/dev/null) || fail "$q1: list_connections"
read -r n plain users < <(python3 -c 'import json,sys
c = json.loads(sys.argv[1]); remote = [x for x in c if x["peer_host"] not in ("127.0.0.1", "::1")]
print(len(remote), len([x for x in remote if not x["ssl"]]), ",".join(sorted({x["user"] or "(none: a balancer check)" for x in remote})))' "$conns")
[ "$plain" = 0 ] || fail "$q1: $plain connections without TLS: $conns"
[ "$n" -ge 1 ] || fail "$q1: no client connections to check"
for u in airflow heirnews; do
  grep -q "\b$u\b" <<< "$users" || fail "$q1: no TLS connection of $u (Celery, news publishers) among: $users"
done
pass "$q1: $n client connections, all TLS (users: $users)"

step "RabbitMQ: the nodes and their CLI tools speak Erlang distribution over TLS"
queues=($(group_hosts queue))
for q in "${queues[@]}"; do
  out=$(hssh "$q" "rabbitmqctl -q eval 'init:get_argument(proto_dist).'" < /dev/null 2>&1 || true)
  grep -q inet_tls <<< "$out" || fail "$q: distribution protocol is not inet_tls: $out"
  # each connected node and how it is reached (tls or tcp), the CLI tool's own link included
  links=$(hssh "$q" "rabbitmqctl -q eval '[{N, element(4, proplists:get_value(address, I))} || {N, I} <- element(2, net_kernel:nodes_info())].'" < /dev/null 2>&1 || true)
  ! grep -q "tcp" <<< "$links" || fail "$q: a distribution link without TLS: $links"
  [ "$(grep -o "rabbit@[^']*',tls" <<< "$links" | wc -l)" -ge $((${#queues[@]} - 1)) ] \
    || fail "$q: not every other node is linked over TLS: $links"
done
q2=${queues[1]:-${queues[0]}}; q2_ip=$(host_ip "$q2")
dist() { hssh "$q1" "openssl s_client -connect $q2_ip:25672 -verify_return_error $* < /dev/null 2>&1" < /dev/null; }
out=$(dist -CAfile /etc/heirflow/tls/ca.crt -verify_hostname "$q2" -cert /etc/heirflow/tls/host.crt -key /etc/rabbitmq/server.key) \
  || fail "$q1 -> $q2:25672 with $q1's certificate: $(tail -3 <<< "$out")"
grep -q "Verify return code: 0" <<< "$out" || fail "$q1 -> $q2:25672: the node's certificate did not verify for $q2"
# without a client certificate (TLS 1.3: the refusal is an alert after the client's side of the
# handshake, so the client stays a moment to read it)
out=$(hssh "$q1" "(sleep 2) | openssl s_client -connect $q2_ip:25672 -CAfile /etc/heirflow/tls/ca.crt -verify_hostname $q2 2>&1" < /dev/null || true)
grep -qi "alert certificate required\|alert handshake failure" <<< "$out" \
  || fail "$q2:25672 accepted a TLS client without a certificate: $(tail -3 <<< "$out")"
hssh "$q1" "mkdir -p /tmp/tls-test && cat > /tmp/tls-test/other.crt" < "$WORK/other.crt"
out=$(dist -CAfile /tmp/tls-test/other.crt -cert /etc/heirflow/tls/host.crt -key /etc/rabbitmq/server.key) \
  && fail "$q2:25672 verified against another CA"
out=$(hssh "$q1" "env RABBITMQ_CTL_ERL_ARGS='-proto_dist inet_tcp' timeout 60 rabbitmqctl -q status" < /dev/null 2>&1) \
  && fail "$q1: rabbitmqctl over plain distribution reached the node"
hssh "$q1" "rm -rf /tmp/tls-test" < /dev/null
pass "${#queues[@]} queue nodes: distribution inet_tls, every link tls; $q2:25672 verifies for its name and wants a client certificate; another CA and a plain-distribution rabbitmqctl fail"

step "Flower: HTTPS behind its login"
web=$(group_hosts web | head -1); web_ip=$(host_ip "$web")
fpw=$(awk '{ print $1; exit }' "$INVENTORY_DIR/.secrets/flower_admin_password")
flower() { curl -sS -o /dev/null -m 10 -w '%{http_code}' "$@" 2>&1 || true; }
code=""; for _ in $(seq 30); do  # Flower may still be starting after the deploy
  code=$(flower --cacert "$CA" "https://$web_ip:5555/"); [ "$code" = 401 ] && break; sleep 2
done
[ "$code" = 401 ] || fail "$web: https://$web_ip:5555/ without credentials: $code (want 401)"
code=$(flower --cacert "$CA" -u "admin:$fpw" "https://$web_ip:5555/")
[ "$code" = 200 ] || fail "$web: Flower over HTTPS with its credentials: $code"
code=$(flower --cacert "$WORK/other.crt" "https://$web_ip:5555/")
[[ "$code" != 200 && "$code" != 401 ]] || fail "$web: Flower's certificate verified against another CA ($code)"
code=$(flower "http://$web_ip:5555/")
[[ "$code" != 200 && "$code" != 401 ]] || fail "$web: Flower answered plain HTTP ($code)"
pass "$web:5555: HTTPS verified against the cluster CA (401 without credentials, 200 with them); another CA and plain HTTP get no page"

step "api-servers and balancers: HTTPS only; the FAB login"
# the HTTP status only (000: no answer, TLS refused included)
http_code() { curl -sS -o /dev/null -m 10 -w '%{http_code}' "$@" 2> /dev/null || true; }
apw=$(awk '{ print $1; exit }' "$INVENTORY_DIR/.secrets/airflow_admin_password")
api_hosts=($(group_hosts scheduler) $(group_hosts web))
for h in "${api_hosts[@]}"; do
  ip=$(host_ip "$h")
  code=$(http_code --cacert "$CA" "https://$ip:8080/api/v2/monitor/health")
  [ "$code" = 200 ] || fail "$h: https://$ip:8080/api/v2/monitor/health verified against the cluster CA: $code"
  code=$(http_code --cacert "$WORK/other.crt" "https://$ip:8080/api/v2/monitor/health")
  [ "$code" = 000 ] || fail "$h: the api-server's certificate verified against another CA ($code)"
  code=$(http_code "http://$ip:8080/api/v2/monitor/health")
  [ "$code" != 200 ] || fail "$h: the api-server answered plain HTTP"
done
pass "${#api_hosts[@]} api-servers: HTTPS verified for their addresses; another CA and plain HTTP get no answer"
url=$(hssh "$(group_hosts worker | head -1)" "sed -n 's/^execution_api_server_url = //p' /opt/airflow/airflow.cfg" < /dev/null)
[[ "$url" == https://127.0.0.1:8079/* ]] || fail "execution_api_server_url is $url (want https://127.0.0.1:8079/...)"
n=0
while read -r h _ _; do
  out=$(hssh "$h" "curl -sS -o /dev/null -w '%{http_code}' -m 10 --cacert /etc/heirflow/tls/ca.crt https://127.0.0.1:8079/api/v2/monitor/health; echo; curl -sS -o /dev/null -m 5 http://127.0.0.1:8079/ 2>&1 && echo PLAIN" < /dev/null || true)
  [ "$(head -1 <<< "$out")" = 200 ] || fail "$h: its balancer over HTTPS (verified): $out"
  ! grep -q PLAIN <<< "$out" || fail "$h: its balancer answered plain HTTP"
  n=$((n + 1))
done < <(cluster_hosts | awk '$3 == "scheduler" || $3 == "web" || $3 == "worker"')
pass "$n balancers: https://127.0.0.1:8079 verified against the cluster CA, no plain HTTP; execution_api_server_url = $url"
ip=$(host_ip "${api_hosts[0]}")
# the UI (a single-page app) sends a browser without a token to /api/v2/auth/login, which
# hands it to the auth manager's login page
loc=$(curl -sS -o /dev/null -m 10 -w '%{http_code} %{redirect_url}' --cacert "$CA" "https://$ip:8080/api/v2/auth/login" || true)
[[ "$loc" == 30[27]\ "https://$ip:8080/auth/login/"* ]] || fail "${api_hosts[0]}: /api/v2/auth/login does not lead to the FAB login: $loc"
code=$(http_code --cacert "$CA" "https://$ip:8080/api/v2/dags?limit=1")
[ "$code" = 401 ] || fail "${api_hosts[0]}: the REST API without a token: $code (want 401)"
page=$(curl -sS -m 10 --cacert "$CA" "https://$ip:8080/auth/login/" || true)
grep -q "Sign In" <<< "$page" || fail "${api_hosts[0]}: /auth/login/ is not FAB's login page"
! grep -qi "simple auth manager" <<< "$page" || fail "${api_hosts[0]}: the login page mentions the simple auth manager"
token() { curl -sS -m 10 --cacert "$CA" -H 'Content-Type: application/json' -d @- -w '\n%{http_code}' "https://$ip:8080/auth/token" 2>&1 || true; }
out=$(printf '{"username": "admin", "password": "%s-wrong"}' "$apw" | token)
[ "$(tail -1 <<< "$out")" = 401 ] || fail "${api_hosts[0]}: a token for a wrong password: $(tail -1 <<< "$out")"
out=$(printf '{"username": "admin", "password": "%s"}' "$apw" | token)
tok=$(head -1 <<< "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])' 2>/dev/null) \
  || fail "${api_hosts[0]}: no token for the admin's password: $out"
me=$(curl -sS -m 10 --cacert "$CA" -H "Authorization: Bearer $tok" "https://$ip:8080/api/v2/dags?limit=1" -w '\n%{http_code}' || true)
[ "$(tail -1 <<< "$me")" = 200 ] || fail "${api_hosts[0]}: the admin's token cannot list DAGs: $me"
roles=$(hssh "$(group_hosts scheduler | head -1)" "$AIRFLOW_CMD users list -o json 2>/dev/null" < /dev/null \
  | python3 -c 'import json,sys; print(" ".join(r for u in json.loads([l for l in sys.stdin if l.startswith("[")][-1]) if u["username"] == "admin" for r in u["roles"]))' 2>/dev/null || true)
grep -qw Admin <<< "$roles" || fail "the FAB user admin does not hold the Admin role (roles: ${roles:-none})"
pass "FAB login: /api/v2/auth/login leads to FAB's /auth/login/ (no simple auth manager), the API wants a token; a wrong password gets 401, the right one a token that lists DAGs; admin holds the Admin role"
