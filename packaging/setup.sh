#!/usr/bin/env bash
# Install MeLoDy Studio like an application, into its own virtual environment (never the system Python).
#
#   bash packaging/setup.sh                  # for you: ~/.local/share/melody-studio/venv, launchers in
#                                            # ~/.local/bin, app-menu entry + icon in ~/.local/share
#   bash packaging/setup.sh --prefix DIR     # under DIR: DIR/lib/melody-studio/venv, DIR/bin, DIR/share
#                                            # (e.g. sudo ... --prefix /usr/local for every user)
#   bash packaging/setup.sh --dev            # developers: .venv/ in this checkout, editable, test tools
#   bash packaging/setup.sh --uninstall      # remove what the install put there (same --prefix / --dev);
#                                            # your sessions (~/.local/share/melody-studio) are kept
# Other options: --with-training (corpus tools: music21, FluidSynth + GM soundfont), --skip-apt (don't
# install system packages; list the missing ones), -h.
# Environment: MELODY_PYTHON (interpreter for the venv, default python3), MELODY_TORCH (torch requirement,
# default torch==2.13.0), MELODY_TORCH_CPU_INDEX (PyTorch's CPU-only wheel index, tried first when there
# is no NVIDIA GPU), MELODY_APT_WAIT (seconds to wait for another program's apt lock, default 600),
# MELODY_VENV_ARGS (extra arguments for `python -m venv`, e.g. --system-site-packages to reuse a system torch).
#
# Run it as yourself: it uses sudo only for the system packages (apt). Running it twice changes nothing.
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${MELODY_PYTHON:-python3}
TORCH_REQ=${MELODY_TORCH:-torch==2.13.0}
TORCH_CPU_INDEX=${MELODY_TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
APT_WAIT=${MELODY_APT_WAIT:-600}
APT_RETRY=${MELODY_APT_RETRY:-5}   # seconds between tries while the apt lock is held
read -r -a VENV_ARGS <<<"${MELODY_VENV_ARGS:-}"

MODE=user ACTION=install PREFIX="" TRAINING=0 APT=1
usage() { sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
die() { echo "error: $*" >&2; exit 2; }
say() { echo "setup: $*"; }
while (($#)); do
  case "$1" in
    --dev) MODE=dev ;;
    --prefix) (($# >= 2)) || die "--prefix needs a folder"; PREFIX=$2; shift ;;
    --prefix=*) PREFIX=${1#--prefix=} ;;
    --uninstall) ACTION=uninstall ;;
    --with-training) TRAINING=1 ;;
    --skip-apt) APT=0 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
  shift
done
[[ $MODE == dev && -n $PREFIX ]] && die "--dev installs into the checkout's .venv; it takes no --prefix"

# ---- where things go -------------------------------------------------------------------------------
if [[ $MODE == dev ]]; then
  VENV=$SRC/.venv BIN="" SHARE=""
elif [[ -n $PREFIX ]]; then
  if [[ $ACTION == install ]]; then
    mkdir -p -- "$PREFIX" 2>/dev/null || die "cannot create $PREFIX (use sudo for a system folder)"
  fi
  [[ -d $PREFIX ]] && PREFIX=$(cd -- "$PREFIX" && pwd)
  VENV=$PREFIX/lib/melody-studio/venv BIN=$PREFIX/bin SHARE=$PREFIX/share
else
  DATA_HOME=${XDG_DATA_HOME:-$HOME/.local/share}
  VENV=$DATA_HOME/melody-studio/venv BIN=$HOME/.local/bin SHARE=$DATA_HOME
fi
MANIFEST=$VENV/melody-install-manifest   # files and folders the install created (read by --uninstall)
STAMP=$VENV/melody-install-stamp         # what was installed into the venv (a second run skips pip)

# ---- uninstall -----------------------------------------------------------------------------------
if [[ $ACTION == uninstall ]]; then
  if [[ ! -d $VENV ]]; then say "nothing installed at $VENV"; exit 0; fi
  if [[ -f $MANIFEST ]]; then
    # files first, then the folders the install created (deepest first, only when empty)
    while IFS= read -r line; do
      [[ $line == file:* ]] || continue
      f=${line#file:}
      if [[ -L $f || -f $f ]]; then rm -f -- "$f"; say "removed $f"; fi
    done <"$MANIFEST"
    dirs=$(grep '^dir:' "$MANIFEST" | cut -d: -f2- | awk '{ print length, $0 }' | sort -rn | cut -d' ' -f2-)
  else
    dirs=""
  fi
  rm -rf -- "$VENV"; say "removed $VENV"
  while IFS= read -r d; do
    [[ -n $d && -d $d ]] && rmdir -- "$d" 2>/dev/null && say "removed empty folder $d"
  done <<<"$dirs"
  if [[ $MODE == user && -z $PREFIX && -d $DATA_HOME/melody-studio ]]; then
    say "kept your sessions and settings in $DATA_HOME/melody-studio (delete it yourself to remove them)"
  fi
  exit 0
fi

# ---- system packages -------------------------------------------------------------------------------
# Runtime: PortAudio (sound output), the libraries Qt's xcb window plugin loads, python3 + venv + TLS roots,
# libatomic1 (pedalboard's native module links it; missing from a minimal Debian 12: "libatomic.so.1: cannot
# open shared object file" at the studio's start).
APT_PKGS=(ca-certificates libatomic1 libportaudio2 libglib2.0-0 libfontconfig1 libfreetype6 libdbus-1-3 libegl1 libgl1
          libopengl0 libxkbcommon0 libxkbcommon-x11-0 libx11-xcb1 libxcb-cursor0 libxcb-icccm4 libxcb-image0
          libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xinerama0 libxcb-xkb1)
command -v "$PYTHON" >/dev/null || APT_PKGS+=(python3)
# Debian/Ubuntu ship `venv` without ensurepip unless python3-venv is installed
"$PYTHON" -c 'import ensurepip' >/dev/null 2>&1 || APT_PKGS+=(python3-venv)
# Training corpus rendering (FluidSynth + General MIDI soundfont) and the optional `sru` build (g++)
if ((TRAINING)) || [[ $MODE == dev ]]; then APT_PKGS+=(fluidsynth fluid-soundfont-gm g++); fi
# Tests: Xvfb for the real-window tests and screenshots
if [[ $MODE == dev ]]; then APT_PKGS+=(xvfb xauth); fi

installed() { [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]; }

apt_get() {  # apt-get "$@", waiting (bounded by APT_WAIT) while another program holds the apt/dpkg lock
  local deadline=$((SECONDS + APT_WAIT)) log rc told=0
  log=$(mktemp)
  while :; do
    set +e
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -q "$@" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    set -e
    if ((rc == 0)) || ! grep -qE 'Could not get lock|Unable to lock|Unable to acquire the dpkg' "$log"; then
      rm -f "$log"; return "$rc"
    fi
    if ((SECONDS >= deadline)); then
      rm -f "$log"; echo "error: apt is still locked by another program after ${APT_WAIT} s" >&2; return 1
    fi
    ((told)) || say "another program holds the apt lock; waiting up to ${APT_WAIT} s (MELODY_APT_WAIT) ..."
    told=1
    sleep "$APT_RETRY"
  done
}

if command -v dpkg-query >/dev/null && command -v apt-get >/dev/null; then
  missing=()
  for p in "${APT_PKGS[@]}"; do installed "$p" || missing+=("$p"); done
  if ((${#missing[@]})); then
    if ((!APT)); then
      say "--skip-apt: not installing the missing system packages: ${missing[*]}"
    else
      SUDO=""
      if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null || die "system packages missing (${missing[*]}); run as root or install sudo"
        SUDO=sudo
      fi
      say "installing system packages (sound output, Qt's window libraries, Python venv support): ${missing[*]}"
      apt_get update
      apt_get install -y --no-install-recommends "${missing[@]}"
    fi
  fi
else
  say "not a Debian/Ubuntu system: make sure these (or your distribution's equivalents) are installed:"
  say "  ${APT_PKGS[*]}"
fi
command -v "$PYTHON" >/dev/null || die "$PYTHON not found"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || die "MeLoDy Studio needs Python >= 3.10"

# ---- the virtual environment ---------------------------------------------------------------------
CREATED=()   # folders this run creates (recorded in the manifest for --uninstall)
make_dir() {  # mkdir -p, remembering each folder that did not exist yet
  local d=$1 new=()
  while [[ ! -d $d ]]; do new+=("$d"); d=$(dirname -- "$d"); done
  ((${#new[@]})) || return 0
  mkdir -p -- "$1"
  CREATED+=("${new[@]}")
}

want_ver=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [[ -x $VENV/bin/python ]] && [[ $("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' \
     2>/dev/null) == "$want_ver" ]]; then
  :
else
  [[ -e $VENV ]] && { say "recreating $VENV (broken or another Python version)"; rm -rf -- "$VENV"; }
  make_dir "$(dirname -- "$VENV")"
  say "creating the virtual environment $VENV (Python $want_ver)"
  "$PYTHON" -m venv "${VENV_ARGS[@]}" "$VENV"
fi
VPY=$VENV/bin/python
# A user install leaves no pip cache behind (it is removed with --uninstall); --dev keeps pip's cache.
if [[ $MODE != dev && -z ${PIP_CACHE_DIR:-} && -z ${PIP_NO_CACHE_DIR:-} ]]; then export PIP_NO_CACHE_DIR=1; fi
pip_install() { "$VPY" -m pip install -q --disable-pip-version-check "$@"; }

# ---- torch: the CPU-only build when there is no NVIDIA GPU -------------------------------------------
# shellcheck source=packaging/lib/torch.sh
source "$SRC/packaging/lib/torch.sh"
install_torch
report_torch

# ---- the project -------------------------------------------------------------------------------------
if [[ $MODE == dev ]]; then
  EXTRAS=app,data,dev
  stamp="editable $SRC $EXTRAS $(sha256sum "$SRC/pyproject.toml" "$SRC/setup.py" | sha256sum | cut -c1-16)"
else
  EXTRAS=app
  if ((TRAINING)); then EXTRAS=app,data; fi
  # a content hash of what goes into the installed package
  stamp="$EXTRAS $(cd "$SRC" && find pyproject.toml setup.py MANIFEST.in README.md melody_core app \
      resources/models/melody-tiny -type f -not -path '*/__pycache__/*' -not -name '*.pyc' -print0 \
      | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)"
fi
deps_ok() {  # is melody-studio installed in the venv with every requirement of extras $1 satisfied?
  "$VPY" - "$1" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import PackageNotFoundError, distribution, version
from pip._vendor.packaging.requirements import Requirement
extras = set(sys.argv[1].split(",")) | {""}
for req in map(Requirement, distribution("melody-studio").requires or []):
    if req.marker and not any(req.marker.evaluate({"extra": e}) for e in extras):
        continue
    try:
        ok = req.specifier.contains(version(req.name), prereleases=True)
    except PackageNotFoundError:
        ok = False
    if not ok:
        sys.exit(1)
EOF
}
if [[ -f $STAMP && $(cat "$STAMP") == "$stamp" ]] && deps_ok "$EXTRAS"; then
  say "melody-studio is up to date in $VENV"
elif [[ $MODE == dev ]]; then
  say "installing this checkout (editable) with extras [$EXTRAS]"
  pip_install -e "$SRC[$EXTRAS]"
  echo "$stamp" >"$STAMP"
else
  # build from a copy, so the checkout gets no build/ or *.egg-info folders
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$SRC" && cp -r --parents pyproject.toml setup.py MANIFEST.in README.md melody_core app \
      resources/models/melody-tiny "$tmp/")
  find "$tmp" -name __pycache__ -prune -exec rm -rf {} +
  say "installing melody-studio [$EXTRAS] into $VENV (with the bundled model)"
  pip_install --upgrade "$tmp[$EXTRAS]"   # --upgrade: replace an older melody-studio; deps only if needed
  echo "$stamp" >"$STAMP"
fi

if [[ $MODE == dev ]]; then
  say "done: $VENV (editable). Tests: .venv/bin/python -m pytest -q tests"
  exit 0
fi

# ---- launchers, menu entry, icon -------------------------------------------------------------------
put() {  # put SRC_FILE DEST: copy unless identical; record DEST in the manifest
  make_dir "$(dirname -- "$2")"
  if ! cmp -s -- "$1" "$2"; then install -m 644 -- "$1" "$2"; say "wrote $2"; fi
  FILES+=("$2")
}
link() {  # link TARGET DEST: a symlink on PATH, never replacing a file that is not ours
  make_dir "$(dirname -- "$2")"
  if [[ -e $2 || -L $2 ]] && [[ $(readlink -- "$2") != "$1" ]]; then
    [[ -L $2 && $(readlink -- "$2") == "$VENV"/* ]] || die "$2 exists and is not from this install; remove it first"
  fi
  if [[ $(readlink -- "$2" 2>/dev/null) != "$1" ]]; then ln -sfn -- "$1" "$2"; say "linked $2"; fi
  FILES+=("$2")
}
FILES=()
link "$VENV/bin/melody" "$BIN/melody"
link "$VENV/bin/melody-studio" "$BIN/melody-studio"
desktop=$(mktemp)
sed "s|@EXEC@|$BIN/melody-studio|" "$SRC/packaging/linux/melody-studio.desktop" >"$desktop"
put "$desktop" "$SHARE/applications/melody-studio.desktop"
rm -f "$desktop"
put "$SRC/packaging/linux/melody-studio.svg" "$SHARE/icons/hicolor/scalable/apps/melody-studio.svg"
put "$SRC/packaging/linux/melody-studio.png" "$SHARE/icons/hicolor/256x256/apps/melody-studio.png"

# manifest: earlier entries are kept (folders created by the first run stay "ours"); rewritten only when
# it changes (a temporary file in the venv would change the venv folder's mtime)
manifest=$(
  if [[ -f $MANIFEST ]]; then cat "$MANIFEST"; fi
  printf 'file:%s\n' "${FILES[@]}"
  if ((${#CREATED[@]})); then printf 'dir:%s\n' "${CREATED[@]}"; fi
)
manifest=$(awk '!seen[$0]++' <<<"$manifest")
[[ -f $MANIFEST && $(cat "$MANIFEST") == "$manifest" ]] || printf '%s\n' "$manifest" >"$MANIFEST"

say "done: melody-studio installed in $VENV; 'MeLoDy Studio' is in the app menu"
case ":$PATH:" in
  *":$BIN:"*) say "start it with: melody-studio   (command line: melody --help)" ;;
  *) say "$BIN is not on your PATH in this shell. Start it with: $BIN/melody-studio"
     say "or add it: export PATH=\"$BIN:\$PATH\"   (Debian/Ubuntu's ~/.profile adds ~/.local/bin at your next login)" ;;
esac
