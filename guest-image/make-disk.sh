#!/usr/bin/env bash
# Turns the Fleet guest into a bootable disk image, the way an operator would bring their own
# image: a FAT file system with SYSLINUX in its boot sector (no partition table), the guest's
# kernel and initramfs, and a boot line carrying an SSH key. The worker's qemu driver boots it
# through the firmware (SeaBIOS) from a copy-on-write overlay, like any qcow2/raw image.
#
#   guest-image/make-disk.sh --out DIR/name.qcow2 [--format qcow2|raw] [--authorized-key FILE]
#
# Needs syslinux, mtools, dosfstools and qemu-utils (scripts/install-system-deps.sh); no root,
# nothing is mounted. Prints the image path.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out='' format=qcow2 key=''
while [ $# -gt 0 ]; do
  case $1 in
    --out) out=$2; shift 2 ;;
    --format) format=$2; shift 2 ;;
    --authorized-key) key=$2; shift 2 ;;
    *) echo "make-disk.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -n "$out" ] || { echo "make-disk.sh: --out is required" >&2; exit 2; }
case $format in qcow2|raw) ;; *) echo "make-disk.sh: --format must be qcow2 or raw" >&2; exit 2 ;; esac
for t in syslinux mcopy mkfs.vfat qemu-img; do
  command -v "$t" >/dev/null || { echo "make-disk.sh: $t is missing (scripts/install-system-deps.sh)" >&2; exit 1; }
done

manifest=$(bash "$here/build.sh" | tail -n1)
field() { sed -n "s/^ *\"$1\": \"\(.*\)\",\?$/\1/p" "$manifest"; }
kernel=$(field kernel) initrd=$(field initrd) cmdline=$(field cmdlineBase)
append="$cmdline fleet.hostname=operator-image"
if [ -n "$key" ]; then append="$append fleet.authorized_key=$(base64 -w0 <"$key")"; fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
raw=$work/disk.raw
truncate -s 96M "$raw"
mkfs.vfat -n FLEETBOOT "$raw" >/dev/null
syslinux --install "$raw"
printf 'DEFAULT fleet\nPROMPT 0\nTIMEOUT 1\nLABEL fleet\n  KERNEL vmlinuz\n  INITRD initrd\n  APPEND %s\n' "$append" >"$work/syslinux.cfg"
mcopy -i "$raw" "$kernel" ::vmlinuz
mcopy -i "$raw" "$initrd" ::initrd
mcopy -i "$raw" "$work/syslinux.cfg" ::syslinux.cfg
mkdir -p "$(dirname "$out")"
if [ "$format" = raw ]; then cp "$raw" "$out"; else qemu-img convert -q -f raw -O qcow2 "$raw" "$out"; fi
echo "$out"
