#!/usr/bin/env bash
# SSH test hosts for hfplay's integration tests and bench/: a few Docker containers from the
# local cluster's base image (systemd as PID 1, sshd, the project's SSH key), on their own
# network. Separate from the Heirflow cluster: network heirflow-test (172.31.0.0/24),
# containers hft-1..hft-N, label heirflow-test=1; nothing of `heirflow`/`hf-*` is touched.
#
# usage: tests/hosts.sh up           start (or repair) the hosts, write the inventory; idempotent
#        tests/hosts.sh fresh NAME...  remove these hosts and create them anew from the image
#                                    (then as `up`, for them only)
#        tests/hosts.sh down         remove the containers and the network
#        tests/hosts.sh status       exit 0 if every host is running and the inventory exists
#        tests/hosts.sh down-after PID   wait until process PID exits and no test binary uses
#                                        the hosts (in-use.lock), then `down` (test cleanup)
# env:   HFT_HOSTS=n (default 4; at most 9, or 60 with HFT_NAME)
#        HFT_NAME=name HFT_NET=a.b.c  another, separate set of hosts (the compatibility suite's,
#          tests/compat/): containers name-1..name-N at a.b.c.11.., network heirflow-name
#          (a.b.c.0/24), label heirflow-test=name, files in .cache/test-hosts-name
#        HFT_APT_CACHE=1  also an apt proxy (apt-cacher-ng, as the cluster's hf-aptcache) at .2,
#          container <name>-aptcache, cache in .cache/apt-cacher-ng-<name>; every host uses it
# Prints nothing on stdout except, for `up`/`fresh`, the inventory path (last line). The
# inventory is .cache/test-hosts/hosts.ini (group `hft` (or the HFT_NAME), root login with the
# project key, the hosts' real SSH host keys in .cache/test-hosts/known_hosts).
set -euo pipefail
source "$(dirname "$0")/../cluster/lib.sh"

T_NAME=${HFT_NAME:-hft}
if [ "$T_NAME" = hft ]; then
  T_LABEL="heirflow-test=1"
  T_NETWORK="heirflow-test"
  T_PREFIX="172.31.0"
  T_BRIDGE=br-hftest
  T_DIR="$CACHE_DIR/test-hosts"
  T_MAX=9
  T_RUN_FLAGS=()
else
  [[ "$T_NAME" =~ ^[a-z][a-z0-9]{1,9}$ ]] || die "HFT_NAME must be 2..10 lowercase letters/digits (got '$T_NAME')"
  [[ "${HFT_NET:-}" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "HFT_NAME=$T_NAME needs HFT_NET=a.b.c (its /24 network)"
  [ "$HFT_NET" != 172.31.0 ] && [ "$HFT_NET" != "$HF_PREFIX" ] || die "HFT_NET=$HFT_NET is the test hosts' or the cluster's network"
  T_LABEL="heirflow-test=$T_NAME"
  T_NETWORK="heirflow-$T_NAME"
  T_PREFIX=$HFT_NET
  T_BRIDGE="br-$T_NAME"
  T_DIR="$CACHE_DIR/test-hosts-$T_NAME"
  T_MAX=60
  # loopback with ::1, as on a real host (Docker turns IPv6 off in containers): Debian's
  # packaged services listen on 127.0.0.1 and ::1 (memcached fails to start without it)
  T_RUN_FLAGS=(--sysctl net.ipv6.conf.lo.disable_ipv6=0)
fi
T_SUBNET="$T_PREFIX.0/24"
T_GATEWAY="$T_PREFIX.1"
T_IP_RANGE="$T_PREFIX.192/26"
T_INVENTORY="$T_DIR/hosts.ini"
T_KNOWN_HOSTS="$T_DIR/known_hosts"
T_KEYS="$T_DIR/host-keys"          # one file per host: its known_hosts lines
N=${HFT_HOSTS:-4}
[[ "$N" =~ ^[1-9][0-9]*$ ]] && [ "$N" -le "$T_MAX" ] || die "HFT_HOSTS must be 1..$T_MAX (got '$N')"
APT_CACHE=${HFT_APT_CACHE:-0}
T_APTCACHE="$T_NAME-aptcache"
T_APTCACHE_IP="$T_PREFIX.2"

# Same flags as cluster/up.sh (systemd as PID 1 under this Docker; see cluster/README.md).
SYSTEMD_FLAGS=(--cap-add ALL --cap-drop SYS_RESOURCE
  --security-opt seccomp=unconfined --security-opt apparmor=unconfined
  --cgroupns=private --tmpfs /run --tmpfs /run/lock --stop-signal SIGRTMIN+3)

hosts() { local i; for ((i = 1; i <= N; i++)); do echo "$T_NAME-$i $T_PREFIX.$((10 + i))"; done; }

# Builds the base image through cluster/image.sh when it is missing (image.sh caches by recipe
# hash and serialises concurrent builds itself).
ensure_image() {
  docker image inspect "$(base_image)" >/dev/null 2>&1 && return 0
  log "building the base image $(base_image) with cluster/image.sh (cold: a few minutes)" >&2
  "$CLUSTER_DIR/image.sh" >&2
}

cstate() {
  local s
  s=$(docker inspect -f '{{.State.Running}}' "$1" 2>/dev/null) || { echo missing; return; }
  [ "$s" = true ] && echo running || echo stopped
}

# aptcache_up: the apt proxy container of this set (HFT_APT_CACHE=1), started when missing
aptcache_up() {
  local img
  img=$(aptcache_image)
  if [ "$(cstate "$T_APTCACHE")" != missing ] && [ "$(docker inspect -f '{{.Config.Image}}' "$T_APTCACHE")" != "$img" ]; then
    docker rm -f "$T_APTCACHE" >/dev/null
  fi
  case $(cstate "$T_APTCACHE") in
    running) return 0 ;;
    stopped) docker start "$T_APTCACHE" >/dev/null ;;
    missing)
      mkdir -p "$CACHE_DIR/apt-cacher-ng-$T_NAME"
      log "starting $T_APTCACHE (apt proxy http://$T_APTCACHE_IP:3142)" >&2
      # heirflow=test-host: see the hosts below (cluster/down.sh removes by heirflow=1)
      docker run -d --name "$T_APTCACHE" --hostname "$T_APTCACHE" --network "$T_NETWORK" \
        --ip "$T_APTCACHE_IP" --label "$T_LABEL" --label heirflow=test-host \
        -v "$CACHE_DIR/apt-cacher-ng-$T_NAME:/var/cache/apt-cacher-ng" "$img" "${APTCACHE_CMD[@]}" >/dev/null ;;
  esac
  local i
  for ((i = 0; i < 40; i++)); do
    docker exec "$T_APTCACHE" sh -c 'exec 3<>/dev/tcp/127.0.0.1/3142' 2>/dev/null && break
    sleep 0.25
  done
  aptcache_warm "$T_APTCACHE" >&2
}

# usage: up [NAME...]   all hosts, or (fresh) only the named ones: created if missing, keys, login
up() {
  need_root
  local t0 base name ip line pubkey only=("$@")
  t0=$(now)
  command -v docker >/dev/null || die "docker is not installed"
  docker info >/dev/null 2>&1 || die "docker daemon not reachable"
  ensure_host_pkgs ssh:openssh-client ssh-keygen:openssh-client >&2
  ensure_image
  base=$(base_image)

  mkdir -p "$SSH_DIR" "$T_DIR" "$T_KEYS"; chmod 700 "$SSH_DIR"
  exec 8>"$T_DIR/up.lock"; flock 8   # one `up` at a time (tests and bench may start together)
  if [ ! -f "$SSH_KEY" ]; then
    log "generating project SSH key $SSH_KEY" >&2
    ssh-keygen -q -t ed25519 -N '' -C heirflow-local -f "$SSH_KEY"
  fi
  pubkey=$(cat "$SSH_KEY.pub")

  if docker network inspect "$T_NETWORK" >/dev/null 2>&1; then
    [ "$(docker network inspect -f '{{range .IPAM.Config}}{{.Subnet}}{{end}}' "$T_NETWORK")" = "$T_SUBNET" ] \
      || die "network $T_NETWORK exists with another subnet (want $T_SUBNET): tests/hosts.sh down"
  else
    log "creating network $T_NETWORK ($T_SUBNET)" >&2
    docker network create --driver bridge --subnet "$T_SUBNET" --gateway "$T_GATEWAY" \
      --ip-range "$T_IP_RANGE" --label "$T_LABEL" -o com.docker.network.bridge.name="$T_BRIDGE" \
      "$T_NETWORK" >/dev/null
  fi
  [ "$APT_CACHE" != 1 ] || aptcache_up

  # the hosts this call sets up: all, or the named ones
  local sel=() want
  while read -r name ip; do
    if [ ${#only[@]} -eq 0 ]; then sel+=("$name $ip"); continue; fi
    for want in "${only[@]}"; do [ "$want" = "$name" ] && sel+=("$name $ip"); done
  done < <(hosts)
  [ ${#only[@]} -eq 0 ] || [ ${#sel[@]} -eq ${#only[@]} ] || die "unknown host among: ${only[*]} (hosts: $(hosts | awk '{printf "%s ", $1}'))"

  local created=()
  for line in "${sel[@]}"; do
    read -r name ip <<< "$line"
    [ "${FRESH:-0}" != 1 ] || docker rm -f "$name" >/dev/null 2>&1 || true
    if [ "$(cstate "$name")" != missing ] && [ "$(docker inspect -f '{{.Config.Image}}' "$name")" != "$base" ]; then
      log "$name runs an older image: recreating it" >&2
      docker rm -f "$name" >/dev/null
    fi
    case $(cstate "$name") in
      running) ;;
      stopped) docker start "$name" >/dev/null ;;
      missing)
        rm -f "$T_KEYS/$name"
        # The image carries the cluster's label heirflow=1; overriding it keeps cluster/down.sh
        # (which removes by that label) away from the test hosts.
        docker run -d --name "$name" --hostname "$name" --network "$T_NETWORK" --ip "$ip" \
          --label "$T_LABEL" --label heirflow=test-host "${SYSTEMD_FLAGS[@]}" ${T_RUN_FLAGS[@]+"${T_RUN_FLAGS[@]}"} \
          "$base" /sbin/init >/dev/null
        created+=("$name") ;;
    esac
  done
  [ ${#created[@]} -eq 0 ] || log "created ${created[*]}" >&2
  # surplus hosts (HFT_HOSTS lowered)
  if [ ${#only[@]} -eq 0 ]; then
    for name in $(docker ps -a --filter "label=$T_LABEL" --format '{{.Names}}'); do
      [ "$name" = "$T_APTCACHE" ] && continue
      hosts | awk '{print $1}' | grep -qx "$name" || { docker rm -f "$name" >/dev/null; rm -f "$T_KEYS/$name"; }
    done
  fi

  # authorized key (+ apt proxy) and host keys through docker exec (a trusted channel), in parallel
  local pids=() fail=0 p proxy_conf=""
  [ "$APT_CACHE" != 1 ] || proxy_conf=$(apt_proxy_conf "http://$T_APTCACHE_IP:3142" "$T_APTCACHE")
  for line in "${sel[@]}"; do
    read -r name ip <<< "$line"
    (
      docker exec -i "$name" sh -ec 'umask 077; mkdir -p /root/.ssh
        cat > /root/.ssh/authorized_keys.new; mv /root/.ssh/authorized_keys.new /root/.ssh/authorized_keys
        if [ -n "$1" ]; then umask 022; printf "%s\n" "$1" > /etc/apt/apt.conf.d/01heirflow-proxy; fi' \
        sh "$proxy_conf" <<< "$pubkey"
      for ((i = 0; i < 120; i++)); do
        k=$(docker exec "$name" sh -c 'cd /etc/ssh && cat ssh_host_ed25519_key.pub ssh_host_ecdsa_key.pub ssh_host_rsa_key.pub' 2>/dev/null) \
          && { printf '%s\n' "$k" | awk -v h="$name,$ip" '{ print h, $1, $2 }' > "$T_KEYS/$name.tmp"
               mv "$T_KEYS/$name.tmp" "$T_KEYS/$name"; exit 0; }
        sleep 0.25
      done
      warn "$name: no SSH host keys after 30 s (docker logs $name)"; exit 1
    ) & pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || fail=1; done
  [ "$fail" = 0 ] || die "some test hosts did not start"
  while read -r name ip; do [ ! -f "$T_KEYS/$name" ] || cat "$T_KEYS/$name"; done < <(hosts) > "$T_KNOWN_HOSTS.tmp"
  chmod 600 "$T_KNOWN_HOSTS.tmp"; mv "$T_KNOWN_HOSTS.tmp" "$T_KNOWN_HOSTS"

  # wait until the login every tool does works (strict host key checking)
  pids=()
  for line in "${sel[@]}"; do
    read -r name ip <<< "$line"
    (
      for ((i = 0; i < 120; i++)); do
        ssh -i "$SSH_KEY" -o BatchMode=yes -o ConnectTimeout=5 -o StrictHostKeyChecking=yes \
          -o UserKnownHostsFile="$T_KNOWN_HOSTS" -o LogLevel=ERROR "root@$ip" true 2>/dev/null && exit 0
        sleep 0.25
      done
      warn "ssh root@$ip ($name) failed"; exit 1
    ) & pids+=($!)
  done
  fail=0; for p in "${pids[@]}"; do wait "$p" || fail=1; done
  [ "$fail" = 0 ] || die "ssh login failed on some test hosts"
  # named sets (fresh hosts that a run uses at once): systemd done booting (its tmpfs on /tmp
  # mounted over files apt had just written there, seen as a failed signature check)
  if [ "$T_NAME" != hft ]; then
    for line in "${sel[@]}"; do
      read -r name ip <<< "$line"
      docker exec "$name" timeout 60 systemctl is-system-running --wait >/dev/null 2>&1 &
    done
    wait || true
  fi

  {
    echo "# Generated by tests/hosts.sh - do not edit."
    echo "[$T_NAME]"
    while read -r name ip; do echo "$name ansible_host=$ip"; done < <(hosts)
    echo
    echo "[all:vars]"
    echo "ansible_user=root"
    echo "ansible_ssh_private_key_file=$SSH_KEY"
    echo "ansible_ssh_common_args='-o StrictHostKeyChecking=yes -o UserKnownHostsFile=$T_KNOWN_HOSTS'"
  } > "$T_INVENTORY.tmp"
  mv "$T_INVENTORY.tmp" "$T_INVENTORY"
  log "test hosts up (${#sel[@]} of $N) in $(elapsed "$t0") s" >&2
  echo "$T_INVENTORY"
}

down() {
  local cs nets
  mapfile -t cs < <(docker ps -aq --filter "label=$T_LABEL")
  [ ${#cs[@]} -eq 0 ] || docker rm -f "${cs[@]}" >/dev/null
  mapfile -t nets < <(docker network ls -q --filter "label=$T_LABEL")
  [ ${#nets[@]} -eq 0 ] || docker network rm "${nets[@]}" >/dev/null
  rm -f "$T_INVENTORY" "$T_KNOWN_HOSTS"; rm -rf "$T_KEYS"
  log "test hosts down ($T_NAME)" >&2
}

status() {
  local name ip
  [ -f "$T_INVENTORY" ] || return 1
  while read -r name ip; do [ "$(cstate "$name")" = running ] || return 1; done < <(hosts)
}

case "${1:-}" in
  up) up ;;
  fresh)
    shift; [ $# -gt 0 ] || die "usage: tests/hosts.sh fresh NAME..."
    FRESH=1 up "$@" ;;
  down) down ;;
  status) status ;;
  down-after)
    pid=${2:?usage: tests/hosts.sh down-after PID}
    while kill -0 "$pid" 2>/dev/null; do sleep 0.5; done
    # Test binaries hold in-use.lock shared while they use the hosts (tests/support/mod.rs).
    mkdir -p "$T_DIR"; exec 9>"$T_DIR/in-use.lock"; flock -x 9
    down ;;
  *) echo "usage: $0 up|fresh NAME...|down|status|down-after PID" >&2; exit 2 ;;
esac
