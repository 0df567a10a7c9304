#!/usr/bin/env bash
# The 2-minute "Keep playing" soak of CI (issue 18): the real app offscreen (controller, live journal,
# player with its LiveMaster, waveform, lead gate) on the in-process paced sink, driven by the stand-in
# pipeline `tests/app_fake_pipeline.py:SoakPipeline` (sine chunks, ~3x real time by sleeping, no model to
# load), so that it measures the app -- memory, refcounts, feeding the device -- not this machine's speed.
# Fails (exit != 0) on: a crash (no summary; a signal gives status > 128), RSS growth > 50 MB in the 90 s
# after the 30 s warm-up, any gap in playback after the first sound, a fall of the True/False/None
# refcounts by > 100. Margins (7 Dec 2026, load average 5.3 on 2 cores): RSS grew 0.5 MB,
# lead 0.98-1.0 s, 0 gaps, 131 s wall; a gap needs the GUI thread to stall ~1 s. No wall-clock threshold.
# The 30-minute soak with the real model is `packaging/soak.sh 30` (packaging/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-$(mktemp -d "${TMPDIR:-/tmp}/melody-ci-soak.XXXXXX")}
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
SINK=paced ENGINE=tests.app_fake_pipeline:SoakPipeline PYTHON="$PY" \
  bash packaging/soak.sh 2 "$OUT" > "$OUT.log" 2>&1 || { tail -20 "$OUT.log"; echo "ci soak: FAILED (see $OUT)"; exit 1; }
tail -1 "$OUT.log"
