#!/usr/bin/env bash
# The whole test suite: builds, type-checks, runs the engine/CLI tests against qemu-img, then the
# end-to-end tests in a real VS Code. Installs what it needs (qemu-utils, the guest file-system tools) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
# The reference tools: qemu-utils, and for the guest-lens tests Debian's file-system and partition tools.
NEED=()
for pair in qemu-img:qemu-utils qemu-io:qemu-utils mkfs.ext4:e2fsprogs debugfs:e2fsprogs mkfs.vfat:dosfstools \
    mcopy:mtools sfdisk:fdisk sgdisk:gdisk mkfs.ntfs:ntfs-3g mkfs.xfs:xfsprogs mkfs.btrfs:btrfs-progs \
    cryptsetup:cryptsetup-bin genisoimage:genisoimage; do
  command -v "${pair%%:*}" >/dev/null || PATH="$PATH:/usr/sbin:/sbin" command -v "${pair%%:*}" >/dev/null || NEED+=("${pair#*:}")
done
if [ ${#NEED[@]} -gt 0 ]; then
  echo "test: installing ${NEED[*]}"
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(printf '%s\n' "${NEED[@]}" | sort -u) >/dev/null
fi
if [ ! -x /usr/bin/chromium ]; then
  echo "test: installing chromium (the webview's browser tests)"
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
[ -d node_modules ] || npm ci --no-audit --no-fund
npx tsc -p . --noEmit
node build.mjs
echo "=== engine and CLI tests (node --test)"
node --test --test-concurrency=2 dist-test/test/
if [ -x e2e/run.sh ] && [ "${SKIP_E2E:-}" != 1 ]; then
  echo "=== end-to-end tests in a real VS Code"
  bash e2e/run.sh
fi
