#!/usr/bin/env bash
# An EC2/EFS/IAM-compatible API server (moto, from PyPI) for the AWS tests: hfplay's amazon.aws
# modules and playbooks/aws.yml (tests/aws/aws-test.sh), heir-supervisor's `aws` floating-IP
# driver (heir-supervisor/tests/vip_aws.rs).
#
#   tests/aws/moto.sh up      install moto into .cache/moto-venv when missing (pinned), start the
#                             server on $HF_MOTO_ADDR (default 127.0.0.1:5055) unless it answers
#   tests/aws/moto.sh down    stop the server this script started (nothing else is left behind;
#                             the venv stays in .cache like the other caches)
#   tests/aws/moto.sh reset   forget every resource (POST /moto-api/reset)
#   tests/aws/moto.sh url     print the endpoint URL
#
# The server keeps everything in memory: `down` leaves no state behind. Its log is
# /tmp/heirflow-moto-PORT/server.log while it runs. Several servers on different ports may run at
# once (each test picks its own HF_MOTO_ADDR).
set -euo pipefail
cd "$(dirname "$0")/../.."
source cluster/lib.sh

MOTO_VERSION=${MOTO_VERSION:-5.2.6}
ADDR=${HF_MOTO_ADDR:-127.0.0.1:5055}
VENV=${CACHE_DIR:-.cache}/moto-venv
RUN_DIR=/tmp/heirflow-moto-${ADDR##*:}
URL="http://$ADDR"

answers() { curl -fsS -m 2 -o /dev/null "$URL/moto-api/data.json" 2>/dev/null; }

install() {
  if "$VENV/bin/python" -c "import moto, sys; sys.exit(moto.__version__ != '$MOTO_VERSION')" 2>/dev/null; then
    return
  fi
  log "installing moto[server]==$MOTO_VERSION into $VENV"
  # Debian's python3 needs python3-venv for ensurepip.
  python3 -m venv "$VENV" 2>/dev/null || {
    rm -rf "$VENV"
    apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    python3 -m venv "$VENV"
  }
  "$VENV/bin/pip" install -q --disable-pip-version-check "moto[server]==$MOTO_VERSION"
}

up() {
  if answers; then
    info "moto answers on $URL"
    return
  fi
  install
  mkdir -p "$RUN_DIR"
  local host=${ADDR%:*} port=${ADDR##*:}
  # setsid: the server outlives this script (the tests call `down`).
  setsid "$VENV/bin/moto_server" -H "$host" -p "$port" >"$RUN_DIR/server.log" 2>&1 </dev/null &
  echo $! >"$RUN_DIR/pid"
  for _ in $(seq 1 100); do
    answers && { info "moto $MOTO_VERSION answers on $URL"; return; }
    kill -0 "$(cat "$RUN_DIR/pid")" 2>/dev/null || { cat "$RUN_DIR/server.log" >&2; die "moto_server exited"; }
    sleep 0.2
  done
  die "moto_server did not answer on $URL within 20 s (log: $RUN_DIR/server.log)"
}

down() {
  if [ -f "$RUN_DIR/pid" ]; then
    kill "$(cat "$RUN_DIR/pid")" 2>/dev/null || true
  fi
  rm -rf "$RUN_DIR"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  reset) curl -fsS -m 5 -X POST "$URL/moto-api/reset" >/dev/null ;;
  url) echo "$URL" ;;
  *) die "usage: $0 up|down|reset|url" ;;
esac
