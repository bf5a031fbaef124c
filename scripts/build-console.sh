#!/usr/bin/env bash
# Builds the browser console (services/console → services/console/dist, served by the api-gateway at
# /console) unless the build is newer than every source of it, so `npm start`, `npm test` and
# `npm run bench` pay nothing when it is up to date.
set -euo pipefail
cd "$(dirname "$0")/.."
console=services/console
stamp=$console/dist/index.html
if [ -f "$stamp" ] && [ -z "$(find "$console/src" "$console/index.html" "$console/vite.config.ts" "$console/tsconfig.json" "$console/package.json" package-lock.json -newer "$stamp" -print -quit)" ]; then
  exit 0
fi
node_modules/.bin/tsc -p "$console/tsconfig.json"
node_modules/.bin/vite build "$console" --logLevel warn
