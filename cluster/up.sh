#!/usr/bin/env bash
# Starts the Heirflow local cluster: one Docker container per host (systemd as PID 1, sshd),
# on a private network with fixed addresses, plus the apt cache; writes inventory/local.
# Idempotent: existing running containers are left as they are, stopped ones are started.
# env: WORKERS=n (default 4 with >= 16 GiB available memory, else 2)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need_root
T0=$(now)

ensure_host_pkgs ssh:openssh-client ssh-keygen:openssh-client openssl:openssl flock:util-linux
"$CLUSTER_DIR/image.sh"
BASE=$(base_image)
APTC=$(aptcache_image)
mapfile -t HOSTS < <(cluster_hosts)

# --- SSH key (generated once, kept across local-down) ---
mkdir -p "$SSH_DIR"; chmod 700 "$SSH_DIR"
if [ ! -f "$SSH_KEY" ]; then
  log "generating project SSH key $SSH_KEY"
  ssh-keygen -q -t ed25519 -N '' -C heirflow-local -f "$SSH_KEY"
fi
PUBKEY=$(cat "$SSH_KEY.pub")

# --- network, volume, host-side caches ---
if docker network inspect "$HF_NETWORK" >/dev/null 2>&1; then
  subnet=$(docker network inspect -f '{{range .IPAM.Config}}{{.Subnet}}{{end}}' "$HF_NETWORK")
  [ "$subnet" = "$HF_SUBNET" ] || die "network $HF_NETWORK exists with subnet $subnet (want $HF_SUBNET): run make local-down"
else
  log "creating network $HF_NETWORK ($HF_SUBNET, gateway $HF_GATEWAY, dynamic pool $HF_IP_RANGE)"
  docker network create --driver bridge --subnet "$HF_SUBNET" --gateway "$HF_GATEWAY" \
    --ip-range "$HF_IP_RANGE" --label "$HF_LABEL" \
    -o com.docker.network.bridge.name=br-heirflow "$HF_NETWORK" >/dev/null
fi
if ! docker volume inspect "$HF_DAGS_VOLUME" >/dev/null 2>&1; then
  log "creating volume $HF_DAGS_VOLUME (shared DAG folder)"
  docker volume create --label "$HF_LABEL" "$HF_DAGS_VOLUME" >/dev/null
fi
mkdir -p "$HF_APT_CACHE_HOST" "$HF_UV_CACHE_HOST"

# state of a container: missing | running | stopped
cstate() {
  local s
  s=$(docker inspect -f '{{.State.Running}}' "$1" 2>/dev/null) || { echo missing; return; }
  [ "$s" = true ] && echo running || echo stopped
}

# --- apt cache service (cache kept on the host in .cache/, it survives local-down) ---
# usage: service NAME IP DESCRIPTION -- docker-run-args... IMAGE [CMD...]
service() {
  local name=$1 ip=$2 desc=$3; shift 4
  if [ "$(cstate "$name")" != missing ] && [ "$(docker inspect -f '{{.Config.Image}}' "$name")" != "$APTC" ]; then
    info "$name runs an older image: recreating it"; docker rm -f "$name" >/dev/null
  fi
  case $(cstate "$name") in
    missing)
      log "starting $name ($desc)"
      docker run -d --name "$name" --hostname "$name" --network "$HF_NETWORK" --ip "$ip" \
        --label "$HF_LABEL" --label heirflow.role=cache --restart unless-stopped "$@" >/dev/null ;;
    stopped) log "starting stopped $name"; docker start "$name" >/dev/null ;;
  esac
}
# apt-cacher-ng's settings: APTCACHE_CMD in cluster/lib.sh.
service "$HF_APTCACHE_NAME" "$HF_APTCACHE_IP" "apt proxy $HF_APT_PROXY" -- \
  -v "$HF_APT_CACHE_HOST:/var/cache/apt-cacher-ng" "$APTC" "${APTCACHE_CMD[@]}"

# --- hosts ---
# Flags for systemd as PID 1 under Docker 20.10 / cgroup v1 (see cluster/README.md):
SYSTEMD_FLAGS=(--cap-add ALL --cap-drop SYS_RESOURCE
  --security-opt seccomp=unconfined --security-opt apparmor=unconfined
  --cgroupns=private --tmpfs /run --tmpfs /run/lock --stop-signal SIGRTMIN+3)

declare -A WANT=()
STALE=()
for line in "${HOSTS[@]}"; do
  read -r name ip group <<< "$line"; WANT[$name]=1
  state=$(cstate "$name")
  if [ "$state" != missing ]; then
    cur_ip=$(docker inspect -f "{{(index .NetworkSettings.Networks \"$HF_NETWORK\").IPAddress}}" "$name" 2>/dev/null || true)
    img=$(docker inspect -f '{{.Config.Image}}' "$name")
    [ "$img" = "$BASE" ] || STALE+=("$name")
  fi
  # CPU weight per class (cluster/lib.sh cpu_shares), also for containers that already exist
  [ "$state" = missing ] || docker update --cpu-shares "$(cpu_shares "$group")" "$name" >/dev/null
  case $state in
    running) [ -z "$cur_ip" ] && warn "$name is running but not attached to $HF_NETWORK (partition test left over?)"; continue ;;
    stopped) log "starting stopped $name"; docker start "$name" >/dev/null; continue ;;
  esac
  # uv's cache directory is shared by every host (uv locks its cache entries, so concurrent
  # installs on several hosts fetch each file once; it survives local-down).
  mounts=(-v "$HF_UV_CACHE_HOST:$HF_UV_CACHE")
  case $group in scheduler|worker|web)
    mounts+=(-v "$HF_DAGS_VOLUME:$HF_DAG_MOUNT")
    # /opt (the Airflow venv, ~20k files) on a volume of its own, as on a host's disk: the
    # containers' root filesystem is fuse-overlayfs here, whose daemon costs CPU per file.
    docker volume inspect "$name-opt" >/dev/null 2>&1 \
      || docker volume create --label "$HF_LABEL" "$name-opt" >/dev/null
    mounts+=(-v "$name-opt:/opt") ;;
  esac
  log "creating $name ($ip, $group)"
  docker run -d --name "$name" --hostname "$name" --network "$HF_NETWORK" --ip "$ip" \
    --label "$HF_LABEL" --label "heirflow.group=$group" --cpu-shares "$(cpu_shares "$group")" \
    "${SYSTEMD_FLAGS[@]}" ${mounts[@]+"${mounts[@]}"} "$BASE" /sbin/init >/dev/null
done

[ ${#STALE[@]} -eq 0 ] || warn "${STALE[*]} run an older image than $BASE (kept as is; make local-down && make local-up recreates them)"

# hosts no longer in the list (cluster/remove.sh, or fewer WORKERS): container and its volume
for name in $(docker ps -a --filter "label=$HF_LABEL" --filter label=heirflow.group --format '{{.Names}}'); do
  if [ -z "${WANT[$name]:-}" ]; then
    log "removing $name (no longer in $HOSTS_FILE)"; docker rm -f "$name" >/dev/null
    docker volume rm "$name-opt" >/dev/null 2>&1 || true
  fi
done

# --- per-host environment facts: root's authorized key, apt proxy, uv settings (idempotent) ---
APT_PROXY_CONF=$(apt_proxy_conf "$HF_APT_PROXY" "$HF_APTCACHE_NAME")
# uv (the roles install Python packages with it) reads PyPI directly, trusting the system CA
# bundle (this machine's egress intercepts TLS), with its cache on the shared mount (another
# filesystem than the venvs: copy, as hardlinks cannot cross it).
UV_CONF="# Heirflow local cluster (cluster/up.sh): environment facts, not role settings.
cache-dir = \"$HF_UV_CACHE\"
link-mode = \"copy\"
system-certs = true"
for line in "${HOSTS[@]}"; do
  read -r name ip group <<< "$line"
  docker exec -i "$name" sh -ec '
    umask 022; mkdir -p /root/.ssh /etc/uv; chmod 700 /root/.ssh
    cat > /root/.ssh/authorized_keys.new; chmod 600 /root/.ssh/authorized_keys.new
    mv /root/.ssh/authorized_keys.new /root/.ssh/authorized_keys
    printf "%s\n" "$1" > /etc/apt/apt.conf.d/01heirflow-proxy
    printf "%s\n" "$2" > /etc/uv/uv.toml' \
    sh "$APT_PROXY_CONF" "$UV_CONF" <<< "$PUBKEY" &
done
wait

log "warming the apt proxy"
aptcache_warm "$HF_APTCACHE_NAME"

# --- host keys (read over docker exec: a trusted channel, no TOFU), then wait for ssh logins ---
log "waiting for sshd on ${#HOSTS[@]} hosts"
hostkey() {  # prints "name,ip <pubkey>" lines once the host generated its keys
  local i
  for ((i = 0; i < 120; i++)); do
    k=$(docker exec "$1" sh -c 'cd /etc/ssh && cat ssh_host_ed25519_key.pub ssh_host_ecdsa_key.pub ssh_host_rsa_key.pub' 2>/dev/null) \
      && { printf '%s\n' "$k" | awk -v h="$1,$2" '{ print h, $1, $2 }'; return 0; }
    sleep 0.5
  done
  warn "$1: no SSH host key after 60 s (docker logs $1)"; return 1
}
tmpd=$(mktemp -d)
pids=()
for line in "${HOSTS[@]}"; do read -r name ip group <<< "$line"; hostkey "$name" "$ip" > "$tmpd/$name" & pids+=($!); done
fail=0; for p in "${pids[@]}"; do wait "$p" || fail=1; done
[ "$fail" = 0 ] || { rm -rf "$tmpd"; die "some hosts did not start sshd"; }
for line in "${HOSTS[@]}"; do read -r name ip group <<< "$line"; cat "$tmpd/$name"; done > "$SSH_KNOWN_HOSTS.tmp"
rm -rf "$tmpd"; chmod 600 "$SSH_KNOWN_HOSTS.tmp"; mv "$SSH_KNOWN_HOSTS.tmp" "$SSH_KNOWN_HOSTS"

# the login every tool will do, strict host key checking (parallel, retried while sshd starts).
# KexAlgorithms: OpenSSH 9's default sntrup761x25519 costs ~4x the CPU per handshake on 2 cores.
check_login() {
  local i
  for ((i = 0; i < 60; i++)); do
    ssh -i "$SSH_KEY" -o BatchMode=yes -o ConnectTimeout=10 -o StrictHostKeyChecking=yes \
      -o KexAlgorithms=curve25519-sha256 -o UserKnownHostsFile="$SSH_KNOWN_HOSTS" -o LogLevel=ERROR \
      "root@$1" true 2>/dev/null && return 0
    sleep 0.5
  done
  warn "ssh root@$1 failed"; return 1
}
pids=(); for line in "${HOSTS[@]}"; do read -r name ip group <<< "$line"; check_login "$ip" & pids+=($!); done
fail=0; for p in "${pids[@]}"; do wait "$p" || fail=1; done
[ "$fail" = 0 ] || die "ssh login failed on some hosts"

# --- inventory ---
mkdir -p "$INVENTORY_DIR/group_vars"
{
  echo "# Generated by cluster/up.sh - do not edit (make local-up / local-add / local-remove)."
  for group in db queue scheduler worker web; do
    echo; echo "[$group]"
    for line in "${HOSTS[@]}"; do
      read -r name ip g <<< "$line"; [ "$g" = "$group" ] && echo "$name ansible_host=$ip"
    done
  done
  echo
  echo "[airflow:children]"; echo scheduler; echo worker; echo web
  echo
  echo "[all:vars]"
  echo "ansible_user=root"
  echo "ansible_ssh_private_key_file=$SSH_KEY"
  # curve25519: OpenSSH's default post-quantum key exchange costs ~4x the CPU per handshake
  # on these 2 cores (cluster/README.md); the cluster is throwaway and local.
  echo "ansible_ssh_common_args='-o StrictHostKeyChecking=yes -o UserKnownHostsFile=$SSH_KNOWN_HOSTS -o KexAlgorithms=curve25519-sha256'"
} > "$INVENTORY_DIR/hosts.ini.tmp"
mv "$INVENTORY_DIR/hosts.ini.tmp" "$INVENTORY_DIR/hosts.ini"
{ echo "# The local cluster's hosts (name address group), kept by cluster/up.sh, add.sh, remove.sh"
  printf '%s\n' "${HOSTS[@]}"; } > "$HOSTS_FILE.tmp"
mv "$HOSTS_FILE.tmp" "$HOSTS_FILE"
cat > "$INVENTORY_DIR/group_vars/all.yml.tmp" <<YAML
# Generated by cluster/up.sh - do not edit (re-run make local-up).
# Cluster data for the local (Docker) environment; production inventories set the same names.
heirflow_env: local
heirflow_cluster_subnet: $HF_SUBNET
heirflow_floating_ip: $HF_FLOATING_IP
heirflow_floating_ip_prefix: 24
heirflow_netplan_enabled: false
heirflow_dag_storage: volume
heirflow_dag_mount: $HF_DAG_MOUNT
# Informational (already configured on every host by cluster/up.sh, roles need not act on them):
heirflow_apt_proxy: "$HF_APT_PROXY"
heirflow_uv_cache_dir: "$HF_UV_CACHE"
YAML
mv "$INVENTORY_DIR/group_vars/all.yml.tmp" "$INVENTORY_DIR/group_vars/all.yml"

log "cluster up: ${#HOSTS[@]} hosts + $HF_APTCACHE_NAME in $(elapsed "$T0") s"
for line in "${HOSTS[@]}"; do read -r name ip group <<< "$line"; printf '    %-11s %-13s %s\n' "$name" "$ip" "$group"; done
info "inventory: $INVENTORY_DIR/hosts.ini   floating IP (free): $HF_FLOATING_IP"
info "ssh: ssh -i $SSH_KEY -o UserKnownHostsFile=$SSH_KNOWN_HOSTS root@<ip>"
