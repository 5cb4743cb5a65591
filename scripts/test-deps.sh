#!/usr/bin/env bash
# Installs what the tests need on the controller (idempotent, Debian/Ubuntu):
# PostgreSQL server binaries for heir-supervisor's tests (they start throwaway instances),
# debootstrap/ssh for the test hosts and the local cluster (cluster/*.sh also check these).
set -euo pipefail
source "$(dirname "$0")/../cluster/lib.sh"
need_root
pg_ok() { command -v pg_ctl >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null; }
pg_ok || {
  log "installing PostgreSQL (server binaries for heir-supervisor's tests)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  # the packaged cluster is not used: tests start their own instances
  systemctl disable --now postgresql >/dev/null 2>&1 || service postgresql stop >/dev/null 2>&1 || true
}
ensure_host_pkgs debootstrap:debootstrap ssh:openssh-client ssh-keygen:openssh-client python3:python3 curl:curl \
  iptables:iptables arping:iputils-arping ip:iproute2 tmux:tmux openssl:openssl
# ansible-core + collections for the Ansible-module fallback's tests (tests/ssh.rs)
"$(dirname "$0")/ansible-venv.sh" >/dev/null
