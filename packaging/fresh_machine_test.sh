#!/usr/bin/env bash
# Fresh-machine test of the README's first command (too slow for CI: 25 min here; disk: ~0.5 GB root + a 1.8 GB
# venv + the saved base; ~350 MB downloaded besides debootstrap's).
#
# Builds a Debian 12 root with debootstrap from Debian's own packages (its stock python3, PEP 668 in force,
# no pip, no python3-venv), copies this checkout's tracked files in, and then, inside it (chroot):
#   1. as a normal user (with sudo, as on a desktop): bash packaging/setup.sh, then the studio's smoke test
#      headless through the installed launcher, and `melody generate`;
#   2. the same setup again: nothing may change (files compared before/after);
#   3. --uninstall: the user's home and /usr/local must be as before the install;
#   4. the same three steps as root.
# System packages that setup.sh installed with apt stay (it says so); everything else must be gone.
#
#   sudo bash packaging/fresh_machine_test.sh [WORKDIR]      (default /var/tmp/melody-fresh; removed at
#                                                             the end unless MELODY_FRESH_KEEP=1)
# Environment: MELODY_FRESH_MIRROR (Debian mirror, default http://deb.debian.org/debian),
# MELODY_FRESH_WHEELS=DIR (a folder of wheels bound into the root as pip's --find-links, e.g. a local
# CPU torch build; by default pip downloads what setup.sh asks for), MELODY_FRESH_CA=FILE (a CA bundle
# for pip in the root, on networks whose proxy re-signs TLS), MELODY_FRESH_KEEP=1 (keep the root),
# MELODY_FRESH_NEW=1 (debootstrap again instead of unpacking WORKDIR/base.tar, the pristine root that
# the first run saves).
# Needs: root, debootstrap, network access to the mirror and PyPI. Log: WORKDIR/fresh.log (also stdout).
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${1:-/var/tmp/melody-fresh}
MIRROR=${MELODY_FRESH_MIRROR:-http://deb.debian.org/debian}
WHEELS=${MELODY_FRESH_WHEELS:-}
CA=${MELODY_FRESH_CA:-}
ROOTFS=$WORK/rootfs
LOG=$WORK/fresh.log

[[ $(id -u) -eq 0 ]] || { echo "error: run as root (debootstrap, chroot)" >&2; exit 2; }
command -v debootstrap >/dev/null || { echo "error: debootstrap is missing (apt-get install debootstrap)" >&2; exit 2; }
[[ -z $WHEELS || -d $WHEELS ]] || { echo "error: MELODY_FRESH_WHEELS=$WHEELS is not a folder" >&2; exit 2; }
[[ -z $CA || -f $CA ]] || { echo "error: MELODY_FRESH_CA=$CA is not a file" >&2; exit 2; }
mkdir -p "$WORK"
exec > >(tee "$LOG") 2>&1
T0=$SECONDS
step() { printf '\n==== [%4d s] %s\n' "$((SECONDS - T0))" "$*"; }

MOUNTS=()
cleanup() {
  local m
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do umount -l "${MOUNTS[i]}" 2>/dev/null || true; done
  if [[ ${MELODY_FRESH_KEEP:-0} != 1 && -d $ROOTFS ]]; then rm -rf --one-file-system "$ROOTFS"; fi
}
trap cleanup EXIT
bind() { mkdir -p "$ROOTFS$2"; mount --bind "$1" "$ROOTFS$2"; MOUNTS+=("$ROOTFS$2"); }

rm -rf --one-file-system "$ROOTFS"
if [[ -f $WORK/base.tar && ${MELODY_FRESH_NEW:-0} != 1 ]]; then
  step "unpacking the pristine Debian 12 root saved by an earlier run ($WORK/base.tar)"
  mkdir -p "$ROOTFS" && tar -xpf "$WORK/base.tar" -C "$ROOTFS"
else
  step "debootstrap Debian 12 (bookworm, minbase + python3 sudo) from $MIRROR"
  debootstrap --variant=minbase --include=python3,sudo bookworm "$ROOTFS" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -30 "$WORK/debootstrap.log"; exit 1; }
  tar -cpf "$WORK/base.tar" -C "$ROOTFS" .
fi
echo "rootfs: $(du -sh --one-file-system "$ROOTFS" | cut -f1)"
echo "deb $MIRROR bookworm main" >"$ROOTFS/etc/apt/sources.list"
cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
echo "127.0.1.1 $(hostname)" >>"$ROOTFS/etc/hosts"   # as on an installed machine (sudo looks it up)
mount -t proc proc "$ROOTFS/proc"; MOUNTS+=("$ROOTFS/proc")
bind /sys /sys
bind /dev /dev
mount -t devpts devpts "$ROOTFS/dev/pts" 2>/dev/null && MOUNTS+=("$ROOTFS/dev/pts") || true
if [[ -n $WHEELS ]]; then
  bind "$WHEELS" /opt/local-wheels
  printf '[global]\nfind-links = /opt/local-wheels\n' >>"$ROOTFS/etc/pip.conf"
fi
if [[ -n $CA ]]; then
  cp "$CA" "$ROOTFS/etc/pip-ca.crt"
  grep -q '^\[global\]' "$ROOTFS/etc/pip.conf" 2>/dev/null || echo '[global]' >>"$ROOTFS/etc/pip.conf"
  echo 'cert = /etc/pip-ca.crt' >>"$ROOTFS/etc/pip.conf"
fi
[[ -f $ROOTFS/etc/pip.conf ]] && { echo "pip.conf in the root (this machine's network only):"; cat "$ROOTFS/etc/pip.conf"; }

in_root() {  # in_root USER COMMAND: a login shell in the new root
  local user=$1; shift
  chroot "$ROOTFS" /usr/bin/env -i TERM=dumb LANG=C.UTF-8 PATH=/usr/local/bin:/usr/bin:/bin \
    /usr/sbin/runuser -l "$user" -c "$*"
}

step "the stock python3"
in_root root 'python3 --version; ls /usr/lib/python3*/EXTERNALLY-MANAGED; python3 -m pip --version 2>&1 | tail -1;
  python3 -c "import ensurepip" 2>&1 | tail -1; dpkg -l | grep -c "^ii"'

chroot "$ROOTFS" useradd -m -s /bin/bash alice
echo "alice ALL=(ALL) NOPASSWD: ALL" >"$ROOTFS/etc/sudoers.d/alice"
for home in /root /home/alice; do
  mkdir -p "$ROOTFS$home/melody"
  (cd "$SRC" && git ls-files -z | tar --null --no-recursion -T - -cf -) | tar -xf - -C "$ROOTFS$home/melody"
done
chroot "$ROOTFS" chown -R alice:alice /home/alice/melody

snapshot() {  # snapshot HOME: every path an install may touch (files with size and mtime), minus the checkout
  chroot "$ROOTFS" find "$1" /usr/local /opt -xdev \( -path "$1/melody" -o -path /opt/local-wheels \) -prune \
    -o -type d -printf '%p/\n' -o -printf '%p %s %T@\n' | LC_ALL=C sort
}

downloads() {  # downloads PIP_LOG: what pip fetched from the network and what it took from local wheels
  echo "pip downloaded (from its log):"
  { grep -oE 'Downloading [^ ]+ \([0-9.]+ [kMG]B\)' "$1" || true; } | sed 's/^Downloading //' | sort -u | awk '
    { v = $2; gsub(/[()]/, "", v); u = $3; gsub(/[()]/, "", u)
      printf "%10.1f MB  %s\n", (u == "kB" ? v / 1000 : (u == "GB" ? v * 1000 : v)), $1 }' | sort -rn >"$1.sizes"
  awk '{ n++; mb += $1 } END { printf "  %d files, %.1f MB; the largest:\n", n, mb }' "$1.sizes"
  head -8 "$1.sizes"; rm -f "$1.sizes"
  { grep -oE 'Processing /opt/local-wheels/[^ ]+' "$1" || true; } | sort -u | sed 's|^|  local: |'
  { grep -oE '(Looking in indexes|Could not fetch URL|Retrying).{0,160}' "$1" || true; } | sort -u | head -5 | sed 's/^/  /'
}

run_user() {  # run_user USER HOME
  local user=$1 home=$2 t
  snapshot "$home" >"$WORK/$user.before"
  step "$user: bash packaging/setup.sh (the README's first command)"
  t=$SECONDS
  # PIP_LOG (pip's own log, outside the compared paths) records what pip downloaded and from where
  in_root "$user" 'cd ~/melody && PIP_LOG=/tmp/pip-setup.log bash packaging/setup.sh 2>&1 | grep -v "^WARNING: Location";
    exit ${PIPESTATUS[0]}' || { echo "FAIL: setup.sh failed for $user"; FAILED=1; return; }
  echo "setup took $((SECONDS - t)) s; venv: $(du -sh "$ROOTFS$home/.local/share/melody-studio/venv" | cut -f1)"
  downloads "$ROOTFS/tmp/pip-setup.log"; mv "$ROOTFS/tmp/pip-setup.log" "$WORK/$user.pip.log"
  step "$user: melody-studio --smoke-test (headless) and melody generate, through the launchers"
  in_root "$user" 'export QT_QPA_PLATFORM=offscreen; cd /tmp;
    ~/.local/bin/melody-studio --smoke-test --device cpu;
    ~/.local/bin/melody generate "calm piano" -o /tmp/fresh.wav --seconds 4 --seed 1 --device cpu &&
    ls -l /tmp/fresh.wav && rm /tmp/fresh.wav' || { echo "FAIL: the smoke test failed for $user"; FAILED=1; }
  step "$user: bash packaging/setup.sh again (must change nothing)"
  snapshot "$home" >"$WORK/$user.installed"
  in_root "$user" 'cd ~/melody && bash packaging/setup.sh 2>&1 | grep -v "^WARNING: Location"; exit ${PIPESTATUS[0]}'
  snapshot "$home" >"$WORK/$user.again"
  if diff "$WORK/$user.installed" "$WORK/$user.again" >"$WORK/$user.again.diff"; then
    echo "second run: nothing changed ($(wc -l <"$WORK/$user.installed") paths compared)"
  else
    echo "FAIL: the second run changed:"; head -40 "$WORK/$user.again.diff"; FAILED=1
  fi
  step "$user: bash packaging/setup.sh --uninstall"
  in_root "$user" 'cd ~/melody && bash packaging/setup.sh --uninstall'
  snapshot "$home" >"$WORK/$user.after"
  if diff "$WORK/$user.before" "$WORK/$user.after" >"$WORK/$user.uninstall.diff"; then
    echo "uninstall: no trace ($(wc -l <"$WORK/$user.before") paths compared)"
  else
    echo "differences after --uninstall (< before, > after):"; head -40 "$WORK/$user.uninstall.diff"
    # ~/.cache and ~/.config are written by running the app (Qt, fontconfig), not by the install;
    # /usr/local/share/{ca-certificates,fonts}/ are made by the postinst of apt packages setup.sh installed
    # pip's cache would be the install's trace (a user install runs pip with PIP_NO_CACHE_DIR)
    if grep '^[<>]' "$WORK/$user.uninstall.diff" | grep -E "^> $home/\.cache/pip(/| )" \
        || grep '^[<>]' "$WORK/$user.uninstall.diff" | grep -vE "^> $home/\.(cache|config)(/| )" \
        | grep -vE '^> /usr/local/share/(ca-certificates|fonts)/$'; then
      echo "FAIL: the install left a trace"; FAILED=1
    else
      echo "uninstall: no trace of the install (only the app's runtime caches above)"
    fi
  fi
}

FAILED=0
run_user alice /home/alice
run_user root /root
step "apt packages setup.sh added (kept by --uninstall)"
in_root root 'dpkg -l | grep -c "^ii"'
echo "rootfs now: $(du -sh --one-file-system "$ROOTFS" | cut -f1)"
step "done in $((SECONDS - T0)) s: $([[ $FAILED == 0 ]] && echo PASS || echo FAIL)"
exit "$FAILED"
