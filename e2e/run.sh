#!/usr/bin/env bash
# End-to-end tests in a real VS Code (code-server + Debian chromium + playwright-core), offline:
#   vsix     the .vsix holds only what runs and installs into code-server
#   exthost  the mocha suite (test/suite) inside the extension host, on QEMU-made images
#   ui       the installed .vsix driven through the workbench: editor, Problems view, palette, themes
#   settings qcow2Lens.* changed in the Settings editor while an image is open (e2e/settings.mjs)
#   editor   next allocated range in a 1 TiB disk, the guest-disk map and its click, the split, a Problems-panel link landing on its finding, three themes
# Installs its tools once into .vscode-e2e (e2e/setup.sh). Prints "e2e: N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
bash e2e/setup.sh || { echo "e2e: setup failed"; exit 1; }
[ -f dist/extension.js ] && [ -f media/webview.js ] && [ -d dist-test/suite ] || node build.mjs || exit 1
passed=0; failed=0; failures=()
for suite in vsix exthost ui settings editor space; do
  echo "=== e2e/$suite.mjs"
  if timeout 420 node "e2e/$suite.mjs"; then passed=$((passed + 1)); else failed=$((failed + 1)); failures+=("$suite"); fi
done
echo "e2e: $passed passed, $failed failed${failures[*]:+ (${failures[*]})}"
[ "$failed" = 0 ]
