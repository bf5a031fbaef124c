#!/usr/bin/env bash
# Size of the production node_modules (what deploy/Dockerfile ships after `npm prune --omit=dev`):
# installs the lockfile with --omit=dev into a scratch copy of the workspace manifests and prints
# the total and the largest packages. Needs the npm registry (or a warm npm cache).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$ROOT"
cp package.json package-lock.json "$tmp/"
for manifest in libs/*/package.json services/*/package.json deploy/package.json test/package.json; do
  mkdir -p "$tmp/$(dirname "$manifest")" && cp "$manifest" "$tmp/$manifest"
done
(cd "$tmp" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
echo "production node_modules: $(du -sm "$tmp/node_modules" | cut -f1) MB, $(find "$tmp/node_modules" -name package.json -path '*node_modules/*/package.json' -not -path '*/node_modules/*/node_modules/*/*' | wc -l) package.json files"
echo "largest:"
(cd "$tmp/node_modules" && du -sm -- * @*/* 2>/dev/null | sort -rn | head -15 | sed 's/^/  /')
echo "@opentelemetry/* total: $(du -smc "$tmp"/node_modules/@opentelemetry/* 2>/dev/null | tail -1 | cut -f1) MB"
