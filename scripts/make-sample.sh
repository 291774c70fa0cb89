#!/usr/bin/env bash
# Rebuilds media/sample.qcow2.gz, the image the walkthrough opens, with QEMU's own tools so it is a
# real QEMU-made image: 64 MiB, 64 KiB clusters, data at 0 and 16 MiB, a compressed cluster at 32 MiB,
# an internal snapshot taken before the first cluster was overwritten (so one cluster is shared and
# one copied). Gzipped because it is mostly zeros; the extension inflates it with Node's zlib.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
img="$tmp/sample.qcow2"
qemu-img create -q -f qcow2 -o cluster_size=65536 "$img" 64M
qemu-io -f qcow2 -c 'write -P 0xa5 0 1M' -c 'write -P 0x5a 16M 256k' -c 'write -c -P 0x33 32M 64k' "$img" >/dev/null
qemu-img snapshot -c fresh-install "$img"
qemu-io -f qcow2 -c 'write -P 0x11 0 64k' "$img" >/dev/null
qemu-img check -q "$img"
gzip -9 -n -c "$img" > media/sample.qcow2.gz
ls -l media/sample.qcow2.gz
