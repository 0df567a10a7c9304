#!/usr/bin/env bash
# The 2-minute "Keep playing" soak of CI (issue 18): the real app offscreen (controller, live journal,
# player with its LiveMaster, waveform) on the in-process paced sink, driven by the stand-in pipeline
# (tests/app_fake_pipeline.py: sine chunks, real time x ~0.01, no model to load), so that it measures the
# app's memory and refcounts, not this machine's speed. Fails (exit != 0) on a crash (soak.py does not
# write its summary; a signal gives status > 128), RSS growth > 50 MB after the 30 s warm-up, any gap
# in playback after the first sound, or a fall of the True/False/None refcounts (> 100).
# Why these bounds hold on a loaded 2-core machine: generating a chunk costs the stand-in ~20 ms, so the
# lead stays ~1.2 s (one 1 s chunk + the gate's allowance) and a gap needs the GUI thread to stall for
# over a second; RSS was flat to +2 MB over the 90 s after warm-up (soak_out/summary.json).
# The 30-minute soak with the real model is `packaging/soak.sh 30` (see packaging/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-$(mktemp -d "${TMPDIR:-/tmp}/melody-ci-soak.XXXXXX")}
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
SINK=paced ENGINE=tests.app_fake_pipeline:FakePipeline PYTHON="$PY" \
  bash packaging/soak.sh 2 "$OUT" > "$OUT.log" 2>&1 || { tail -20 "$OUT.log"; echo "ci soak: FAILED (see $OUT)"; exit 1; }
tail -1 "$OUT.log"
