#!/usr/bin/env bash
# Takes down what scripts/up.sh brought up, and only that:
#   - a running scripts/up.sh (its pid in .fleet-up/up.pid),
#   - the controller and the worker it started (found by their --data-dir in .fleet-up/),
#   - as root: every process in the network namespace "fleet-up" (the worker's dnsmasq, the VM
#     host processes and their QEMUs), the VM processes of .fleet-up/worker outside it, the
#     namespace itself (its bridge, TAPs and nftables go with it), the veth fleetup-h, the
#     host's nftables table "inet fleet_up" and the names of per-VM namespaces (fleetvm-*) that no
#     process has mounted any more.
# State stays in .fleet-up/ (database, CA, VM disks): the next scripts/up.sh starts from it, and
# adopts or starts the demo VM again. --purge deletes .fleet-up/ too (and the CLI context "local").
# Idempotent: running it again (or with nothing up) does nothing and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
state="$root/.fleet-up"
purge=false
for a in "$@"; do
  case "$a" in
    --purge) purge=true ;;
    -h | --help)
      sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "down.sh: unknown argument $a (usage: scripts/down.sh [--purge])" >&2
      exit 2
      ;;
  esac
done

log() { echo "[down] $*"; }
is_root=false
[ "$(id -u)" = 0 ] && is_root=true
have_ns=false
ns_exists() { ip netns list 2>/dev/null | awk '$1 == "fleet-up" { f = 1 } END { exit !f }'; }
if $is_root && ns_exists; then have_ns=true; fi

# argv of a process as lines ("" when it is gone).
argv_of() { tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null || true; }

# Pids of processes up.sh made, by what they run (one pass over /proc):
#   controller / worker: a process with `--data-dir .fleet-up/controller` / `.fleet-up/worker`;
#   vms: node (VM host) or qemu-system-* with an argument inside .fleet-up/worker/.
scan() { # controller|worker|vms
  node -e '
    const fs = require("node:fs");
    const [what, state, self] = process.argv.slice(1);
    for (const p of fs.readdirSync("/proc")) {
      if (!/^\d+$/.test(p) || p === self) continue;
      let argv;
      try { argv = fs.readFileSync(`/proc/${p}/cmdline`, "utf8").split("\0"); } catch { continue; }
      const dd = argv.findIndex((a, i) => a === "--data-dir" && argv[i + 1] === `${state}/${what}`);
      const vm = what === "vms" && /(^|\/)(node|qemu-system-[a-z0-9_]+)$/.test(argv[0] ?? "") && argv.some((a) => a.startsWith(`${state}/worker/`));
      if (dd >= 0 || vm) console.log(p);
    }' "$1" "$state" "$$"
}
ours() {
  scan controller
  scan worker
  scan vms
  if $have_ns; then ip netns pids fleet-up 2>/dev/null || true; fi
}

# 1. A running up.sh: its trap stops the controller and the worker it started.
if [ -f "$state/up.pid" ]; then
  up=$(cat "$state/up.pid")
  if [ -n "$up" ] && argv_of "$up" | grep -q 'up\.sh$'; then
    log "stopping scripts/up.sh (pid $up)"
    kill -TERM "$up" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$up" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$state/up.pid"
fi

# 2. The worker first (so that it restarts nothing), then the controller, then the rest.
stop() { # label, pids...
  local what=$1
  shift
  [ $# -gt 0 ] || return 0
  log "stopping $what (pid $*)"
  kill -TERM "$@" 2>/dev/null || true
  local left
  for _ in $(seq 1 100); do
    left=()
    for p in "$@"; do kill -0 "$p" 2>/dev/null && left+=("$p"); done
    [ ${#left[@]} -gt 0 ] || return 0
    sleep 0.1
  done
  log "killing what did not stop within 10 s: ${left[*]}"
  kill -KILL "${left[@]}" 2>/dev/null || true
}
# shellcheck disable=SC2046
stop "the worker" $(scan worker)
# shellcheck disable=SC2046
stop "the controller" $(scan controller)
# shellcheck disable=SC2046
stop "the VM processes and dnsmasq" $(ours | sort -un)
# Anything still there (a process that ignored TERM was killed above): a last pass.
for _ in 1 2 3; do
  rest=$(ours | sort -un)
  [ -n "$rest" ] || break
  # shellcheck disable=SC2086
  kill -KILL $rest 2>/dev/null || true
  sleep 0.5
done

# 3. The network namespace (its interfaces, bridge, TAPs and nftables go with it), the veth and
#    the host's table.
if $is_root; then
  if $have_ns; then
    log "deleting the network namespace fleet-up"
    ip netns del fleet-up
  fi
  if ip link show fleetup-h >/dev/null 2>&1; then
    log "deleting the veth fleetup-h"
    ip link del fleetup-h
  fi
  if nft list table inet fleet_up >/dev/null 2>&1; then
    log "deleting the nftables table inet fleet_up"
    nft delete table inet fleet_up
  fi
  # The worker runs under `ip netns exec fleet-up`, so in a mount namespace of its own: the per-VM
  # namespaces it made (fleetvm-<port>: the offload path's, or --vm-link veth) were mounted there
  # only, and what is left of them in /run/netns once it is gone is a bare name. Remove those that
  # no process has mounted (the worker's own start-up sweep uses the same rule); a live one of
  # another worker on this host is mounted somewhere and stays.
  for f in /run/netns/fleetvm-*; do
    [ -e "$f" ] || continue
    name=${f##*/}
    if ! grep -qs -- "/netns/$name " /proc/[0-9]*/mountinfo; then
      log "deleting the dead VM namespace name $name"
      ip netns del "$name" 2>/dev/null || rm -f "$f"
    fi
  done
elif ns_exists; then
  log "the network namespace fleet-up exists: run scripts/down.sh as root to remove it" >&2
fi

if $purge; then
  if [ -d "$state" ]; then
    log "deleting $state (controller database, CA, worker credential, VM disks, logs)"
    rm -rf "$state"
  fi
  if bin/fleet context delete local >/dev/null 2>&1; then log 'deleted the CLI context "local"'; fi
fi
if $purge; then
  log "done: nothing scripts/up.sh started is running, and its state is gone"
elif [ -d "$state" ]; then
  log "done: nothing scripts/up.sh started is running (state kept in .fleet-up/; scripts/down.sh --purge deletes it)"
else
  log "done: nothing scripts/up.sh started is running"
fi
