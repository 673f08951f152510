#!/usr/bin/env bash
# The whole test suite: setup, typecheck, unit tests, end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# PostgreSQL binaries let the @fleet/db tests run against a real throwaway server.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[test] installing Debian's postgresql (for the PostgreSQL database tests)" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
      || echo "[test] WARNING: could not install postgresql; its tests will skip" >&2
  else
    echo "[test] WARNING: postgresql is not installed and this is not a root Debian machine; PostgreSQL tests will skip" >&2
  fi
fi
echo "[test] typecheck (tsc)" >&2
pnpm exec tsc -p tsconfig.json
echo "[test] unit tests" >&2
pnpm exec vitest run --project unit "$@"
# End-to-end files start several real processes each: one file at a time on 2 cores.
echo "[test] end-to-end tests" >&2
pnpm exec vitest run --project e2e --no-file-parallelism "$@"
