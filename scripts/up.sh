#!/usr/bin/env bash
# Bring up a working fleet on this machine: a controller (SQLite in .fleet-up/),
# one local worker that enrols itself, and a demo VM. Ctrl-C stops everything;
# running it again reuses the same data (idempotent).
#
# The worker uses the *synthetic* driver (in-memory VMs with realistic delays)
# until the Linux QEMU driver lands; see README.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
bash scripts/setup.sh

state="$root/.fleet-up"
api_port=${FLEET_API_PORT:-8080}
grpc_port=${FLEET_GRPC_PORT:-7443}
api="http://127.0.0.1:$api_port"
mkdir -p "$state"

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

wait_http() { # url, seconds
  node -e '
    const [url, secs] = process.argv.slice(1); const end = Date.now() + secs * 1000;
    (async () => { for (;;) { try { if ((await fetch(url)).ok) process.exit(0); } catch {}
      if (Date.now() > end) { console.error(`no answer from ${url}`); process.exit(1); }
      await new Promise((r) => setTimeout(r, 200)); } })();' "$1" "$2"
}

echo "[up] starting the controller (logs: .fleet-up/controller.log)"
bin/fleet-controller run --data-dir "$state/controller" --listen "127.0.0.1:$api_port" \
  --grpc-listen "127.0.0.1:$grpc_port" --name 127.0.0.1 >"$state/controller.out" 2>"$state/controller.log" &
pids+=($!)
wait_http "$api/v1/health" 60 || { cat "$state/controller.log" >&2; exit 1; }
token=$(tr -d '\n' < "$state/controller/admin.token")
export FLEET_URL="$api" FLEET_TOKEN="$token"

if [ ! -f "$state/worker/worker.json" ]; then
  echo "[up] enrolling the local worker"
  boot=$(bin/fleet bootstrap-token create --name "local-$(date +%s)" --uses 1 --json | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).token))')
  bin/fleet-worker enroll --controller "127.0.0.1:$grpc_port" --token "$boot" --name local-worker --data-dir "$state/worker"
fi
echo "[up] starting the worker (synthetic driver; logs: .fleet-up/worker.log)"
# Synthetic VMs use no real CPU or memory, so the local worker declares room for
# a handful of them instead of this machine's real size.
bin/fleet-worker run --data-dir "$state/worker" --driver synthetic --labels "fleet.dev/local=true" \
  --cpus 16 --memory-mib 32768 --vm-slots 8 >"$state/worker.log" 2>&1 &
pids+=($!)

bin/fleet login "$api" --token "$token" --context local >/dev/null
if ! bin/fleet vm get demo >/dev/null 2>&1; then
  bin/fleet vm create demo --image synthetic:demo --cpus 1 --memory 1G --wait 60s
fi

cat <<MSG

Fleet is up.
  API:          $api   (OpenAPI: $api/v1/openapi.json, metrics: $api/metrics)
  admin token:  $token
  CLI context:  "local" (bin/fleet talks to this controller)

Try:
  bin/fleet worker list
  bin/fleet vm list --wide
  bin/fleet vm create web-1 --image synthetic:web --wait
  bin/fleet vm logs demo

Press Ctrl-C to stop the controller and the worker (state stays in .fleet-up/).
MSG
wait -n "${pids[@]}"
echo "[up] a process exited; see .fleet-up/*.log" >&2
exit 1
