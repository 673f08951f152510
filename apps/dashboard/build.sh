#!/usr/bin/env bash
# Builds the dashboard (vite build → apps/dashboard/dist, served by the controller
# at /) unless dist/ was built from exactly these sources. Idempotent and cheap
# when nothing changed: one hash over the inputs.
set -euo pipefail
cd "$(dirname "$0")"
hash=$(cat index.html vite.config.ts package.json tsconfig.json ../controller/src/api/schemas.ts $(find web -type f | sort) | sha256sum | cut -d' ' -f1)
stamp=dist/.source-hash
if [ -f dist/index.html ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$hash" ]; then
  exit 0
fi
echo "[setup] building the dashboard (typecheck + vite build)" >&2
# Vite strips types without checking them: check first, so a type error fails the build.
pnpm exec tsc -p tsconfig.json
pnpm exec vite build --logLevel warn
echo "$hash" > "$stamp"
