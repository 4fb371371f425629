#!/usr/bin/env bash
# Builds the tiny guest (build-tiny-guest.sh) as a bootable disk image: the template `stratus up`
# seeds, so its VMs have a ROOT volume as VMs of real templates do. One FAT partition holding the
# tiny guest's kernel and initrd and SYSLINUX behind SYSLINUX's MBR, as a qcow2. Built without root
# or a loop device (mtools), from Debian packages (syslinux, syslinux-common, mtools, dosfstools).
# Cached by the tiny guest's build and this script; prints the path of the qcow2.
set -euo pipefail

source "$(dirname "$0")/tiny-guest-lib.sh" disk qcow2
for tool in sfdisk mkfs.fat mcopy syslinux qemu-img; do
  command -v "$tool" >/dev/null || {
    echo "build-tiny-disk: $tool is missing (Debian: fdisk dosfstools mtools syslinux qemu-utils)" >&2
    exit 1
  }
done
mbr=/usr/lib/syslinux/mbr/mbr.bin
[ -s "$mbr" ] || { echo "build-tiny-disk: $mbr is missing (Debian: syslinux-common)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
raw="$work/disk.raw"
disk_mib=64
start=2048 # the partition's first sector, 1 MiB in
truncate -s "${disk_mib}M" "$raw"
printf 'label: dos\nstart=%d, type=c, bootable\n' "$start" | sfdisk --quiet "$raw"
# The partition's size in KiB, as mkfs.fat counts blocks.
mkfs.fat -F 16 -n TINYGUEST --offset "$start" "$raw" $(((disk_mib * 2048 - start) / 2)) >/dev/null
write_boot_config "$work/syslinux.cfg"
offset=$((start * 512))
export MTOOLS_SKIP_CHECK=1
mcopy -i "$raw@@$offset" "$guest/vmlinuz" "$guest/initrd.gz" "$work/syslinux.cfg" ::/
syslinux --offset "$offset" --install "$raw"
dd if="$mbr" of="$raw" bs=440 count=1 conv=notrunc status=none

qemu-img convert -c -f raw -O qcow2 "$raw" "$out.partial"
mv "$out.partial" "$out"
echo "$out"
