#!/usr/bin/env bash
# Build the frozen app (PyInstaller, one folder) and a .deb around it, then smoke-test the frozen app.
#
#   bash packaging/build_app.sh [--no-deb] [--no-smoke] [--reuse]   (--reuse: keep an existing dist/melody-studio)
#
# Needs a Python with this project and PyInstaller (default .venv/bin/python from `setup.sh --dev`;
# `.venv/bin/python -m pip install -e ".[freeze]"`); PYTHON=... picks another. Writes:
#   dist/melody-studio/                 the app: `melody-studio` (studio), `melody` (CLI), _internal/
#   dist/melody-studio_VERSION_ARCH.deb  /usr/lib/melody-studio + /usr/bin launchers + menu entry + icon
# The smoke test (headless): `melody-studio --smoke-test` (real window offscreen, generates 4 s with the
# bundled model, plays it to whatever audio output there is) and `melody generate` 4 s exported to FLAC.
# Prints the folder size, the .deb size and start-up times. Linux only (the spec itself is portable).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-.venv/bin/python}
DEB=1 SMOKE=1 REUSE=0
for a in "$@"; do
  case "$a" in
    --no-deb) DEB=0 ;;
    --no-smoke) SMOKE=0 ;;
    --reuse) REUSE=1 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown option $a" >&2; exit 2 ;;
  esac
done
"$PY" -c 'import PyInstaller' 2>/dev/null || { echo "error: PyInstaller is missing: $PY -m pip install -e \".[freeze]\"" >&2; exit 2; }
VERSION=$("$PY" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
APP=dist/melody-studio

if ((REUSE)) && [[ -x $APP/melody-studio ]]; then
  echo "build_app: reusing $APP"
else
  t=$SECONDS
  "$PY" -m PyInstaller --noconfirm --clean --log-level WARN --distpath dist --workpath build/pyinstaller \
    packaging/melody-studio.spec
  echo "build_app: built $APP in $((SECONDS - t)) s"
fi
ln -sfn melody-studio "$APP/melody"   # the CLI: frozen_main.py dispatches on the command's name
echo "build_app: $APP is $(du -sh "$APP" | cut -f1)"

if ((SMOKE)); then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  export QT_QPA_PLATFORM=${QT_QPA_PLATFORM:-offscreen} OMP_WAIT_POLICY=PASSIVE
  # start-up: the frozen CLI answering --help (Python + imports, no model), then the studio's smoke test
  t0=$(date +%s.%N)
  "$APP/melody" --help >/dev/null
  t1=$(date +%s.%N)
  "$APP/melody-studio" --smoke-test --device cpu --data-dir "$tmp/data" | tee "$tmp/smoke.log"
  t2=$(date +%s.%N)
  grep -q "smoke test ok" "$tmp/smoke.log"
  "$APP/melody" generate "calm piano with soft strings" -o "$tmp/clip.flac" --seconds 4 --seed 1 --device cpu -q
  "$APP/melody" info --audio "$tmp/clip.flac"
  (cd "$tmp" && env -u MELODY_BUNDLE "$OLDPWD/$APP/melody" info --bundle "$OLDPWD/$APP/_internal/melody_core/bundled/melody-tiny" | head -3)
  awk -v a="$t0" -v b="$t1" -v c="$t2" 'BEGIN { printf "build_app: frozen start-up: melody --help %.1f s; studio smoke test (start, load, generate 4 s, play, exit) %.1f s\n", b - a, c - b }'
fi

if ((DEB)); then
  ARCH=$(dpkg --print-architecture)
  pkg=build/deb/melody-studio
  rm -rf "$pkg"
  # the app in /usr/lib, not /opt: no package owns /opt (base-files' postinst makes it), so removing a
  # package that ships /opt/... deletes /opt itself on a stock Debian (packaging/deb_test.sh saw it)
  mkdir -p "$pkg/DEBIAN" "$pkg/usr/lib" "$pkg/usr/bin" "$pkg/usr/share/applications" \
    "$pkg/usr/share/icons/hicolor/scalable/apps" "$pkg/usr/share/icons/hicolor/256x256/apps"
  cp -a "$APP" "$pkg/usr/lib/melody-studio"
  ln -s ../lib/melody-studio/melody-studio "$pkg/usr/bin/melody-studio"
  ln -s ../lib/melody-studio/melody "$pkg/usr/bin/melody"
  sed 's|@EXEC@|melody-studio|' packaging/linux/melody-studio.desktop >"$pkg/usr/share/applications/melody-studio.desktop"
  install -m 644 packaging/linux/melody-studio.svg "$pkg/usr/share/icons/hicolor/scalable/apps/"
  install -m 644 packaging/linux/melody-studio.png "$pkg/usr/share/icons/hicolor/256x256/apps/"
  size_kb=$(du -sk --exclude=DEBIAN "$pkg" | cut -f1)
  # Depends: what the bundled Qt/PortAudio load from the system (the rest is inside the folder)
  cat >"$pkg/DEBIAN/control" <<EOF
Package: melody-studio
Version: $VERSION
Architecture: $ARCH
Maintainer: MeLoDy Studio <melody-studio@localhost>
Installed-Size: $size_kb
Depends: libc6 (>= 2.28), libportaudio2, libglib2.0-0, libfontconfig1, libfreetype6, libdbus-1-3, libegl1, libgl1, libopengl0, libxkbcommon0, libxkbcommon-x11-0, libx11-xcb1, libxcb-cursor0, libxcb-icccm4, libxcb-image0, libxcb-keysyms1, libxcb-randr0, libxcb-render-util0, libxcb-shape0, libxcb-xinerama0, libxcb-xkb1
Section: sound
Priority: optional
Homepage: https://github.com/
Description: offline text/audio-prompted music generation studio
 MeLoDy Studio generates music from a text or audio prompt on the CPU (LM-guided
 dual-path diffusion), with a desktop studio and the "melody" command line.
 Frozen with PyInstaller; includes the bundled melody-tiny model.
EOF
  out=dist/melody-studio_${VERSION}_${ARCH}.deb
  t=$SECONDS
  dpkg-deb --root-owner-group -Zgzip -z6 --build "$pkg" "$out" >/dev/null
  echo "build_app: $out ($(du -h "$out" | cut -f1), installed $((size_kb / 1024)) MB) in $((SECONDS - t)) s"
fi
