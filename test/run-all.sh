#!/usr/bin/env bash
# The whole test suite: builds, type-checks, runs the engine/CLI tests against qemu-img, then the
# end-to-end tests in a real VS Code. Installs what it needs (qemu-utils) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v qemu-img >/dev/null || ! command -v qemu-io >/dev/null; then
  echo "test: installing qemu-utils (qemu-img, qemu-io)"
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-utils >/dev/null
fi
if [ ! -x /usr/bin/chromium ]; then
  echo "test: installing chromium (the webview's browser tests)"
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
[ -d node_modules ] || npm ci --no-audit --no-fund
npx tsc -p . --noEmit
npm run --silent lint
node build.mjs
echo "=== engine and CLI tests (node --test)"
node --test --test-concurrency=2 dist-test/test/
if [ -x e2e/run.sh ] && [ "${SKIP_E2E:-}" != 1 ]; then
  echo "=== end-to-end tests in a real VS Code"
  bash e2e/run.sh
fi
