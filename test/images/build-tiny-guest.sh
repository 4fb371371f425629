#!/usr/bin/env bash
# Builds the tiny guest the end-to-end tests and `stratus up` boot: Debian's cloud kernel and a
# busybox initramfs with the virtio modules, a DHCP client, and an /init that reports on the
# serial console what the guest sees (its disks and its address). Built from Debian packages,
# cached by kernel version; prints the directory holding vmlinuz and initrd.gz.
set -euo pipefail

cache="${STRATUS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/stratus}/tiny-guest"
package=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
if [ -z "$package" ]; then
  echo "build-tiny-guest: no linux-image-cloud-amd64 in the apt lists; run apt-get update first" >&2
  exit 1
fi
out="$cache/$package-v10"
if [ -s "$out/vmlinuz" ] && [ -s "$out/initrd.gz" ]; then
  echo "$out"
  exit 0
fi
busybox=$(command -v busybox || true)
if [ -z "$busybox" ] || ! file -L "$busybox" 2>/dev/null | grep -q "statically linked"; then
  busybox=/bin/busybox
fi
[ -x "$busybox" ] || { echo "build-tiny-guest: install busybox-static" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
apt-get download "$package" >/dev/null 2>&1
dpkg-deb -x ./*.deb kernel
version=$(ls kernel/lib/modules)

mkdir -p root/bin root/proc root/sys root/dev root/tmp root/lib/modules root/etc
cp "$busybox" root/bin/busybox
# The load order matters: each module needs the ones before it.
modules="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net virtio_blk"
for module in $modules; do
  file=$(find "kernel/lib/modules/$version" -name "$module.ko*" | head -n 1)
  [ -n "$file" ] || { echo "build-tiny-guest: module $module not found in $package" >&2; exit 1; }
  case "$file" in
    *.xz) xz -dc "$file" > "root/lib/modules/$module.ko" ;;
    *.zst) zstd -qdc "$file" > "root/lib/modules/$module.ko" ;;
    *) cp "$file" "root/lib/modules/$module.ko" ;;
  esac
done

cat > root/etc/udhcpc.script <<'SCRIPT'
#!/bin/busybox sh
case "$1" in
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "$router" ] && ip route add default via "${router%% *}" dev "$interface"
    ;;
esac
exit 0
SCRIPT

cat > root/init <<SCRIPT
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for module in $modules; do insmod /lib/modules/\$module.ko 2>/dev/null; done
echo "stratus-guest: up"
if ip link show eth0 >/dev/null 2>&1; then
  ip link set eth0 up
  udhcpc -i eth0 -s /etc/udhcpc.script -t 20 -T 2 -q -n >/dev/null 2>&1
fi
# Lines typed on the console: "stratus-poweroff" powers the guest off from inside, as a guest OS
# shutting itself down does (tests of runStrategy RerunOnFailure use it); "stratus-write vdX WORD"
# writes WORD at the start of a disk with dd (tests of volume moves read it back from "head=");
# "stratus-probe ADDRESS PORT" says, from then on in every report, whether a TCP connection there
# opened (tests of the host guard).
# "stratus-serve PORT WORD" answers WORD over HTTP on PORT with busybox httpd (tests of port
# forwarding, static NAT and load balancing).
# "stratus-fetch ADDRESS PATH" reports, from then on, the body an HTTP GET of PATH at ADDRESS:80
# answered, newlines as "|" (tests of the router's metadata service; nc, kept open until the answer
# has come, as busybox's nc stops at the end of its input).
(while read -r line; do
  case "\$line" in
    stratus-poweroff) poweroff -f ;;
    "stratus-probe "*)
      set -- \$line
      if nc -w 3 "\$2" "\$3" </dev/null >/dev/null 2>&1; then state=open; else state=closed; fi
      echo "stratus-guest: probe \$2:\$3 \$state" > "/tmp/probe-\$2-\$3" ;;
    "stratus-fetch "*)
      set -- \$line
      body=\$( (printf 'GET %s HTTP/1.0\\r\\n\\r\\n' "\$3"; sleep 2) | nc -w 3 "\$2" 80 2>/dev/null | tr -d '\\r' | sed '1,/^\$/d' | head -c 300 | tr '\\n' '|')
      echo "stratus-guest: fetched \$2\$3 [\$body]" > /tmp/probe-fetch ;;
    "stratus-serve "*)
      set -- \$line
      mkdir -p "/www/\$2" && echo "\$3" > "/www/\$2/index.html" && httpd -p "\$2" -h "/www/\$2" && echo "stratus-guest: serving \$2" > "/tmp/probe-serve-\$2" ;;
    "stratus-write "*)
      set -- \$line
      printf '%s' "\$3" | dd of=/dev/\$2 bs=512 count=1 conv=sync 2>/dev/null && sync && echo "stratus-guest: wrote \$2 \$3" ;;
  esac
done < /dev/console) &
# Report what the guest sees every few seconds, so a console attached late still reads it.
while true; do
  echo "stratus-guest: disks: \$(ls /sys/block | tr '\n' ' ')"
  for disk in /sys/block/vd*; do
    [ -e "\$disk" ] && echo "stratus-guest: disk \$(basename \$disk) serial=\$(cat \$disk/serial 2>/dev/null) sectors=\$(cat \$disk/size) head=\$(dd if=/dev/\$(basename \$disk) bs=32 count=1 2>/dev/null | tr -dc 'A-Za-z0-9-')"
  done
  echo "stratus-guest: ip: \$(ip -4 -o addr show eth0 2>/dev/null | awk '{print \$4}')"
  cat /tmp/probe-* 2>/dev/null
  sleep 3
done
SCRIPT
chmod +x root/init root/etc/udhcpc.script

mkdir -p "$out"
cp "kernel/boot/vmlinuz-$version" "$out/vmlinuz.partial"
(cd root && find . | cpio -o -H newc --quiet | gzip -9) > "$out/initrd.gz.partial"
mv "$out/vmlinuz.partial" "$out/vmlinuz"
mv "$out/initrd.gz.partial" "$out/initrd.gz"
echo "$out"
