#!/usr/bin/env bash
# Installs dependencies when node_modules is missing or older than the lockfile, so `npm start` and
# `npm test` work on a fresh clone without a separate install step (and cost nothing when up to date).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
