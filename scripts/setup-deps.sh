#!/usr/bin/env bash
# Installs the Debian packages Sourcery builds and tests with, when any is
# missing (iproute2 and iptables: the fault tests cut links between hosts
# of their own, network namespaces on this machine).
set -euo pipefail

packages=(g++ cmake make ninja-build pkg-config libcaf-dev liblmdb-dev libmsgpack-cxx-dev libboost-dev
          nlohmann-json3-dev libcli11-dev libgtest-dev libtcmalloc-minimal4 libpq-dev libssl-dev
          openssl postgresql postgresql-client iproute2 iptables)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing: ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
# PostgreSQL: tests and demos start their own throwaway server
# (scripts/pg.sh); Debian's own cluster is not wanted.
$sudo mkdir -p /etc/postgresql-common/createcluster.d
echo "create_main_cluster = false" | $sudo tee /etc/postgresql-common/createcluster.d/sourcery.conf >/dev/null
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
