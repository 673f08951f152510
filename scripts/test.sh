#!/usr/bin/env bash
# The whole test suite: setup, typecheck, unit tests, end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "[test] typecheck (tsc)" >&2
pnpm exec tsc -p tsconfig.json
echo "[test] vitest (unit + e2e)" >&2
pnpm exec vitest run "$@"
