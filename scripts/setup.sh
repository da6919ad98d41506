#!/usr/bin/env bash
# Sets a fresh Debian 12 machine up for vmvault: system packages, npm dependencies, build.
# Run as root (or with sudo). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
PACKAGES=(
  build-essential python3 liblz4-dev # native addons (better-sqlite3, zstd-napi, vmvault's own: lz4)
  e2fsprogs dosfstools mtools gdisk fdisk   # filesystems and partition tables for tests
  qemu-utils qemu-system-x86 qemu-system-common   # qemu-img, qemu-nbd, qemu-io, qemu-storage-daemon
  libnbd-bin nbdkit                  # nbdinfo, nbdcopy, nbdkit: NBD peers
  busybox-static linux-image-amd64   # the tiny test guest
  restic borgbackup zstd time curl   # benchmark peers; /usr/bin/time -v for peak RSS; curl for the API
  attr                               # setfattr for xattr tests
  qemu-guest-agent cpio              # guest agent inside the test guest; cpio cross-check
)
missing=()
for p in "${PACKAGES[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# npm install, not npm ci: the lock file lists only the platform packages (@biomejs/cli-*) that
# the registry serves here, which npm ci rejects as out of sync. Versions still come from the lock.
npm install --no-audit --no-fund
npm run build
