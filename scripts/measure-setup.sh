#!/usr/bin/env bash
# Time `scripts/setup.sh demo` then `scripts/setup.sh test` from nothing: a fresh Debian 12
# root (debootstrap minbase + python3, python3-venv, make, git, ca-certificates) with a clean
# clone of this repository's HEAD inside it. Needs root and network access to Debian and PyPI.
# Prints one line per step with its seconds; leaves the root in $ROOT_DIR (removed first).
set -euo pipefail
cd "$(dirname "$0")/.."
R=${ROOT_DIR:-/var/tmp/guardian-clean-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
say() { printf '[measure-setup] %s\n' "$*"; }
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
step() {  # step NAME COMMAND...: run and print its seconds
  local name=$1 t0; shift; t0=$(date +%s)
  "$@"
  say "$name: $(( $(date +%s) - t0 )) s (load $(cut -d' ' -f1-3 /proc/loadavg))"
}
rm -rf "$R"
step "debootstrap (not counted)" debootstrap --variant=minbase bookworm "$R" "$MIRROR" >/dev/null
cp /etc/resolv.conf "$R/etc/resolv.conf"
mount --rbind /proc "$R/proc"; mount --rbind /sys "$R/sys"; mount --rbind /dev "$R/dev"
trap 'umount -R "$R/proc" "$R/sys" "$R/dev" 2>/dev/null || true' EXIT
step "server-image extras (not counted)" chroot "$R" bash -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -qq --no-install-recommends python3 python3-venv make git ca-certificates >/dev/null'
# The host's CA bundle, in case its network path needs one of its certificates.
cp /etc/ssl/certs/ca-certificates.crt "$R/etc/ssl/certs/ca-certificates.crt"
git clone -q . "$R/root/guardian"
step "scripts/setup.sh demo" chroot "$R" bash -c 'cd /root/guardian && scripts/setup.sh demo'
step "scripts/setup.sh test (after demo)" chroot "$R" bash -c 'cd /root/guardian && scripts/setup.sh test'
