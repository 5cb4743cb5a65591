#!/usr/bin/env bash
# Removes everything cluster/up.sh created: containers, network, volumes, generated inventory
# files and known_hosts (all Docker objects are found by the label heirflow=1).
# Keeps the cached images, the SSH key and the host-side apt/uv caches in .cache/.
# usage: cluster/down.sh [--clean|--caches]
#   --clean   also removes the images and the apt/uv/debootstrap caches
#   --caches  also empties the apt/uv caches (keeps the images): the next up + deploy is cold
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need_root
T0=$(now)

mapfile -t cs < <(docker ps -aq --filter "label=$HF_LABEL")
if [ ${#cs[@]} -gt 0 ]; then
  log "removing ${#cs[@]} containers"
  docker rm -f "${cs[@]}" >/dev/null
fi
mapfile -t nets < <(docker network ls -q --filter "label=$HF_LABEL")
if [ ${#nets[@]} -gt 0 ]; then log "removing network(s)"; docker network rm "${nets[@]}" >/dev/null; fi
mapfile -t vols < <(docker volume ls -q --filter "label=$HF_LABEL")
if [ ${#vols[@]} -gt 0 ]; then log "removing volume(s): ${vols[*]}"; docker volume rm "${vols[@]}" >/dev/null; fi
rm -f "$INVENTORY_DIR/hosts.ini" "$HOSTS_FILE" "$INVENTORY_DIR/group_vars/all.yml" "$SSH_KNOWN_HOSTS"
rmdir "$INVENTORY_DIR/group_vars" "$INVENTORY_DIR" 2>/dev/null || true

case "${1:-}" in ""|--clean|--caches) ;; *) die "usage: cluster/down.sh [--clean|--caches]" ;; esac
if [ "${1:-}" = "--caches" ]; then
  log "emptying host caches (apt, uv)"
  rm -rf "$HF_APT_CACHE_HOST" "$HF_UV_CACHE_HOST" "$CACHE_DIR/devpi"
fi
if [ "${1:-}" = "--clean" ]; then
  # the cluster's images, and the browser image of tests/cluster/ui-login-test.sh
  mapfile -t imgs < <({ docker images -q --filter "label=$HF_LABEL"; docker images -q --filter label=heirflow=ui-test; } | sort -u)
  if [ ${#imgs[@]} -gt 0 ]; then log "removing ${#imgs[@]} images"; docker rmi -f "${imgs[@]}" >/dev/null; fi
  log "removing host caches (apt, uv, debootstrap)"
  rm -rf "$HF_APT_CACHE_HOST" "$HF_UV_CACHE_HOST" "$CACHE_DIR/devpi" "$CACHE_DIR/pip" "$CACHE_DIR/debootstrap" "$CACHE_DIR/image-build-seconds"
fi
log "cluster down in $(elapsed "$T0") s"
