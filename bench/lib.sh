# Shared by the benches that run hfplay on the SSH test hosts (tests/hosts.sh); sourced after
# cluster/lib.sh.

# ensure_hfplay: target/release/hfplay, built when missing or older than its sources
ensure_hfplay() {
  local bin=target/release/hfplay
  if [ ! -x "$bin" ] || [ -n "$(find src hfplay-derive Cargo.toml Cargo.lock -newer "$bin" -print -quit)" ]; then
    log "building hfplay (cargo build --release)"
    cargo build --release -q --bin hfplay
  fi
}

# ensure_ansible [PKG==VERSION...]: ansible-core==$ANSIBLE_CORE_VERSION (default 2.19.14), and
# the given packages (e.g. ansible==12.3.0 for its collections), from PyPI into
# .cache/ansible-venv when missing or at another version; sets VENV. One install at a time.
ANSIBLE_CORE_VERSION=${ANSIBLE_CORE_VERSION:-2.19.14}
ensure_ansible() {
  VENV="$CACHE_DIR/ansible-venv"
  local want=("ansible-core==$ANSIBLE_CORE_VERSION" "$@") missing=() spec have
  mkdir -p "$CACHE_DIR"
  exec 7>"$CACHE_DIR/ansible-venv.lock"; flock 7
  for spec in "${want[@]}"; do
    have=$("$VENV/bin/python" -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "${spec%%==*}" 2>/dev/null || true)
    [ "$have" = "${spec#*==}" ] || missing+=("$spec")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]} into $VENV (from PyPI)"
    [ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "${want[@]}"
  fi
  flock -u 7; exec 7>&-
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
