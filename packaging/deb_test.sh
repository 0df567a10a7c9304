#!/usr/bin/env bash
# Install, smoke-test and remove the .deb on a stock Debian 12 root (chroot), checking that removal leaves
# nothing behind.
#
#   sudo bash packaging/deb_test.sh dist/melody-studio_VERSION_ARCH.deb [ROOTFS]
#
# ROOTFS: an existing Debian 12 root (e.g. the one `MELODY_FRESH_KEEP=1 packaging/fresh_machine_test.sh`
# leaves in /var/tmp/melody-fresh/rootfs); without it a minbase root is made with debootstrap in
# /var/tmp/melody-deb (removed at the end). apt installs the package's Depends from Debian.
set -euo pipefail
DEB=$(realpath "${1:?usage: deb_test.sh DEB [ROOTFS]}")
ROOTFS=${2:-}
[[ $(id -u) -eq 0 ]] || { echo "error: run as root (chroot)" >&2; exit 2; }
[[ -f $DEB ]] || { echo "error: no such file: $DEB" >&2; exit 2; }
T0=$SECONDS
step() { printf '\n==== [%4d s] %s\n' "$((SECONDS - T0))" "$*"; }
MOUNTS=() MADE=""
cleanup() {
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do umount -l "${MOUNTS[i]}" 2>/dev/null || true; done
  rm -f "$ROOTFS/tmp/melody-studio.deb" 2>/dev/null || true
  if [[ -n $MADE ]]; then rm -rf --one-file-system "$MADE"; fi
}
trap cleanup EXIT
if [[ -z $ROOTFS ]]; then
  command -v debootstrap >/dev/null || { echo "error: debootstrap is missing" >&2; exit 2; }
  ROOTFS=/var/tmp/melody-deb/rootfs MADE=/var/tmp/melody-deb
  step "debootstrap Debian 12 (minbase)"
  debootstrap --variant=minbase bookworm "$ROOTFS" http://deb.debian.org/debian >/dev/null
  cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
fi
mountpoint -q "$ROOTFS/proc" || { mount -t proc proc "$ROOTFS/proc"; MOUNTS+=("$ROOTFS/proc"); }
mountpoint -q "$ROOTFS/dev" || { mount --bind /dev "$ROOTFS/dev"; MOUNTS+=("$ROOTFS/dev"); }
in_root() { chroot "$ROOTFS" /usr/bin/env -i TERM=dumb LANG=C.UTF-8 PATH=/usr/bin:/bin:/usr/sbin:/sbin \
  QT_QPA_PLATFORM=offscreen OMP_WAIT_POLICY=PASSIVE HOME=/root bash -c "$*"; }
snapshot() { in_root 'find / -xdev \( -path /proc -o -path /sys -o -path /dev -o -path /tmp -o -path /root \
  -o -path /var/cache -o -path /var/log -o -path /var/lib/apt -o -path /var/lib/dpkg -o -path /home \) -prune \
  -o -print' | LC_ALL=C sort; }

cp "$DEB" "$ROOTFS/tmp/melody-studio.deb"
snapshot >/tmp/deb-before.$$
step "apt-get install ./$(basename "$DEB") ($(du -h "$DEB" | cut -f1))"
in_root 'apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends /tmp/melody-studio.deb |
  grep -E "newly installed|^Need to get|^After this operation|^Setting up melody-studio"'
in_root 'ls -l /usr/bin/melody /usr/bin/melody-studio; du -sh /usr/lib/melody-studio; ls /usr/share/applications/melody-studio.desktop'
step "smoke test through /usr/bin (headless)"
in_root 'cd /tmp && s=$(date +%s.%N) && melody --help >/dev/null && e=$(date +%s.%N) &&
  awk -v a="$s" -v b="$e" "BEGIN { printf \"melody --help: %.2f s\\n\", b - a }" &&
  melody-studio --smoke-test --device cpu --data-dir /tmp/smoke-data &&
  melody generate "calm piano" -o /tmp/deb.flac --seconds 4 --seed 1 --device cpu -q && melody info --audio /tmp/deb.flac &&
  rm -rf /tmp/deb.flac /tmp/smoke-data'
# --autoremove: the libraries apt installed for its Depends go too (as `apt autoremove` would)
step "apt-get purge --autoremove melody-studio"
in_root 'apt-get purge -y -q --autoremove melody-studio | grep -E "^Removing|^Purging|to remove"'
snapshot >/tmp/deb-after.$$
if diff /tmp/deb-before.$$ /tmp/deb-after.$$; then
  echo "removed cleanly: the file system outside /root, /home, /tmp and apt/dpkg's own state is as before"
  rc=0
else
  echo "FAIL: the package left the differences above"; rc=1
fi
rm -f /tmp/deb-before.$$ /tmp/deb-after.$$
step "done: $([[ $rc == 0 ]] && echo PASS || echo FAIL)"
exit "$rc"
