#!/usr/bin/env bash
# Bring up a working fleet on this machine: a controller (SQLite in .fleet-up/),
# one local worker that enrols itself, and a demo VM. Ctrl-C stops the controller
# and the worker; running it again reuses the same data and adopts the VMs that
# kept running (idempotent). scripts/down.sh takes down everything it made (the VMs,
# dnsmasq, the namespace, the veth and the nftables table too).
#
# As root (the normal case here) the worker runs real QEMU VMs. It lives in a network
# namespace of its own ("fleet-up", standing in for a Mac on the LAN) joined to this
# host by a veth pair: the VMs' NAT traffic stops at this host (it is never forwarded
# further), and the worker dials the controller at 10.250.0.1. Without root the worker
# falls back to the synthetic driver (in-memory VMs), loudly.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
driver=qemu
if [ "$(id -u)" != 0 ] || [ "${FLEET_UP_DRIVER:-}" = synthetic ]; then
  driver=synthetic
  echo "[up] WARNING: not root (or FLEET_UP_DRIVER=synthetic): the worker uses the SYNTHETIC driver; nothing really boots" >&2
else
  # Before setup: the native addon's build links liburing when it is there.
  bash scripts/install-system-deps.sh
fi
bash scripts/setup.sh

state="$root/.fleet-up"
api_port=${FLEET_API_PORT:-8080}
grpc_port=${FLEET_GRPC_PORT:-7443}
api="http://127.0.0.1:$api_port"
mkdir -p "$state"

pids=()
up_running=false
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "$(cat "$state/up.pid" 2>/dev/null)" = $$ ]; then rm -f "$state/up.pid"; fi
  if $up_running; then
    echo "[up] stopped the controller and the worker; the demo VM, its network and state stay for the next scripts/up.sh." >&2
    echo "[up] scripts/down.sh removes all of it (VMs, dnsmasq, namespace, veth, nftables; --purge also .fleet-up/)." >&2
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'up_running=false; exit 143' TERM # scripts/down.sh: it says what it removes
# scripts/down.sh stops this script through this file.
echo $$ >"$state/up.pid"

wait_http() { # url, seconds
  node -e '
    const [url, secs] = process.argv.slice(1); const end = Date.now() + secs * 1000;
    (async () => { for (;;) { try { if ((await fetch(url)).ok) process.exit(0); } catch {}
      if (Date.now() > end) { console.error(`no answer from ${url}`); process.exit(1); }
      await new Promise((r) => setTimeout(r, 200)); } })();' "$1" "$2"
}

grpc_host=127.0.0.1
in_ns=()
if [ "$driver" = qemu ]; then
  echo "[up] preparing the worker's network namespace fleet-up (veth fleetup-h 10.250.0.1 <-> 10.250.0.2)"
  ip netns add fleet-up 2>/dev/null || true
  ip link show fleetup-h >/dev/null 2>&1 || ip link add fleetup-h type veth peer name eth0 netns fleet-up
  ip addr replace 10.250.0.1/30 dev fleetup-h && ip link set fleetup-h up
  ip -n fleet-up link set lo up
  ip -n fleet-up addr replace 10.250.0.2/30 dev eth0 && ip -n fleet-up link set eth0 up
  ip -n fleet-up route replace default via 10.250.0.1
  # Nothing from the namespace is routed beyond this host.
  nft -f - <<'NFT'
table inet fleet_up
delete table inet fleet_up
table inet fleet_up {
  chain forward {
    type filter hook forward priority filter; policy accept;
    iifname "fleetup-h" drop
    oifname "fleetup-h" drop
  }
}
NFT
  grpc_host=10.250.0.1
  in_ns=(ip netns exec fleet-up)
fi

echo "[up] starting the controller (logs: .fleet-up/controller.log)"
bin/fleet-controller run --data-dir "$state/controller" --listen "127.0.0.1:$api_port" \
  --grpc-listen "$grpc_host:$grpc_port" --name 127.0.0.1 >"$state/controller.out" 2>"$state/controller.log" &
pids+=($!)
wait_http "$api/v1/health" 60 || { cat "$state/controller.log" >&2; exit 1; }
token=$(tr -d '\n' < "$state/controller/admin.token")
export FLEET_URL="$api" FLEET_TOKEN="$token"

# With real VMs each VM runs as its own unprivileged user (docs/security.md), which runs
# Fleet's VM host code from this checkout: a checkout other users cannot reach (under a
# 0700 /root, say) cannot do that, so the demo then runs its VMs as root, loudly.
worker_dir="$state/worker"
vm_users=()
if [ "$driver" = qemu ] && ! setpriv --reuid=65534 --regid=65534 --clear-groups test -r "$root/apps/worker/src/vm-host/launch.mjs" 2>/dev/null; then
  vm_users=(--vm-uid-base 0)
  echo "[up] WARNING: $root is not readable by other users, so VMs cannot run as unprivileged users: they run as ROOT." >&2
  echo "[up]          Clone Fleet somewhere others can read (e.g. /opt/fleet), or chmod o+x the directories above it." >&2
fi

if [ ! -f "$worker_dir/worker.json" ]; then
  echo "[up] enrolling the local worker"
  boot=$(bin/fleet bootstrap-token create --name "local-$(date +%s)" --uses 1 --json | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).token))')
  # Its "Start it with: fleet-worker run" hint is for a manual enrollment: this script starts it below.
  "${in_ns[@]}" bin/fleet-worker enroll --controller "$grpc_host:$grpc_port" --token "$boot" --name local-worker --data-dir "$worker_dir" |
    { grep -v '^Start it with: ' || true; }
fi
echo "[up] starting the worker ($driver driver; logs: .fleet-up/worker.log)"
if [ "$driver" = qemu ]; then
  # Real VMs under TCG: 2 vCPUs and a few GiB are what this machine can carry.
  "${in_ns[@]}" bin/fleet-worker run --data-dir "$worker_dir" --controller "$grpc_host:$grpc_port" --driver qemu --labels "fleet.dev/local=true" \
    --vm-slots 4 "${vm_users[@]}" >"$state/worker.log" 2>&1 &
  image=fleet-guest
else
  # Synthetic VMs use no real CPU or memory, so the local worker declares room for
  # a handful of them instead of this machine's real size.
  bin/fleet-worker run --data-dir "$worker_dir" --controller "$grpc_host:$grpc_port" --driver synthetic --labels "fleet.dev/local=true" \
    --cpus 16 --memory-mib 32768 --vm-slots 8 >"$state/worker.log" 2>&1 &
  image=synthetic:demo
fi
pids+=($!)
up_running=true

bin/fleet login "$api" --token "$token" --context local >/dev/null
if ! bin/fleet vm get demo >/dev/null 2>&1; then
  # wait: it keeps running while the worker is stopped (Ctrl-C) and is adopted by the next up.sh.
  bin/fleet vm create demo --image "$image" --cpus 1 --memory 256M --on-disconnect wait --wait 180s
else
  # Kept from an earlier run: adopted if it kept running, started again if it failed or stopped.
  demo_state=$(bin/fleet vm get demo --json | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).state))')
  if [ "$demo_state" = failed ] || [ "$demo_state" = stopped ]; then
    echo "[up] starting the demo VM again (it was $demo_state)"
    bin/fleet vm update demo --start >/dev/null
  fi
fi
bin/fleet ip demo --wait 180s >/dev/null

# A "Try" VM that fits what the worker has left once the demo runs (the default 2 CPUs may not).
try_create=$(bin/fleet worker get local-worker --json | node -e '
  let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => {
    const w = JSON.parse(s); const c = w.capacity ?? {}; const u = w.used ?? {};
    const cpus = (c.cpus ?? 0) - (u.cpus ?? 0), mem = (c.memoryMib ?? 0) - (u.memoryMib ?? 0), slots = (c.vmSlots ?? 0) - (u.vms ?? 0);
    if (cpus >= 1 && mem >= 256 && slots >= 1) console.log(`bin/fleet vm create web-1 --image ${process.argv[1]} --cpus 1 --memory 256M --wait`);
    else console.log(`# the worker has no room for another VM (${Math.max(cpus, 0)} CPU, ${Math.max(mem, 0)} MiB, ${Math.max(slots, 0)} slot free): bin/fleet vm delete demo --wait first`);
  });' "$image" 2>/dev/null) || try_create="bin/fleet vm create web-1 --image $image --cpus 1 --memory 256M --wait"

if [ "$driver" = qemu ]; then
  try_access=$'bin/fleet exec demo -- uname -a\n  bin/fleet ssh demo'
else
  try_access='# exec / ssh / port-forward need a real VM: run scripts/up.sh as root (qemu driver)'
fi

cat <<MSG

Fleet is up.
  Dashboard:    $api/   (sign in with the admin token below)
  API:          $api   (OpenAPI: $api/v1/openapi.json, metrics: $api/metrics with a read token)
  admin token:  $token
  CLI context:  "local" (bin/fleet talks to this controller)

Try:
  bin/fleet worker list
  bin/fleet vm list --wide
  $try_create
  bin/fleet ip demo --wait 30s
  $try_access
  bin/fleet vm logs demo

Press Ctrl-C to stop the controller and the worker (the demo VM and state stay for the next run).
scripts/down.sh (from any terminal) stops everything this started and removes its network.
MSG
wait -n "${pids[@]}"
echo "[up] a process exited; see .fleet-up/*.log" >&2
exit 1
