#!/usr/bin/env bash
# Builds the Heirflow local-cluster base image (Debian 13 + systemd + sshd) with debootstrap
# and `docker import` (no registry needed), plus the apt cache image (apt-cacher-ng) derived from it.
# Cached: images are tagged by a hash of this recipe; existing tags are not rebuilt.
# usage: cluster/image.sh [--force]      (--force rebuilds even if the tag exists)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

FORCE=0
[ "${1:-}" = "--force" ] && FORCE=1
need_root

# One build at a time: the test fixture and local-up may both call this script, and a second
# build would delete the first one's root filesystem under it.
mkdir -p "$CACHE_DIR"
exec 9>"$CACHE_DIR/image.lock"
flock 9

SUITE=$HF_SUITE
MIRROR=http://deb.debian.org/debian   # same as cluster/image/debian.sources (the host's working apt mirror)
PACKAGES=systemd,systemd-sysv,dbus,openssh-server,iproute2,iputils-ping,iputils-arping,python3,python3-venv,sudo,ca-certificates,curl,procps,netcat-openbsd,gnupg,less,tar,gzip,xz-utils
# Units that have no job in a container (no consoles, no kernel/fs setup to do).
MASK_UNITS=(
  getty@.service serial-getty@.service console-getty.service getty.target
  systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket
  systemd-udev-trigger.service systemd-udev-settle.service
  systemd-remount-fs.service systemd-firstboot.service sys-kernel-config.mount
  sys-kernel-debug.mount sys-kernel-tracing.mount sys-fs-fuse-connections.mount
  dev-hugepages.mount dev-mqueue.mount systemd-modules-load.service
  systemd-sysctl.service systemd-binfmt.service proc-sys-fs-binfmt_misc.automount
  apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer
)

T0=$(now)
BASE=$(base_image)
APTC=$(aptcache_image)
log "image recipe hash: ${BASE#*:}"

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

# drop images of older recipes (keep only the current tags; images still used by containers stay)
drop_old_images() {
  docker images --filter "label=$HF_LABEL" --format '{{.Repository}}:{{.Tag}}' \
    | grep -vxF -e "$BASE" -e "$APTC" | grep -v '<none>' | xargs -r docker rmi >/dev/null 2>&1 || true
}

if [ "$FORCE" = 0 ] && image_exists "$BASE" && image_exists "$APTC"; then
  info "$BASE and $APTC already exist (cached)"
  drop_old_images
  log "image ready in $(elapsed "$T0") s (cached)"
  exit 0
fi

ensure_host_pkgs debootstrap:debootstrap

if [ "$FORCE" = 1 ] || ! image_exists "$BASE"; then
  ROOTFS=/var/tmp/heirflow-rootfs
  DEBCACHE="$CACHE_DIR/debootstrap"
  mkdir -p "$DEBCACHE"
  rm -rf "$ROOTFS"
  log "debootstrap $SUITE from $MIRROR into $ROOTFS (takes about a minute)"
  t=$(now)
  debootstrap --variant=minbase --include="$PACKAGES" --cache-dir="$DEBCACHE" \
    "$SUITE" "$ROOTFS" "$MIRROR" > "$CACHE_DIR/debootstrap.log" 2>&1 \
    || { tail -20 "$CACHE_DIR/debootstrap.log"; die "debootstrap failed (log: $CACHE_DIR/debootstrap.log)"; }
  info "debootstrap done in $(elapsed "$t") s"

  log "configuring the root filesystem"
  # apt sources: the mirror that works from this machine
  rm -f "$ROOTFS/etc/apt/sources.list"
  install -m 0644 "$CLUSTER_DIR/image/debian.sources" "$ROOTFS/etc/apt/sources.list.d/debian.sources"
  # this machine's extra CAs (TLS interception) + pip pointed at the system bundle
  if compgen -G "/usr/local/share/ca-certificates/*" >/dev/null; then
    cp -a /usr/local/share/ca-certificates/. "$ROOTFS/usr/local/share/ca-certificates/"
  fi
  chroot "$ROOTFS" update-ca-certificates >/dev/null
  install -m 0644 "$CLUSTER_DIR/image/pip.conf" "$ROOTFS/etc/pip.conf"
  install -m 0644 "$CLUSTER_DIR/image/dpkg-local.cfg" "$ROOTFS/etc/dpkg/dpkg.cfg.d/heirflow-local"
  install -m 0644 "$CLUSTER_DIR/image/apt-local.conf" "$ROOTFS/etc/apt/apt.conf.d/90heirflow-local"
  # per-container SSH host keys, generated at boot
  rm -f "$ROOTFS"/etc/ssh/ssh_host_*
  install -D -m 0644 "$CLUSTER_DIR/image/ssh-hostkeys.conf" "$ROOTFS/etc/systemd/system/ssh.service.d/10-heirflow-hostkeys.conf"
  chroot "$ROOTFS" systemctl enable ssh.service >/dev/null 2>&1
  install -d -m 0700 "$ROOTFS/root/.ssh"
  # units useless in a container -> `systemctl is-system-running` = running
  chroot "$ROOTFS" systemctl mask "${MASK_UNITS[@]}" >/dev/null 2>&1
  chroot "$ROOTFS" systemctl set-default multi-user.target >/dev/null 2>&1
  # unique machine-id per container (systemd generates one at boot when empty)
  : > "$ROOTFS/etc/machine-id"
  rm -f "$ROOTFS/var/lib/dbus/machine-id"
  # small image: no package lists/debs (hosts run apt-get update like on EC2)
  rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/log/*.log
  echo "heirflow-base ${BASE#*:} built $(date -u +%FT%TZ)" > "$ROOTFS/etc/heirflow-image"

  log "docker import -> $BASE"
  t=$(now)
  tar --numeric-owner -C "$ROOTFS" -c . | docker import \
    -c 'CMD ["/sbin/init"]' -c 'LABEL heirflow=1' \
    -m "heirflow base (debootstrap $SUITE)" - "$BASE" >/dev/null
  info "import done in $(elapsed "$t") s ($(du -sh "$ROOTFS" | cut -f1) root filesystem)"
  rm -rf "$ROOTFS"
fi

if [ "$FORCE" = 1 ] || ! image_exists "$APTC"; then
  # The cluster's apt proxy (apt-cacher-ng, caches .debs). Python packages need no service:
  # the hosts' uv shares one cache directory (cluster/up.sh).
  log "building $APTC (apt-cacher-ng on top of the base image)"
  t=$(now)
  B=hf-imagebuild-cache
  docker rm -f "$B" >/dev/null 2>&1 || true
  docker run --name "$B" --label "$HF_LABEL" "$BASE" sh -ec '
    printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends apt-cacher-ng >/dev/null
    rm -f /usr/sbin/policy-rc.d; rm -rf /var/lib/apt/lists/*' \
    || { docker rm -f "$B" >/dev/null 2>&1; die "cache image build failed"; }
  docker commit \
    -c 'CMD ["/usr/sbin/apt-cacher-ng", "-c", "/etc/apt-cacher-ng", "ForeGround=1", "ConnectProto=v4", "CacheDir=/var/cache/apt-cacher-ng", "LogDir=/var/log/apt-cacher-ng"]' \
    -c 'LABEL heirflow=1' "$B" "$APTC" >/dev/null
  docker rm "$B" >/dev/null
  info "cache image done in $(elapsed "$t") s"
fi

drop_old_images
T=$(elapsed "$T0")
mkdir -p "$CACHE_DIR"; echo "$T" > "$CACHE_DIR/image-build-seconds"
log "images $BASE, $APTC built in $T s"
