# Shared by the benches that run hfplay on the SSH test hosts (tests/hosts.sh); sourced after
# cluster/lib.sh.

# ensure_hfplay: target/release/hfplay, built when missing or older than its sources
ensure_hfplay() {
  local bin=target/release/hfplay
  if [ ! -x "$bin" ] || [ -n "$(find src hfplay-derive Cargo.toml Cargo.lock -newer "$bin" -print -quit)" ]; then
    log "building hfplay (cargo build --release)"
    cargo build --release -q --workspace --bins --examples
  fi
}

# ensure_ansible: the pinned ansible-core + collections venv (scripts/ansible-venv.sh, shared
# with the tests and the Ansible-module fallback); sets VENV.
export ANSIBLE_CORE_VERSION=${ANSIBLE_CORE_VERSION:-2.19.14}
ensure_ansible() {
  VENV="$CACHE_DIR/ansible-venv"
  "$REPO_ROOT/scripts/ansible-venv.sh" >/dev/null
}

# test_hosts_up: starts (or repairs) the test hosts; sets INV (the inventory) and
# TEST_HOSTS_STARTED=1 when they were not all running before.
test_hosts_up() {
  TEST_HOSTS_STARTED=0
  tests/hosts.sh status || TEST_HOSTS_STARTED=1
  INV=$(tests/hosts.sh up 2>/dev/null | tail -1)
  [ -f "$INV" ] || die "tests/hosts.sh up failed (run it alone to see why)"
}

# test_hosts_down: removes the test hosts if test_hosts_up started them, unless BENCH_KEEP_HOSTS=1.
test_hosts_down() {
  if [ "${TEST_HOSTS_STARTED:-0}" = 1 ] && [ "${BENCH_KEEP_HOSTS:-0}" != 1 ]; then tests/hosts.sh down || true; fi
}
