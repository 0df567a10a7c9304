#!/usr/bin/env bash
# Lint + full test suite (CPU only, no display, no sound card needed).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 QT_QPA_PLATFORM=offscreen
python3 -m ruff check .
python3 -m pytest -q -p no:cacheprovider tests
