#!/usr/bin/env bash
# Builds the tiny guest (build-tiny-guest.sh) as a bootable ISO 9660 image: ISOLINUX loading its
# kernel and initrd, for the tests of ISOs (registerIso, deploy from an ISO, attachIso). Built
# without root from Debian packages (xorriso, isolinux, syslinux-common). Cached by the tiny guest's
# build and this script; prints the path of the ISO.
set -euo pipefail

source "$(dirname "$0")/tiny-guest-lib.sh" iso iso
command -v xorriso >/dev/null || { echo "build-tiny-iso: xorriso is missing (Debian: xorriso)" >&2; exit 1; }
isolinux=/usr/lib/ISOLINUX/isolinux.bin
ldlinux=/usr/lib/syslinux/modules/bios/ldlinux.c32
for file in "$isolinux" "$ldlinux"; do
  [ -s "$file" ] || { echo "build-tiny-iso: $file is missing (Debian: isolinux syslinux-common)" >&2; exit 1; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/root/isolinux"
cp "$isolinux" "$ldlinux" "$work/root/isolinux/"
cp "$guest/vmlinuz" "$guest/initrd.gz" "$work/root/"
write_boot_config "$work/root/isolinux/isolinux.cfg"
xorriso -as mkisofs -quiet -V TINYGUEST -o "$out.partial" \
  -b isolinux/isolinux.bin -c isolinux/boot.cat -no-emul-boot -boot-load-size 4 -boot-info-table \
  "$work/root" 2>/dev/null
mv "$out.partial" "$out"
echo "$out"
