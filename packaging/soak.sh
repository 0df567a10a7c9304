#!/usr/bin/env bash
# 30-minute "Keep playing" soak of the app, offscreen, on a paced null sink (issue 18's must-show).
#
#   packaging/soak.sh [MINUTES] [OUT_DIR]          # defaults: 30, ./soak_out
#
# The app plays through PortAudio -> ALSA: ALSA's default device is the `file` plugin writing into a
# FIFO, and a reader drains the FIFO at exactly real time (48 kHz, S16, mono = 96,000 B/s), so the
# device is paced like a sound card (ALSA's `type null` alone is not paced; no PulseAudio needed).
# SINK=paced uses the in-process paced device instead (no ALSA). Other overrides: BUNDLE (model
# bundle; default: the bundled model), ENGINE (module:Name stand-in pipeline), STEPS (10), THREADS.
# Results: OUT_DIR/samples.csv (RSS, lead over playback, underruns, refcounts every 10 s),
# OUT_DIR/summary.json, OUT_DIR/soak.log; exit status 0 when summary.ok (see packaging/soak.py), and
# a crash is reported with the process's exit status (e.g. 134 = abort).
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${1:-30}
OUT_DIR=${2:-soak_out}
SINK=${SINK:-alsa}
PY=${PYTHON:-python3}
export OMP_WAIT_POLICY=PASSIVE QT_QPA_PLATFORM=offscreen HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
args=(--minutes "$MINUTES" --out "$OUT_DIR" --sink "$SINK" --steps "${STEPS:-10}")
[ -n "${BUNDLE:-}" ] && args+=(--bundle "$BUNDLE")
[ -n "${ENGINE:-}" ] && args+=(--engine "$ENGINE")
[ -n "${THREADS:-}" ] && args+=(--threads "$THREADS")

pacer_pid=""
cleanup() { [ -n "$pacer_pid" ] && kill "$pacer_pid" 2>/dev/null || true; rm -f "$OUT_DIR/sink.fifo"; }
trap cleanup EXIT
if [ "$SINK" = alsa ]; then
  rm -f "$OUT_DIR/sink.fifo"
  mkfifo "$OUT_DIR/sink.fifo"
  cat > "$OUT_DIR/asound_paced.conf" <<CONF
pcm.!default { type plug; slave { pcm "paced"; format S16_LE; rate 48000; channels 1 } }
pcm.paced { type file; slave.pcm "null"; file "$OUT_DIR/sink.fifo"; format "raw" }
CONF
  export ALSA_CONFIG_PATH="/usr/share/alsa/alsa.conf:$OUT_DIR/asound_paced.conf"
  "$PY" - "$OUT_DIR/sink.fifo" <<'PACER' &
import sys, time
BYTES_PER_S, BLOCK = 96000, 1920  # 48 kHz S16 mono; 20 ms blocks
while True:  # PortAudio opens and closes the device while probing: read every writer in turn
    with open(sys.argv[1], "rb", buffering=0) as f:
        t = time.perf_counter()
        while f.read(BLOCK):
            t += BLOCK / BYTES_PER_S
            time.sleep(max(0.0, t - time.perf_counter()))
PACER
  pacer_pid=$!
fi
set +e
PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" "$PY" packaging/soak.py "${args[@]}" 2>&1 | tee "$OUT_DIR/soak.log"
status=${PIPESTATUS[0]}
set -e
if [ "$status" -gt 128 ] || [ ! -f "$OUT_DIR/summary.json" ]; then
  echo "soak: did not finish (exit status $status; > 128 = killed by a signal)" | tee -a "$OUT_DIR/soak.log"
fi
exit "$status"
