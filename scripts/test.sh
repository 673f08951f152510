#!/usr/bin/env bash
# The whole test suite: setup, typecheck, unit tests, end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."
# Debian packages for the VM runtime tests and the PostgreSQL tests (first: the
# native addon's build in setup links liburing when it is there). Tests that
# need them skip loudly when they are truly absent (not root / not Debian).
bash scripts/install-system-deps.sh || echo "[test] WARNING: some Debian packages are missing; tests that need them will skip" >&2
bash scripts/setup.sh
echo "[test] typecheck (tsc)" >&2
pnpm exec tsc -p tsconfig.json
echo "[test] unit tests" >&2
pnpm exec vitest run --project unit "$@"
# End-to-end files start several real processes each: one file at a time on 2 cores.
echo "[test] end-to-end tests" >&2
pnpm exec vitest run --project e2e --no-file-parallelism "$@"
