# shellcheck shell=bash
# Shared settings for the Heirflow local cluster scripts (sourced, not executed).

CLUSTER_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$CLUSTER_DIR/.." && pwd)"
CACHE_DIR="$REPO_ROOT/.cache"

# Debian release of the hosts (cluster/image/debian.sources names the same suite).
HF_SUITE="trixie"
HF_LABEL="heirflow=1"                  # on every container, network, volume, image we create
HF_NETWORK="heirflow"
HF_SUBNET="172.30.0.0/24"
HF_GATEWAY="172.30.0.1"
HF_IP_RANGE="172.30.0.192/26"          # Docker's dynamic pool: never overlaps fixed IPs nor the VIP
HF_FLOATING_IP="172.30.0.100"
HF_PREFIX="172.30.0"
HF_DAGS_VOLUME="heirflow-dags"
HF_DAG_MOUNT="/mnt/airflow-dags"
HF_APTCACHE_NAME="hf-aptcache"
HF_APTCACHE_IP="$HF_PREFIX.2"
HF_APT_PROXY="http://$HF_APTCACHE_IP:3142"
HF_APT_CACHE_HOST="$CACHE_DIR/apt-cacher-ng"   # host-side caches: survive local-down
HF_UV_CACHE_HOST="$CACHE_DIR/uv"             # uv's cache, shared by the hosts (bind mount)
HF_UV_CACHE="/var/cache/heirflow-uv"
SSH_DIR="$CACHE_DIR/ssh"
SSH_KEY="$SSH_DIR/id_ed25519"
SSH_KNOWN_HOSTS="$SSH_DIR/known_hosts"
INVENTORY_DIR="$REPO_ROOT/inventory/local"

log()  { printf '\033[1;34m==>\033[0m %s\n' "$*"; }
info() { printf '    %s\n' "$*"; }
warn() { printf '\033[1;33mWARN:\033[0m %s\n' "$*" >&2; }
die()  { printf '\033[1;31mERROR:\033[0m %s\n' "$*" >&2; exit 1; }
now()  { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

need_root() { [ "$(id -u)" = 0 ] || die "run as root (debootstrap, docker)"; ensure_docker; }

# The Docker engine is the machine's service; start it (own session, so it outlives the
# caller) when it is not running, e.g. after it was stopped to clear a stale network endpoint.
ensure_docker() {
  docker info >/dev/null 2>&1 && return 0
  command -v dockerd >/dev/null 2>&1 || die "no Docker engine: docker info fails and dockerd is not installed"
  log "starting the Docker engine (dockerd)"
  service docker start >/dev/null 2>&1 || setsid -f dockerd >> /var/log/heirflow-dockerd.log 2>&1 < /dev/null
  local i
  for ((i = 0; i < 60; i++)); do docker info >/dev/null 2>&1 && return 0; sleep 1; done
  die "the Docker engine did not start (/var/log/heirflow-dockerd.log)"
}

# Apt-installs the given host packages if any of their commands are missing.
# usage: ensure_host_pkgs cmd:pkg ...
ensure_host_pkgs() {
  local missing=() spec
  for spec in "$@"; do
    command -v "${spec%%:*}" >/dev/null 2>&1 || missing+=("${spec#*:}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing host packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The apt proxy container's command (apt-cacher-ng) and the apt settings of the hosts that use
# it: cluster/up.sh (hf-aptcache) and tests/hosts.sh with HFT_APT_CACHE=1.
# FreshIndexMaxAge: release files fetched (warm-up below) less than 15 min ago are served as
# they are. With the default 27 s, hosts refreshing the same InRelease in the same second race
# in apt-cacher-ng ("Failure to move file ... out of the way"), one gets an error body and its
# apt-get update hung for good (seen in CI).
# Remap-debrep: the packaged default (file:deb_mirror*.gz backends) answers "503 Host not found"
# for deb.debian.org on a cold cache here, and apt then hangs on the closed connection.
APTCACHE_CMD=(/usr/sbin/apt-cacher-ng -c /etc/apt-cacher-ng ForeGround=1 ConnectProto=v4
  CacheDir=/var/cache/apt-cacher-ng LogDir=/var/log/apt-cacher-ng
  "Remap-debrep=deb.debian.org/debian ftp.debian.org/debian /debian ; deb.debian.org/debian"
  FreshIndexMaxAge=900)

# usage: apt_proxy_conf URL CONTAINER   the apt.conf.d text that sends a host's apt through it
apt_proxy_conf() {
  cat <<EOT
// Heirflow local hosts: apt through the apt-cacher-ng in $2.
// https sources are fetched directly.
Acquire::http::Proxy "$1";
// A cold apt-cacher-ng can stall one of many simultaneous first requests for a file: give up on a
// silent connection after 20 s and retry instead of hanging.
Acquire::http::Timeout "20";
Acquire::Retries "3";
// apt asks proxies to revalidate index files (max-age=0): twelve hosts refreshing the same
// InRelease at once race inside apt-cacher-ng. Lists up to 15 min old are fine here.
Acquire::http::Max-Age "900";
EOT
}

# usage: aptcache_warm CONTAINER   fetches the release files every host asks for first, one at a
# time, so that many simultaneous first requests do not race in a cold cache.
aptcache_warm() {
  local f
  for f in "debian/dists/$HF_SUITE/InRelease" "debian/dists/$HF_SUITE-updates/InRelease" \
           "debian-security/dists/$HF_SUITE-security/InRelease"; do
    docker exec "$1" python3 -c "import urllib.request as u, sys
req = u.Request('http://deb.debian.org/$f')
req.set_proxy('127.0.0.1:3142', 'http')
u.urlopen(req, timeout=60).read()" >/dev/null 2>&1 || warn "apt proxy warm-up: $f not fetched (hosts will retry)"
  done
}

# Files whose content defines the image. Changing any of them changes the tag.
image_recipe_files() {
  printf '%s\n' "$CLUSTER_DIR/image.sh"
  find "$CLUSTER_DIR/image" -type f | LC_ALL=C sort
  find /usr/local/share/ca-certificates -type f 2>/dev/null | LC_ALL=C sort
}

image_hash() {
  local f
  { echo "suite $HF_SUITE"
    image_recipe_files | while read -r f; do
      printf '%s\n' "${f#"$REPO_ROOT"/}"; cat "$f"
    done; } | sha256sum | cut -c1-12
}

base_image() { echo "heirflow-base:$(image_hash)"; }
aptcache_image() { echo "heirflow-cache:$(image_hash)"; }

# Host list: "name ip group" lines. Workers: WORKERS env, else 4 with >= 16 GiB free, else 2.
default_workers() {
  local avail_kb
  avail_kb=$(awk '/^MemAvailable:/ { print $2 }' /proc/meminfo)
  if [ "$avail_kb" -ge $((16 * 1024 * 1024)) ]; then echo 4; else echo 2; fi
}

# CPU weight (docker --cpu-shares; 1024 = the default) per host class. All 12 hosts share 2
# cores: under a busy workload (chaos runs, 16 tasks at once) an even share starved Postgres
# and RabbitMQ long enough to miss heartbeats and fail over for nothing. The services everything
# waits on weigh more; Celery task processes, which only slow down, weigh less.
cpu_shares() {
  case $1 in
    db) echo 4096 ;;
    queue|scheduler) echo 2048 ;;
    worker) echo 512 ;;
    *) echo 1024 ;;
  esac
}

# The cluster's hosts as they are now ("name ip group" lines): written by up.sh, edited by
# add.sh and remove.sh (make local-add / local-remove), removed by down.sh. Not in
# inventory/local: every file there is read as inventory.
HOSTS_FILE="$CACHE_DIR/cluster-hosts"

# Name prefix and address block (HF_PREFIX.<base+n>, n = 1..9; workers 1..39) of each group.
group_prefix() { case $1 in db) echo hf-db ;; queue) echo hf-queue ;; scheduler) echo hf-sched ;; worker) echo hf-worker ;; web) echo hf-web ;; *) return 1 ;; esac; }
group_base() { case $1 in db) echo 10 ;; queue) echo 20 ;; scheduler) echo 30 ;; worker) echo 60 ;; web) echo 50 ;; *) return 1 ;; esac; }
group_max() { [ "$1" = worker ] && echo 39 || echo 9; }

# The first shape of the cluster: 2 db, 3 queue, 2 scheduler, WORKERS workers, 1 web.
default_hosts() {
  local n=${WORKERS:-$(default_workers)} i
  [[ "$n" =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le 39 ] || die "WORKERS must be 1..39 (got '$n')"
  echo "hf-db1 $HF_PREFIX.11 db"
  echo "hf-db2 $HF_PREFIX.12 db"
  echo "hf-queue1 $HF_PREFIX.21 queue"
  echo "hf-queue2 $HF_PREFIX.22 queue"
  echo "hf-queue3 $HF_PREFIX.23 queue"
  echo "hf-sched1 $HF_PREFIX.31 scheduler"
  echo "hf-sched2 $HF_PREFIX.32 scheduler"
  for ((i = 1; i <= n; i++)); do echo "hf-worker$i $HF_PREFIX.$((60 + i)) worker"; done
  echo "hf-web1 $HF_PREFIX.51 web"
}

# The hosts: as the hosts file has them (hosts added or removed since up), else the first
# shape. WORKERS=n given explicitly starts again from the first shape with n workers.
cluster_hosts() {
  if [ -s "$HOSTS_FILE" ] && [ -z "${WORKERS:-}" ]; then
    grep -v '^#' "$HOSTS_FILE"
  else
    default_hosts
  fi
}
