#!/usr/bin/env bash
# The controller's Ansible installation for hfplay's Ansible-module fallback, its tests, the
# corpus compatibility suite and the benchmarks: ansible-core plus the `ansible` package (the
# community collections, e.g. community.mysql), from PyPI into .cache/ansible-venv. Pinned;
# idempotent (does nothing when the pinned versions are there). Prints the venv's python.
#
# usage: scripts/ansible-venv.sh
# env:   ANSIBLE_CORE_VERSION=2.19.14  ANSIBLE_VERSION=12.3.0 (the collections release built
#        on that core). Other versions go to .cache/ansible-venv-<core> (the compatibility
#        suite's reference for a role that only an older ansible-core loads).
set -euo pipefail
source "$(dirname "$0")/../cluster/lib.sh"
PIN_CORE=2.19.14 PIN_COLLECTIONS=12.3.0
CORE=${ANSIBLE_CORE_VERSION:-$PIN_CORE}
COLLECTIONS=${ANSIBLE_VERSION:-$PIN_COLLECTIONS}
VENV="$CACHE_DIR/ansible-venv"
[ "$CORE" = "$PIN_CORE" ] || VENV="$CACHE_DIR/ansible-venv-$CORE"
mkdir -p "$CACHE_DIR"
exec 9>"$VENV.lock"; flock 9   # the suite, the tests and benches may start together

have() { "$VENV/bin/python" -c 'import sys
from importlib.metadata import version
sys.exit(0 if (version("ansible-core"), version("ansible")) == tuple(sys.argv[1:]) else 1)' "$CORE" "$COLLECTIONS" 2>/dev/null; }
if ! have; then
  command -v python3 >/dev/null || die "python3 is needed for the Ansible installation"
  if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    need_root
    log "installing host package python3-venv" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  fi
  log "installing ansible-core==$CORE and ansible==$COLLECTIONS into $VENV (PyPI, ~1 min)" >&2
  python3 -m venv "$VENV" >&2
  "$VENV/bin/pip" install -q --disable-pip-version-check "ansible-core==$CORE" "ansible==$COLLECTIONS" >&2
  have || die "ansible-core $CORE / ansible $COLLECTIONS not importable in $VENV after install"
fi
echo "$VENV/bin/python"
