#!/usr/bin/env bash
# Installs the Node client libraries of the integration tests (node/), exactly
# as package-lock.json pins them, when node_modules is missing or the lock
# changed since the last install. Called by scripts/test before ctest.
set -euo pipefail
cd "$(dirname "$0")/node"

stamp=node_modules/.package-lock.sha256
want="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
npm ci --no-audit --no-fund --loglevel=error
echo "$want" > "$stamp"
