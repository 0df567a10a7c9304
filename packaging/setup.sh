#!/usr/bin/env bash
# Set up MeLoDy Studio on a Debian/Ubuntu machine (run as root or with sudo available).
#   bash packaging/setup.sh          # runtime: app + CLI
#   bash packaging/setup.sh --dev    # + test tools
set -euo pipefail
cd "$(dirname "$0")/.."

EXTRAS="app,data"
if [[ "${1:-}" == "--dev" ]]; then EXTRAS="app,data,dev"; fi

# System packages: PortAudio (sound output), FluidSynth + GM soundfont (training corpus),
# Xvfb + xcb libs (real-window tests / screenshots).
APT_PKGS=(libportaudio2 fluidsynth fluid-soundfont-gm xvfb libxcb-icccm4 libxcb-keysyms1 libxkbcommon-x11-0
          libxcb-image0 libxcb-render-util0 libxcb-shape0 libxcb-xinerama0 libxcb-cursor0 libegl1 libgl1 xauth g++)
missing=()
for p in "${APT_PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if (( ${#missing[@]} )); then
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# torch first, pinned, so that the local CPU build is used and no CUDA wheels are pulled.
python3 -m pip install -q "torch==2.13.0"
python3 -m pip install -q -e ".[${EXTRAS}]"
