#!/usr/bin/env bash
# One-shot DPD training on a lent GPU machine (issue 16): unpack a device pack, run
# `melody train dpd` from the pack's weights for at most MINUTES (setup included), and put the
# weights into OUT after every checkpoint (every CKPT_MINUTES), so a run killed at the call's limit
# still returns its last checkpoint. Falls back to the CPU where there is no CUDA (the tests run it so).
#
#   packaging/device_train.sh [PACK_DIR]      # default .devpack (built by packaging/device_pack.sh)
#
# Returns through OUT (default: $OUT on the device machine, else ./device_out), at most 8 files:
#   dpd-last.{0,1}.safetensors  dpd-best.{0,1}.safetensors   fp32 weights, shards < 16 MiB
#   metrics.csv  train.log  device.json                       the device run's metrics, log, run.json
# Environment: MINUTES (8), CKPT_MINUTES (2), BATCH_SIZE (32), LR (3e-4), WARMUP (100),
# VALID_EVERY (100), DEVICE (auto), THREADS (cores), WORK (/tmp/melody-devtrain), PYTHON (python3),
# TRAIN_ARGS (more `melody train dpd` options). Bring the weights home: packaging/README.md.
set -uo pipefail
cd "$(dirname "$0")/.."
PACK=${1:-.devpack}
OUT_DIR=${OUT:-device_out}
MINUTES=${MINUTES:-8}
PY=${PYTHON:-python3}
export OMP_WAIT_POLICY=PASSIVE PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
[ -f "$PACK/pack.json" ] || { echo "error: $PACK/pack.json not found (build the pack with packaging/device_pack.sh)"; exit 2; }
mkdir -p "$OUT_DIR"
start=$(date +%s)

"$PY" - <<'PYEOF'
import os, platform, torch
print("devtrain: python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda,
      "cores", os.cpu_count())
print("devtrain: gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (CPU run)")
PYEOF
# melody_core's audio I/O imports soundfile and soxr; the device image lacks them: the pack carries wheels
if ! "$PY" -c "import soundfile, soxr" 2>/dev/null; then
    ls "$PACK"/wheels/*.whl >/dev/null 2>&1 || { echo "error: soundfile/soxr missing and $PACK/wheels is empty"; exit 2; }
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/melody-site \
        "$PACK"/wheels/*.whl || { echo "error: could not install the carried wheels"; exit 2; }
    export PYTHONPATH=/tmp/melody-site${PYTHONPATH:+:$PYTHONPATH}
    "$PY" -c "import soundfile, soxr" || { echo "error: soundfile/soxr still not importable"; exit 2; }
    echo "devtrain: installed $(ls "$PACK"/wheels/*.whl | wc -l) carried wheels"
fi
THREADS=${THREADS:-$(nproc)}
left=$("$PY" -c "print(max(0.2, $MINUTES - ($(date +%s) - $start) / 60))")
set -x
"$PY" -m melody_core.train.devrun train "$PACK" --out "$OUT_DIR" --minutes "$left" \
    --ckpt-minutes "${CKPT_MINUTES:-2}" --work "${WORK:-/tmp/melody-devtrain}" -- \
    --device "${DEVICE:-auto}" --threads "$THREADS" --batch-size "${BATCH_SIZE:-32}" --lr "${LR:-3e-4}" \
    --warmup "${WARMUP:-100}" --valid-every "${VALID_EVERY:-100}" --ckpt-every 100000 --log-every 10 \
    ${TRAIN_ARGS:-}
rc=$?
set +x
ls -l "$OUT_DIR"
echo "devtrain: done in $(( $(date +%s) - start )) s, status $rc"
exit $rc
