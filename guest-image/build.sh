#!/usr/bin/env bash
# Build Fleet's guest image (kernel + initramfs) from Debian packages.
#
#   guest-image/build.sh [--out DIR] [--authorized-key FILE] [--force] [--no-install] [--prune] [--quiet]
#
# --prune removes the other versions under the default cache directory after a successful run.
# Idempotent: the output lives in ${FLEET_CACHE_DIR:-$HOME/.cache/fleet}/guest-image/<version>/
# (or --out DIR) and is rebuilt only when the inputs change (package versions, the input files'
# contents, this script, files/* and tools/*, the C compiler, the baked authorized key). On
# success the last line on stdout is the path of manifest.json. Everything else goes to stderr.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=""
KEYFILE=""
FORCE=0
INSTALL=1
QUIET=0
PRUNE=0

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | grep '^#' | sed 's/^# \{0,1\}//' >&2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=${2:?--out needs a directory}; shift 2 ;;
    --out=*) OUT=${1#--out=}; shift ;;
    --authorized-key) KEYFILE=${2:?--authorized-key needs a file}; shift 2 ;;
    --authorized-key=*) KEYFILE=${1#--authorized-key=}; shift ;;
    --force) FORCE=1; shift ;;
    --no-install) INSTALL=0; shift ;;
    --quiet) QUIET=1; shift ;;
    --prune) PRUNE=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "build.sh: unknown argument: $1" >&2; usage; exit 2 ;;
  esac
done

log() { [ "$QUIET" = 1 ] || echo "[guest-image] $*" >&2; }
die() { echo "[guest-image] ERROR: $*" >&2; exit 1; }

# ---------------------------------------------------------------- packages
PKGS=(linux-image-cloud-amd64 busybox-static dropbear-bin openssh-sftp-server openssh-client rsync cpio lz4 qemu-system-x86
      gcc libc6-dev)
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
missing=()
command -v dpkg-query >/dev/null || die "dpkg-query not found: this script needs Debian (or a derivative)"
for p in "${PKGS[@]}"; do installed "$p" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$INSTALL" = 1 ] || die "missing Debian packages: ${missing[*]} (run without --no-install as root)"
  [ "$(id -u)" = 0 ] || die "missing Debian packages: ${missing[*]}; run as root or: sudo apt-get install -y --no-install-recommends ${missing[*]}"
  log "installing ${missing[*]}"
  apt_install() {
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "$@" >&2
  }
  if ! apt_install "${missing[@]}"; then
    log "apt-get install failed; running apt-get update and retrying"
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -q >&2
    apt_install "${missing[@]}"
  fi
fi

# The cloud kernel's version: linux-image-cloud-amd64 depends on linux-image-<kver>.
KVER=$(dpkg-query -W -f='${Depends}' linux-image-cloud-amd64 | tr ',' '\n' | sed -n 's/^ *linux-image-\([0-9][^ ]*-cloud-amd64\).*/\1/p' | head -n1)
[ -n "$KVER" ] || die "cannot find the kernel version from linux-image-cloud-amd64's dependencies"
VMLINUZ=/boot/vmlinuz-$KVER
MODDIR=/lib/modules/$KVER
[ -r "$VMLINUZ" ] || die "$VMLINUZ missing or unreadable"
[ -r "$MODDIR/modules.dep" ] || die "$MODDIR/modules.dep missing"
# The initramfs is lz4-compressed (legacy frame format, the one the kernel reads): under TCG the
# kernel unpacks it faster than gzip or zstd, and unpacking is on the boot's critical path.
if [ -r "/boot/config-$KVER" ] && ! grep -q '^CONFIG_RD_LZ4=y' "/boot/config-$KVER"; then
  die "kernel $KVER cannot unpack an lz4 initramfs (CONFIG_RD_LZ4)"
fi

# ---------------------------------------------------------------- modules
# Load order from DESIGN.md, then the extras; each module's deps (modules.dep) go first.
WANT=(virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net
      virtio-rng evdev button virtio_blk ext4)
declare -A DEP_OF=() PATH_OF=() SEEN=()
while IFS= read -r line; do
  mod=${line%%:*}; deps=${line#*:}
  base=${mod##*/}; base=${base%%.ko*}; base=${base//-/_}
  PATH_OF[$base]=$mod; DEP_OF[$mod]=$deps
done <"$MODDIR/modules.dep"
ORDER=()
add_mod() { # $1 = path relative to MODDIR
  local m=$1 d deps=() i
  [ -n "${SEEN[$m]:-}" ] && return 0
  SEEN[$m]=1
  read -r -a deps <<<"${DEP_OF[$m]}"
  for ((i=${#deps[@]}-1; i>=0; i--)); do add_mod "${deps[$i]}"; done
  ORDER+=("$m")
}
for w in "${WANT[@]}"; do
  k=${w//-/_}
  if [ -n "${PATH_OF[$k]:-}" ]; then add_mod "${PATH_OF[$k]}"
  else log "note: module $w not in $KVER (built in?), skipping"; fi
done
for m in "${ORDER[@]}"; do case "$m" in *.ko) ;; *) die "compressed module $m not supported" ;; esac; done

# ---------------------------------------------------------------- binaries
DROPBEAR=/usr/sbin/dropbear
DROPBEARKEY=/usr/bin/dropbearkey
BUSYBOX=/bin/busybox
# File transfer over SSH: OpenSSH's sftp-server (what `sftp` and OpenSSH 9's default `scp` talk
# to), OpenSSH's scp (the remote end of legacy `scp -O`; it links only libc) and rsync.
SFTP_SERVER=/usr/lib/openssh/sftp-server
SCP=/usr/bin/scp
RSYNC=/usr/bin/rsync
# dropbear runs the "sftp" subsystem from a path compiled into it (Debian: /usr/lib/sftp-server).
SFTP_PATH=$({ grep -ao '/[A-Za-z0-9_/.-]*sftp-server' "$DROPBEAR" || true; } | head -n1)
[ -n "$SFTP_PATH" ] || die "cannot find the sftp-server path compiled into $DROPBEAR"
LIBS=()
for b in "$DROPBEAR" "$DROPBEARKEY" "$SFTP_SERVER" "$SCP" "$RSYNC"; do
  [ -x "$b" ] || die "$b missing (Debian packages: ${PKGS[*]})"
  while IFS= read -r l; do LIBS+=("$l"); done < <(ldd "$b" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
done
mapfile -t LIBS < <(printf '%s\n' "${LIBS[@]}" | sort -u)
"$BUSYBOX" --list-full >/dev/null 2>&1 || die "$BUSYBOX is not a full busybox (install busybox-static)"
ldd "$BUSYBOX" >/dev/null 2>&1 && die "$BUSYBOX is dynamically linked; need busybox-static"
# Our own tools (tools/*.c), compiled with the host's gcc into static binaries.
CC=gcc
CFLAGS=(-static -Os -s -std=c11 -Wall -Wextra)
command -v "$CC" >/dev/null || die "$CC not found (install gcc)"
LIBC_A=$("$CC" -print-file-name=libc.a)
[ -r "$LIBC_A" ] || die "static libc.a missing (install libc6-dev)"
CC_ID="$("$CC" --version | sed -n 1p) $("$CC" -dumpmachine) cflags=${CFLAGS[*]}"

# ---------------------------------------------------------------- version hash
KEY_CONTENT=""
if [ -n "$KEYFILE" ]; then
  [ -r "$KEYFILE" ] || die "cannot read $KEYFILE"
  KEY_CONTENT=$(grep -v '^[[:space:]]*$' "$KEYFILE" || true)
  grep -Eq '^(ssh-|ecdsa-|sk-)' <<<"$KEY_CONTENT" || die "$KEYFILE does not look like an OpenSSH public key"
fi
PKG_VERSIONS=$(dpkg-query -W -f='${Package}=${Version}\n' "linux-image-$KVER" busybox-static dropbear-bin \
  openssh-sftp-server openssh-client rsync libc6 | sort)
HASH=$( {
  echo "format=1 kver=$KVER"
  echo "$PKG_VERSIONS"
  sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1
  (cd "$HERE/files" && find . -type f | LC_ALL=C sort | xargs sha256sum)
  (cd "$HERE/tools" && find . -type f | LC_ALL=C sort | xargs sha256sum)
  echo "cc=$CC_ID"
  sha256sum "$LIBC_A" | cut -d' ' -f1
  sha256sum "$VMLINUZ" "$BUSYBOX" "$DROPBEAR" "$DROPBEARKEY" "$SFTP_SERVER" "$SCP" "$RSYNC" "${LIBS[@]}" | cut -d' ' -f1
  echo "sftp=$SFTP_PATH"
  (cd "$MODDIR" && sha256sum "${ORDER[@]}")
  echo "key=$KEY_CONTENT"
} | sha256sum | cut -c1-16)
VERSION=$HASH
# tty0 (the VGA console a VNC session shows) first, ttyS0 last: /dev/console, where init and its
# markers write, stays the serial port.
CMDLINE_BASE="console=tty0 console=ttyS0 panic=-1 quiet"

CACHE_ROOT=${FLEET_CACHE_DIR:-${HOME:-/root}/.cache/fleet}/guest-image
[ -n "$OUT" ] || OUT=$CACHE_ROOT/$VERSION
mkdir -p "$(dirname "$OUT")"
OUT=$(cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT")
MANIFEST=$OUT/manifest.json

# One builder at a time per output directory.
exec 9>"$OUT.lock"
flock 9

prune() {
  [ "$PRUNE" = 1 ] || return 0
  local d
  for d in "$CACHE_ROOT"/*/; do
    d=${d%/}
    [ "$d" = "$OUT" ] && continue
    [ -f "$d/manifest.json" ] || compgen -G "$d/initramfs.cpio.*" >/dev/null || continue
    log "pruning old version $d"
    rm -rf "$d" "$d.lock"
  done
}

if [ "$FORCE" = 0 ] && [ -f "$MANIFEST" ] && grep -q "\"version\": \"$VERSION\"" "$MANIFEST" \
   && [ -f "$OUT/vmlinuz" ] && [ -f "$OUT/initramfs.cpio.lz4" ]; then
  log "up to date: $OUT (version $VERSION)"
  prune
  echo "$MANIFEST"
  exit 0
fi

# ---------------------------------------------------------------- assemble
log "building version $VERSION (kernel $KVER) into $OUT"
T0=$(date +%s.%N)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fleet-guest-image.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
R=$WORK/root
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,lib,lib64,etc/fleet,etc/dropbear,etc/acpi/PWRF,etc/acpi/PWRB,proc,sys,dev,run,tmp,root,home/fleet,var/log,mnt}
ln -s ../run "$R/var/run"
chmod 1777 "$R/tmp"; chmod 700 "$R/root"

install -m 0755 "$BUSYBOX" "$R/bin/busybox"
while IFS= read -r applet; do
  [ "$applet" = bin/busybox ] && continue
  mkdir -p "$R/$(dirname "$applet")"
  [ -e "$R/$applet" ] || ln -s /bin/busybox "$R/$applet"
done < <("$BUSYBOX" --list-full)
[ -e "$R/bin/sh" ] || ln -s busybox "$R/bin/sh"

install -m 0755 "$DROPBEAR" "$R/usr/sbin/dropbear"
install -m 0755 "$DROPBEARKEY" "$R/usr/bin/dropbearkey"
install -D -m 0755 "$SFTP_SERVER" "$R$SFTP_SERVER"
[ "$SFTP_PATH" = "$SFTP_SERVER" ] || { mkdir -p "$R$(dirname "$SFTP_PATH")"; ln -s "$SFTP_SERVER" "$R$SFTP_PATH"; }
install -m 0755 "$SCP" "$R/usr/bin/scp"
install -m 0755 "$RSYNC" "$R/usr/bin/rsync"
# fleet-rawsend: sends caller-chosen Ethernet frames (the security e2e tests' forged DHCP, ARP, ...).
"$CC" "${CFLAGS[@]}" -o "$R/usr/bin/fleet-rawsend" "$HERE/tools/fleet-rawsend.c" \
  || die "compiling tools/fleet-rawsend.c failed"
chmod 0755 "$R/usr/bin/fleet-rawsend"
for l in "${LIBS[@]}"; do
  mkdir -p "$R$(dirname "$l")"
  cp -L "$l" "$R$l"
done

: >"$R/etc/fleet/modules"
for m in "${ORDER[@]}"; do
  mkdir -p "$R$MODDIR/$(dirname "$m")"
  cp "$MODDIR/$m" "$R$MODDIR/$m"
  echo "$MODDIR/$m" >>"$R/etc/fleet/modules"
done

install -m 0755 "$HERE/files/init" "$R/init"
install -m 0755 "$HERE/files/udhcpc.script" "$R/etc/fleet/udhcpc.script"
install -m 0755 "$HERE/files/ready" "$R/etc/fleet/ready"
install -m 0755 "$HERE/files/shutdown" "$R/etc/fleet/shutdown"
install -m 0644 "$HERE/files/inittab" "$R/etc/inittab"
install -m 0755 "$HERE/files/power-button" "$R/etc/acpi/PWRF/00000080"
install -m 0755 "$HERE/files/power-button" "$R/etc/acpi/PWRB/00000080"
printf 'PWRF PWRF/00000080\nPWRB PWRB/00000080\n' >"$R/etc/acpid.conf"
echo "$VERSION" >"$R/etc/fleet/version"
if [ -n "$KEY_CONTENT" ]; then
  printf '%s\n' "$KEY_CONTENT" >"$R/etc/fleet/authorized_keys"
  chmod 0644 "$R/etc/fleet/authorized_keys"
fi

cat >"$R/etc/passwd" <<'P'
root:x:0:0:root:/root:/bin/sh
fleet:x:1000:1000:Fleet:/home/fleet:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
P
cat >"$R/etc/shadow" <<'P'
root:*:19000:0:99999:7:::
fleet:*:19000:0:99999:7:::
nobody:*:19000:0:99999:7:::
P
chmod 0600 "$R/etc/shadow"
cat >"$R/etc/group" <<'P'
root:x:0:
tty:x:5:
fleet:x:1000:
nogroup:x:65534:
P
printf '/bin/sh\n/bin/ash\n' >"$R/etc/shells"
printf 'passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n' >"$R/etc/nsswitch.conf"
: >"$R/etc/resolv.conf"
printf 'export PATH=/usr/sbin:/usr/bin:/sbin:/bin\n' >"$R/etc/profile"

STAGE=$WORK/out
mkdir -p "$STAGE"
(cd "$R" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 --reproducible) \
  | lz4 -q -l -9 >"$STAGE/initramfs.cpio.lz4"
cp "$VMLINUZ" "$STAGE/vmlinuz"
T1=$(date +%s.%N)

json_str() { printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"; }
{
  echo "{"
  echo "  \"version\": \"$VERSION\","
  echo "  \"kernel\": $(json_str "$OUT/vmlinuz"),"
  echo "  \"initrd\": $(json_str "$OUT/initramfs.cpio.lz4"),"
  echo "  \"cmdlineBase\": $(json_str "$CMDLINE_BASE"),"
  echo "  \"kernelVersion\": \"$KVER\","
  echo "  \"bakedAuthorizedKey\": $([ -n "$KEY_CONTENT" ] && echo true || echo false),"
  echo "  \"modules\": [$(printf '"%s",' "${ORDER[@]##*/}" | sed 's/,$//')],"
  echo "  \"packages\": [$(printf '"%s",' $PKG_VERSIONS | sed 's/,$//')],"
  echo "  \"initrdBytes\": $(stat -c %s "$STAGE/initramfs.cpio.lz4"),"
  echo "  \"buildSeconds\": $(awk -v a="$T0" -v b="$T1" 'BEGIN { printf "%.2f", b - a }'),"
  echo "  \"builtAt\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\""
  echo "}"
} >"$STAGE/manifest.json"

# Swap the finished files into place (manifest last: it marks the build complete).
mkdir -p "$OUT"
rm -f "$MANIFEST"
mv -f "$STAGE/vmlinuz" "$OUT/vmlinuz"
mv -f "$STAGE/initramfs.cpio.lz4" "$OUT/initramfs.cpio.lz4"
mv -f "$STAGE/manifest.json" "$MANIFEST"
prune
log "done in $(awk -v a="$T0" -v b="$T1" 'BEGIN { printf "%.1f", b - a }') s: $OUT ($(du -h "$OUT/initramfs.cpio.lz4" | cut -f1) initramfs)"
echo "$MANIFEST"
