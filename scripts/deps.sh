#!/usr/bin/env bash
# Installs the Debian packages Stock Bazaar needs to build, run, test and benchmark.
#   scripts/deps.sh run   only what `make run` needs
#   scripts/deps.sh [all] that and what tests, benchmarks and the evaluation need
# Idempotent: packages already present are skipped, and nothing is printed when
# everything is installed. Needs root (or sudo) only when something is missing.
set -euo pipefail

# What `make run` needs: the compiler, the libraries, the sqlite3 shell.
run_packages=(
  build-essential cmake pkg-config
  libmicrohttpd-dev libcurl4-openssl-dev libjansson-dev libsqlite3-dev libinih-dev
  libraft-dev libuv1-dev        # raft mode of the order replicas: CMake requires them, so `make run` does
  libcmocka-dev python3 sqlite3 curl   # cmocka: the default build configures the unit tests too
)
# What `make test`, `make bench` and `make eval` need on top: sanitizers, formatting, plots,
# load generators and references (nginx, and a 3-member etcd that `make bench` starts itself on
# free loopback ports: the package's own service is not used), network namespaces, and a
# headless browser for the status-page test; gdb, so that a test process that hangs on SIGTERM
# leaves its thread stacks in its log.
test_packages=(
  clang-14 libclang-rt-14-dev clang-format gdb
  gnuplot-nox wrk nginx-light iproute2
  etcd-server etcd-client
  chromium
)
case "${1:-all}" in
  run) packages=("${run_packages[@]}") ;;
  all) packages=("${run_packages[@]}" "${test_packages[@]}") ;;
  *) echo "usage: scripts/deps.sh [run|all]" >&2; exit 2 ;;
esac

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

echo "deps: installing ${missing[*]}" >&2
sudo=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "deps: need root or sudo to install ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
# Only refresh the package index when an install fails on a stale one.
if ! $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
