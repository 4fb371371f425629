# Sourced by the scripts that package the tiny guest (build-tiny-disk.sh, build-tiny-iso.sh) with
# the output's kind ($1) and file extension ($2): builds or reuses the tiny guest ($guest), names the
# cached output ($out, keyed by the tiny guest's build and the calling script) and, when it is
# there already, prints it and exits. Also the boot loader's configuration both use.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
guest=$(bash "$here/build-tiny-guest.sh")
cache="${STRATUS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/stratus}/tiny-$1"
key=$({ sha256sum < "$0"; basename "$guest"; } | sha256sum | cut -c1-16)
out="$cache/tiny-$key.$2"
if [ -s "$out" ]; then
  echo "$out"
  exit 0
fi
mkdir -p "$cache"

# SYSLINUX's (and ISOLINUX's) configuration: the tiny guest's kernel and initrd at the top, its
# serial console.
write_boot_config() {
  cat > "$1" <<'CFG'
DEFAULT tiny
PROMPT 0
TIMEOUT 1
LABEL tiny
  LINUX /vmlinuz
  INITRD /initrd.gz
  APPEND console=ttyS0
CFG
}
