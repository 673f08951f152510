#!/usr/bin/env bash
# Idempotent setup for a fresh Linux machine: Node check, pnpm, npm packages,
# the generated Prisma client, the dashboard and the bundled binaries. Safe to run
# again; fast when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

node_version=$(node -p 'process.versions.node' 2>/dev/null || true)
if [ -z "$node_version" ]; then
  echo "setup: Node.js 20.19+ is required and was not found on PATH" >&2
  exit 1
fi
major=${node_version%%.*}; rest=${node_version#*.}; minor=${rest%%.*}
if [ "$major" -lt 20 ] || { [ "$major" -eq 20 ] && [ "$minor" -lt 19 ]; }; then
  echo "setup: Node.js $node_version is too old; Fleet needs 20.19 or newer" >&2
  exit 1
fi

if ! command -v pnpm >/dev/null 2>&1 || ! pnpm --version 2>/dev/null | grep -q '^10\.'; then
  log "installing pnpm 10 with npm"
  npm install -g pnpm@10 >/dev/null
fi

# Skip the install when the lockfile has not changed since the last one.
stamp=node_modules/.fleet-install-stamp
want=$(cat pnpm-lock.yaml package.json */package.json apps/*/package.json packages/*/package.json 2>/dev/null | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  log "installing npm packages (pnpm install)"
  if [ -n "${CI:-}" ]; then pnpm install --frozen-lockfile; else pnpm install; fi
  mkdir -p node_modules && echo "$want" > "$stamp"
fi

# The native addon links liburing when it is installed (a TAP's frames in batches through
# io_uring): rebuild it if liburing appeared after its last build.
if [ "$(uname -s)" = Linux ] && [ "$(node packages/native-vz/scripts/has-liburing.mjs)" = 1 ] &&
  [ "$(node -e "try { process.stdout.write(String(require('./packages/native-vz/build/Release/native_vz.node').tapIoUringBuilt === true)) } catch { process.stdout.write('unbuilt') }")" = false ]; then
  log "rebuilding the native addon with liburing (TAP frames through io_uring)"
  pnpm --silent --filter @fleet/native-vz run rebuild >/dev/null
fi

log "generating the Prisma client (offline)"
pnpm --silent --filter @fleet/db run generate

# The dashboard the controller serves at / (skipped when its sources are unchanged).
bash apps/dashboard/build.sh

# One bundled program per binary (apps/*/dist, esbuild), so fleet, fleet-controller and
# fleet-worker start without compiling TypeScript at run time. Skipped when every source a
# bundle was made from is unchanged; the bins fall back to tsx while a bundle is stale.
node scripts/build.mjs || log "WARNING: building the bundles failed; fleet, fleet-controller and fleet-worker run through tsx (slower start) until it succeeds"
