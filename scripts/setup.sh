#!/usr/bin/env bash
# Install everything tvm_tinyseg needs on a fresh Debian/Ubuntu machine: C toolchains (host gcc,
# arm-none-eabi-gcc for Cortex-M builds, qemu-system-arm to run them, avr-gcc, arduino-builder and
# simavr for the Arduino project) and the Python package with its test references.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(gcc g++ make gcc-arm-none-eabi libnewlib-arm-none-eabi picolibc-arm-none-eabi qemu-system-arm
              gcc-avr avr-libc simavr libsimavr-dev arduino-core-avr arduino-builder
              valgrind)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

PYTHON=${PYTHON:-python3}
"$PYTHON" -m pip install -q --disable-pip-version-check -e ".[test,plot]"
