#!/usr/bin/env bash
# Builds the real cloud image the guest-login tests boot: Debian bookworm from Debian packages
# (mmdebstrap), with the cloud kernel, cloud-init reading only the config drive, OpenSSH and
# ifupdown, and extlinux as its boot loader, as a bootable qcow2. The file system fills the whole
# disk (no partition table): the BIOS loads extlinux's boot sector from sector 0, and cloud-init
# grows the file system when the root disk is larger than the image. Needs root and a loop device.
# Cached by the hash of this script; prints the path of the qcow2.
set -euo pipefail

cache="${STRATUS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/stratus}/cloud-image"
key=$(sha256sum "$0" | cut -c1-16)
out="$cache/debian-bookworm-$key.qcow2"
if [ -s "$out" ]; then
  echo "$out"
  exit 0
fi
for tool in mmdebstrap extlinux qemu-img mkfs.ext4; do
  command -v "$tool" >/dev/null || {
    echo "build-cloud-image: $tool is missing (Debian: mmdebstrap extlinux qemu-utils e2fsprogs)" >&2
    exit 1
  }
done
[ -s /usr/lib/EXTLINUX/mbr.bin ] || [ -d /usr/lib/syslinux ] || {
  echo "build-cloud-image: install extlinux and syslinux-common" >&2
  exit 1
}

work=$(mktemp -d)
mnt="$work/mnt"
cleanup() {
  mountpoint -q "$mnt" && umount "$mnt"
  rm -rf "$work"
}
trap cleanup EXIT
root="$work/root"

# No recommends and no documentation keep the image near 400 MiB.
mmdebstrap --quiet --variant=minbase \
  --aptopt='APT::Install-Recommends "false"' \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  --include=systemd-sysv,udev,linux-image-cloud-amd64,cloud-init,openssh-server,ifupdown,net-tools,iproute2,sudo,e2fsprogs,netbase,isc-dhcp-client \
  --customize-hook='chroot "$1" apt-get clean' \
  bookworm "$root" http://deb.debian.org/debian >&2

kernel=$(cd "$root/boot" && ls vmlinuz-* | head -n 1)
initrd=$(cd "$root/boot" && ls initrd.img-* | head -n 1)
[ -n "$kernel" ] && [ -n "$initrd" ] || { echo "build-cloud-image: no kernel or initrd in /boot" >&2; exit 1; }

# cloud-init: only the config drive (no network metadata service to wait for), Debian's default
# user; C.UTF-8 needs no locales package; the hostname resolves (sudo asks). ifupdown's default
# route is added with net-tools' `route`, as cloud-init writes it.
cat > "$root/etc/cloud/cloud.cfg.d/90-stratus.cfg" <<'CFG'
datasource_list: [ConfigDrive, None]
locale: C.UTF-8
manage_etc_hosts: true
CFG
echo "/dev/vda / ext4 defaults,errors=remount-ro 0 1" > "$root/etc/fstab"
rm -f "$root/etc/hostname" "$root/etc/machine-id" && touch "$root/etc/machine-id"
mkdir -p "$root/boot/extlinux"
cat > "$root/boot/extlinux/extlinux.conf" <<CONF
DEFAULT debian
TIMEOUT 1
PROMPT 0
LABEL debian
  LINUX /boot/$kernel
  INITRD /boot/$initrd
  APPEND root=/dev/vda ro console=ttyS0 net.ifnames=0 biosdevname=0
CONF

raw="$work/disk.raw"
# extlinux reads neither 64-bit block numbers nor metadata checksums' seed.
mkfs.ext4 -q -L stratus-root -O ^64bit,^metadata_csum -d "$root" "$raw" 2G
mkdir -p "$mnt"
mount -o loop "$raw" "$mnt"
extlinux --install "$mnt/boot/extlinux" >&2
umount "$mnt"

mkdir -p "$cache"
qemu-img convert -c -f raw -O qcow2 "$raw" "$out.partial"
mv "$out.partial" "$out"
echo "$out"
