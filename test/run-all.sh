#!/usr/bin/env bash
# The whole test suite: type-checks, lints, builds, runs the engine/CLI tests against qemu-img, the
# webview tests in chromium, then the end-to-end tests in a real VS Code. Installs what it needs
# (qemu-utils, the guest file-system tools, chromium) when missing. Every suite runs even when an earlier one failed; the last
# line counts each suite's tests, and the exit code is non-zero when any failed.
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
echo "=== type check, lint, build"
npx tsc -p . --noEmit
npm run --silent lint
node build.mjs

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
summary=(); failed=0

# node --test: the spec reporter for the log (one line per test), TAP into a file for the counts
node_suite() { # name, files…
  local name=$1; shift
  echo "=== $name (node --test)"
  local rc=0
  node --test --test-concurrency=2 --test-reporter=spec --test-reporter-destination=stdout \
    --test-reporter=tap --test-reporter-destination="$logs/$name.tap" "$@" || rc=$?
  local pass fail
  pass=$(grep -E '^# pass [0-9]+$' "$logs/$name.tap" | tail -1 | awk '{print $3}' || true)
  fail=$(grep -E '^# fail [0-9]+$' "$logs/$name.tap" | tail -1 | awk '{print $3}' || true)
  [ "$rc" = 0 ] || [ "${fail:-0}" != 0 ] || fail=1 # the runner itself failed (e.g. a file did not load)
  summary+=("$name ${pass:-0} passed, ${fail:-0} failed")
  [ "$rc" = 0 ] || failed=1
}

mapfile -t engine_tests < <(find dist-test/test -name '*.test.js' -not -path 'dist-test/test/webview/*' | sort)
node_suite "engine and CLI" "${engine_tests[@]}"
node_suite webview dist-test/test/webview/

if [ -x e2e/run.sh ] && [ "${SKIP_E2E:-}" != 1 ]; then
  echo "=== end-to-end tests in a real VS Code"
  rc=0
  bash e2e/run.sh | tee "$logs/e2e.log" || rc=$?
  # e2e/run.sh ends with "e2e: N passed, N failed" (counting its suites: vsix, exthost, ui)
  counts=$(grep -oE '^e2e: [0-9]+ passed, [0-9]+ failed' "$logs/e2e.log" | tail -1 | sed 's/^e2e: //' || true)
  summary+=("e2e suites ${counts:-0 passed, 1 failed}")
  [ "$rc" = 0 ] || failed=1
fi

# the failures again at the very end, with their messages, so the tail of a CI log says why
for tap in "$logs"/*.tap; do
  [ -f "$tap" ] || continue
  awk '/^ *not ok /{show=1; n=0} show{print; if (++n >= 40 || /^ *\.\.\.$/) show=0}' "$tap" | grep -v '^ *# Subtest' | head -200 || true
done

line=""; for s in "${summary[@]}"; do line+="${line:+; }$s"; done
echo "summary: $line"
exit "$failed"
