#!/usr/bin/env bash
# The Airflow UI in a real browser, on the deployed local cluster: headless Chromium (Playwright)
# opens https://<web host>:8080/ trusting the cluster CA and nothing added besides it, lands on
# the FAB login page (no "Simple auth manager enabled" banner), is refused with a wrong password,
# logs in as admin with the right one, reaches the Airflow UI and takes a full-page screenshot.
# A second browser without the cluster CA must refuse the page (net::ERR_CERT_AUTHORITY_INVALID):
# the certificate is verified, not waved through.
# The browser runs in a throwaway container on the cluster network (not on the controller, not
# on a cluster host), from an image derived from the cluster's base image with Debian's
# chromium-headless-shell, libnss3-tools and Playwright from PyPI (no browser download). The
# image is built once and reused while its recipe is unchanged (tag = hash of the recipe);
# nothing else is left behind. The screenshots stay in $UI_LOGIN_OUT (default: a new folder
# /tmp/heirflow-ui-login-test.XXXXXX, kept: the screenshot is what the test is for).
# env (all optional, for trying the test against another server): UI_LOGIN_URL (default
# https://<first web host>:8080/), UI_LOGIN_CA (default the cluster CA), UI_LOGIN_PASSWORD_FILE
# (default inventory/local/.secrets/airflow_admin_password), UI_LOGIN_USER (default admin).
# usage: tests/cluster/ui-login-test.sh   (after a deploy, e.g. from deploy-test.sh)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need_root

# --- the browser image: cluster base image + chromium-headless-shell + Playwright ---
PLAYWRIGHT_VERSION=1.65.3
UI_VENV=/opt/ui-test
# Run in a container of the base image (docker run + docker commit, as cluster/image.sh: no
# buildx here). The image's hash covers this text, the Playwright pin and the base image's tag.
UI_RECIPE='
printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium-headless-shell libnss3-tools >/dev/null
rm -f /usr/sbin/policy-rc.d; rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb
python3 -m venv "$UI_VENV"
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 "$UI_VENV/bin/pip" install -q --no-cache-dir --disable-pip-version-check "playwright==$PLAYWRIGHT_VERSION"
# the browser binary (Playwright launches it by path, it downloads none)
bin=$(ui_chromium)
"$bin" --version
'
# the headless shell executable of the Debian package (a function in the image and here)
# (the ELF executable, not /usr/bin/chromium-headless-shell, which starts it)
UI_CHROMIUM_FN='ui_chromium() {
  local f
  f=$(dpkg -L chromium-headless-shell | while read -r p; do
        case ${p##*/} in *headless*shell) [ -f "$p" ] && [ ! -L "$p" ] && [ -x "$p" ] && [ "$(head -c 4 "$p")" = "$(printf "\177ELF")" ] && echo "$p" ;; esac
      done || true)
  [ "$(printf "%s" "$f" | grep -c .)" = 1 ] || { echo "not one headless shell executable in chromium-headless-shell: ${f:-none}" >&2; return 1; }
  echo "$f"
}'
UI_IMAGE_REPO=heirflow-ui-test
# The label heirflow=1 (inherited from the base image) is overridden: cluster/image.sh removes
# images with it that are not the current base/cache tags, which would drop this cache on every
# local-up; tests/hosts.sh does the same for its hosts.
UI_LABEL="heirflow=ui-test"

ui_image() {
  local base hash img t b
  base=$(base_image)
  docker image inspect "$base" >/dev/null 2>&1 || "$CLUSTER_DIR/image.sh" >&2
  hash=$({ echo "$base"; echo "playwright $PLAYWRIGHT_VERSION venv $UI_VENV"; echo "$UI_CHROMIUM_FN"; echo "$UI_RECIPE"; } | sha256sum | cut -c1-12)
  img="$UI_IMAGE_REPO:$hash"
  mkdir -p "$CACHE_DIR"
  exec 8>"$CACHE_DIR/ui-test-image.lock"
  flock 8
  if docker image inspect "$img" >/dev/null 2>&1; then
    info "browser image $img (cached)" >&2
  else
    log "building the browser image $img (chromium-headless-shell, playwright==$PLAYWRIGHT_VERSION)" >&2
    t=$(now)
    b=hf-ui-test-build-$$
    docker rm -f "$b" >/dev/null 2>&1 || true
    trap 'docker rm -f "$b" >/dev/null 2>&1 || true' EXIT   # (this function runs in a subshell)
    if ! docker run --name "$b" --label "$UI_LABEL" --cpu-shares 512 "$base" bash -ec \
        "UI_VENV='$UI_VENV'; PLAYWRIGHT_VERSION='$PLAYWRIGHT_VERSION'; $UI_CHROMIUM_FN
$UI_RECIPE" >&2; then
      docker rm -f "$b" >/dev/null 2>&1 || true
      fail "building the browser image failed"
    fi
    docker commit -c 'CMD ["/bin/bash"]' -c "LABEL $UI_LABEL" -c "LABEL heirflow.ui-test.recipe=$hash" \
      -c 'ENV PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1' "$b" "$img" >/dev/null
    docker rm "$b" >/dev/null
    info "browser image built in $(elapsed "$t") s" >&2
  fi
  # images of older recipes (kept while a container uses them)
  docker images "$UI_IMAGE_REPO" --format '{{.Repository}}:{{.Tag}}' | grep -vxF "$img" \
    | xargs -r docker rmi >/dev/null 2>&1 || true
  flock -u 8
  echo "$img"
}

# --- what to test ---
web=$(group_hosts web | head -1)
[ -n "$web" ] || fail "no web host in the cluster"
URL=${UI_LOGIN_URL:-https://$(host_ip "$web"):8080/}
CA=${UI_LOGIN_CA:-$INVENTORY_DIR/.secrets/tls/ca.crt}
PWFILE=${UI_LOGIN_PASSWORD_FILE:-$INVENTORY_DIR/.secrets/airflow_admin_password}
USER_NAME=${UI_LOGIN_USER:-admin}
[ -s "$CA" ] || fail "no CA certificate at $CA"
[ -s "$PWFILE" ] || fail "no admin password at $PWFILE"
docker network inspect "$HF_NETWORK" >/dev/null 2>&1 || fail "no Docker network $HF_NETWORK: is the cluster up (make local-up)?"
OUT=${UI_LOGIN_OUT:-$(mktemp -d /tmp/heirflow-ui-login-test.XXXXXX)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

ORIGIN=$(sed -E 's|^(https://[^/]+).*|\1|' <<< "$URL")
step "the api-server answers over HTTPS ($ORIGIN, verified with curl --cacert)"
ensure_host_pkgs curl:curl
code=""; for _ in $(seq 30); do  # the api-server may still be starting after the deploy
  code=$(curl -sS -o /dev/null -m 10 -w '%{http_code}' --cacert "$CA" "$ORIGIN/api/v2/monitor/health" 2>&1 || true)
  [ "$code" = 200 ] && break; sleep 2
done
[ "$code" = 200 ] || fail "$ORIGIN/api/v2/monitor/health with the CA: $code (want 200)"
pass "$ORIGIN/api/v2/monitor/health: 200 over HTTPS, verified against $(basename "$CA")"

step "browser image"
IMG=$(ui_image)
pass "browser image $IMG"

step "headless Chromium against $URL (user $USER_NAME)"
NAME=hf-ui-test-$$
trap 'docker rm -f "$NAME" >/dev/null 2>&1 || true' EXIT
# Two homes: trusted (its NSS database holds the cluster CA, nothing else added) and untrusted
# (none). Chromium on Linux takes locally added trust anchors from $HOME/.pki/nssdb only.
rc=0
docker run --rm --name "$NAME" --label "$UI_LABEL" --network "$HF_NETWORK" --cpu-shares 512 \
  --shm-size 256m \
  -v "$TESTS_DIR/ui_login.py:/ui/ui_login.py:ro" -v "$CA:/ui/ca.crt:ro" \
  -v "$PWFILE:/ui/password:ro" -v "$OUT:/out" \
  "$IMG" bash -ec "$UI_CHROMIUM_FN"'
    mkdir -p /ui-home/trusted/.pki/nssdb /ui-home/untrusted
    certutil -N -d sql:/ui-home/trusted/.pki/nssdb --empty-password
    certutil -A -d sql:/ui-home/trusted/.pki/nssdb -t C,, -n heirflow -i /ui/ca.crt
    echo "NSS database of the trusted browser:"; certutil -L -d sql:/ui-home/trusted/.pki/nssdb | sed "s/^/  /"
    exec '"$UI_VENV"'/bin/python /ui/ui_login.py --chromium "$(ui_chromium)" \
      --trusted-home /ui-home/trusted --untrusted-home /ui-home/untrusted \
      --user "$1" --password-file /ui/password --out-dir /out "$2"' \
  ui-test "$USER_NAME" "$URL" || rc=$?
shots=("$OUT"/*.png); [ -e "${shots[0]}" ] && echo "screenshots in $OUT: ${shots[*]##*/}"
[ "$rc" = 0 ] || fail "UI login test: a check failed (exit $rc; screenshots and page text: $OUT)"

# the screenshot the test is for: a PNG of the logged-in UI, at least 800x600
read -r w h < <(python3 -c 'import struct, sys
d = open(sys.argv[1], "rb").read(24)
assert d[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
print(*struct.unpack(">II", d[16:24]))' "$OUT/ui-login.png") || fail "$OUT/ui-login.png is not a PNG"
[ "$w" -ge 800 ] && [ "$h" -ge 600 ] || fail "$OUT/ui-login.png is ${w}x$h"
pass "full-page screenshot of the logged-in UI: $OUT/ui-login.png (${w}x$h, $(du -k "$OUT/ui-login.png" | cut -f1) KiB)"
