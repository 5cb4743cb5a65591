#!/usr/bin/env bash
# SSH test hosts for hfplay's integration tests and bench/: a few Docker containers from the
# local cluster's base image (systemd as PID 1, sshd, the project's SSH key), on their own
# network. Separate from the Heirflow cluster: network heirflow-test (172.31.0.0/24),
# containers hft-1..hft-N, label heirflow-test=1; nothing of `heirflow`/`hf-*` is touched.
#
# usage: tests/hosts.sh up           start (or repair) the hosts, write the inventory; idempotent
#        tests/hosts.sh down         remove the containers and the network
#        tests/hosts.sh status       exit 0 if every host is running and the inventory exists
#        tests/hosts.sh down-after PID   wait until process PID exits and no test binary uses
#                                        the hosts (in-use.lock), then `down` (test cleanup)
# env:   HFT_HOSTS=n (default 4, max 9)
# Prints nothing on stdout except, for `up`, the inventory path (last line). The inventory is
# .cache/test-hosts/hosts.ini (group `hft`, root login with the project key, the hosts' real
# SSH host keys in .cache/test-hosts/known_hosts).
set -euo pipefail
source "$(dirname "$0")/../cluster/lib.sh"

T_LABEL="heirflow-test=1"
T_NETWORK="heirflow-test"
T_SUBNET="172.31.0.0/24"
T_GATEWAY="172.31.0.1"
T_IP_RANGE="172.31.0.192/26"
T_PREFIX="172.31.0"
T_DIR="$CACHE_DIR/test-hosts"
T_INVENTORY="$T_DIR/hosts.ini"
T_KNOWN_HOSTS="$T_DIR/known_hosts"
N=${HFT_HOSTS:-4}
[[ "$N" =~ ^[1-9]$ ]] || die "HFT_HOSTS must be 1..9 (got '$N')"

# Same flags as cluster/up.sh (systemd as PID 1 under this Docker; see cluster/README.md).
SYSTEMD_FLAGS=(--cap-add ALL --cap-drop SYS_RESOURCE
  --security-opt seccomp=unconfined --security-opt apparmor=unconfined
  --cgroupns=private --tmpfs /run --tmpfs /run/lock --stop-signal SIGRTMIN+3)

hosts() { local i; for ((i = 1; i <= N; i++)); do echo "hft-$i $T_PREFIX.$((10 + i))"; done; }

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

up() {
  need_root
  local t0 base name ip line pubkey
  t0=$(now)
  command -v docker >/dev/null || die "docker is not installed"
  docker info >/dev/null 2>&1 || die "docker daemon not reachable"
  ensure_host_pkgs ssh:openssh-client ssh-keygen:openssh-client >&2
  ensure_image
  base=$(base_image)

  mkdir -p "$SSH_DIR" "$T_DIR"; chmod 700 "$SSH_DIR"
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
      --ip-range "$T_IP_RANGE" --label "$T_LABEL" -o com.docker.network.bridge.name=br-hftest \
      "$T_NETWORK" >/dev/null
  fi

  local created=()
  while read -r name ip; do
    if [ "$(cstate "$name")" != missing ] && [ "$(docker inspect -f '{{.Config.Image}}' "$name")" != "$base" ]; then
      log "$name runs an older image: recreating it" >&2
      docker rm -f "$name" >/dev/null
    fi
    case $(cstate "$name") in
      running) ;;
      stopped) docker start "$name" >/dev/null ;;
      missing)
        # The image carries the cluster's label heirflow=1; overriding it keeps cluster/down.sh
        # (which removes by that label) away from the test hosts.
        docker run -d --name "$name" --hostname "$name" --network "$T_NETWORK" --ip "$ip" \
          --label "$T_LABEL" --label heirflow=test-host "${SYSTEMD_FLAGS[@]}" "$base" /sbin/init >/dev/null
        created+=("$name") ;;
    esac
  done < <(hosts)
  [ ${#created[@]} -eq 0 ] || log "created ${created[*]}" >&2
  # surplus hosts (HFT_HOSTS lowered)
  for name in $(docker ps -a --filter "label=$T_LABEL" --format '{{.Names}}'); do
    hosts | awk '{print $1}' | grep -qx "$name" || docker rm -f "$name" >/dev/null
  done

  # authorized key + host keys through docker exec (a trusted channel), in parallel
  local tmpd pids=() fail=0 p
  tmpd=$(mktemp -d)
  while read -r name ip; do
    (
      docker exec -i "$name" sh -ec 'umask 077; mkdir -p /root/.ssh
        cat > /root/.ssh/authorized_keys.new; mv /root/.ssh/authorized_keys.new /root/.ssh/authorized_keys' <<< "$pubkey"
      for ((i = 0; i < 120; i++)); do
        k=$(docker exec "$name" sh -c 'cd /etc/ssh && cat ssh_host_ed25519_key.pub ssh_host_ecdsa_key.pub ssh_host_rsa_key.pub' 2>/dev/null) \
          && { printf '%s\n' "$k" | awk -v h="$name,$ip" '{ print h, $1, $2 }' > "$tmpd/$name"; exit 0; }
        sleep 0.25
      done
      warn "$name: no SSH host keys after 30 s (docker logs $name)"; exit 1
    ) & pids+=($!)
  done < <(hosts)
  for p in "${pids[@]}"; do wait "$p" || fail=1; done
  [ "$fail" = 0 ] || { rm -rf "$tmpd"; die "some test hosts did not start"; }
  cat "$tmpd"/* > "$T_KNOWN_HOSTS.tmp"; rm -rf "$tmpd"
  chmod 600 "$T_KNOWN_HOSTS.tmp"; mv "$T_KNOWN_HOSTS.tmp" "$T_KNOWN_HOSTS"

  # wait until the login every tool does works (strict host key checking)
  pids=()
  while read -r name ip; do
    (
      for ((i = 0; i < 120; i++)); do
        ssh -i "$SSH_KEY" -o BatchMode=yes -o ConnectTimeout=5 -o StrictHostKeyChecking=yes \
          -o UserKnownHostsFile="$T_KNOWN_HOSTS" -o LogLevel=ERROR "root@$ip" true 2>/dev/null && exit 0
        sleep 0.25
      done
      warn "ssh root@$ip ($name) failed"; exit 1
    ) & pids+=($!)
  done < <(hosts)
  fail=0; for p in "${pids[@]}"; do wait "$p" || fail=1; done
  [ "$fail" = 0 ] || die "ssh login failed on some test hosts"

  {
    echo "# Generated by tests/hosts.sh - do not edit."
    echo "[hft]"
    while read -r name ip; do echo "$name ansible_host=$ip"; done < <(hosts)
    echo
    echo "[all:vars]"
    echo "ansible_user=root"
    echo "ansible_ssh_private_key_file=$SSH_KEY"
    echo "ansible_ssh_common_args='-o StrictHostKeyChecking=yes -o UserKnownHostsFile=$T_KNOWN_HOSTS'"
  } > "$T_INVENTORY.tmp"
  mv "$T_INVENTORY.tmp" "$T_INVENTORY"
  log "test hosts up ($N) in $(elapsed "$t0") s" >&2
  echo "$T_INVENTORY"
}

down() {
  local cs nets
  mapfile -t cs < <(docker ps -aq --filter "label=$T_LABEL")
  [ ${#cs[@]} -eq 0 ] || docker rm -f "${cs[@]}" >/dev/null
  mapfile -t nets < <(docker network ls -q --filter "label=$T_LABEL")
  [ ${#nets[@]} -eq 0 ] || docker network rm "${nets[@]}" >/dev/null
  rm -f "$T_INVENTORY" "$T_KNOWN_HOSTS"
  log "test hosts down" >&2
}

status() {
  local name ip
  [ -f "$T_INVENTORY" ] || return 1
  while read -r name ip; do [ "$(cstate "$name")" = running ] || return 1; done < <(hosts)
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  down-after)
    pid=${2:?usage: tests/hosts.sh down-after PID}
    while kill -0 "$pid" 2>/dev/null; do sleep 0.5; done
    # Test binaries hold in-use.lock shared while they use the hosts (tests/support/mod.rs).
    mkdir -p "$T_DIR"; exec 9>"$T_DIR/in-use.lock"; flock -x 9
    down ;;
  *) echo "usage: $0 up|down|status|down-after PID" >&2; exit 2 ;;
esac
