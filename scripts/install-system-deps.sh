#!/usr/bin/env bash
# Debian packages the real VM runtime and its tests use: QEMU (TCG), the guest
# image's ingredients, the NAT network's tools, and PostgreSQL for the database
# tests. Idempotent: installs only what is missing. Needs root and apt-get; on
# other machines it says what is missing and returns non-zero.
set -euo pipefail

packages=(
  qemu-system-x86          # the Linux VM runtime (software emulation)
  qemu-utils               # qemu-img: copy-on-write qcow2 disks per VM
  syslinux                 # tests: turn the guest into a bootable "operator" disk image
  syslinux-common
  mtools                   #   (syslinux installs onto a FAT image without mounting it)
  dosfstools
  linux-image-cloud-amd64  # guest kernel
  busybox-static           # guest userland, udhcpc
  dropbear-bin             # guest SSH server
  openssh-sftp-server      # guest sftp-server: sftp and scp into VMs
  rsync                    # guest rsync (also the tests' rsync client)
  cpio                     # initramfs assembly
  lz4                      #   and compression
  gcc                      # guest tools (guest-image/tools/*.c), built static:
  libc6-dev                #   libc.a
  liburing-dev             # native-vz: TAP frames in batches through io_uring (linked statically)
  openssh-client           # tests reach guests with the real ssh client; guest scp (scp -O)
  iproute2                 # bridges, TAPs, network namespaces
  nftables                 # NAT masquerade for the worker's VM network
  util-linux               # setpriv: VM host processes and QEMU start as per-VM unprivileged users (issue 14)
  dnsmasq-base             # DHCP server on the worker's VM network
  dnsmasq-utils            # dhcp_release: a removed VM's lease ends at once, its address is clean for the next
  postgresql               # the @fleet/db PostgreSQL tests
  docker-registry          # image tests: the CNCF distribution registry on loopback (issue 15)
  skopeo                   #   an independent OCI client: push with it, inspect what Fleet pushed
  apache2-utils            #   htpasswd -B: the registry's basic-auth users
  chromium                 # the dashboard's browser tests (playwright-core drives it)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-system-deps: missing Debian packages: ${missing[*]} (run as root on Debian, or install them yourself)" >&2
  exit 1
fi
echo "[setup] installing Debian packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
