#!/bin/sh
# Installs every Debian 12 package flt needs to build, test and run. Idempotent: quiet and fast
# when everything is present. Must run as root (or through sudo).
set -eu

PACKAGES="g++ cmake make pkg-config git ca-certificates
libeigen3-dev libopenblas-openmp-dev libfftw3-dev libboost-dev libboost-program-options-dev
zlib1g-dev libarchive-dev librdkit-dev catch2 nlohmann-json3-dev python3 python3-numpy python3-scipy
python3-dev pybind11-dev python3-rdkit python3-pytest python3-ase
libopenmpi-dev openmpi-bin time
dataset-fashion-mnist"

missing=""
for package in $PACKAGES; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing="$missing $package"
  fi
done

if [ -z "$missing" ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps.sh: these Debian packages are missing:$missing" >&2
  echo "install-deps.sh: run as root, e.g. 'sudo tools/install-deps.sh'" >&2
  exit 1
fi

echo "install-deps.sh: installing:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
echo "install-deps.sh: done"
