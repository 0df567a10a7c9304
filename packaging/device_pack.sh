#!/usr/bin/env bash
# Build the carry of packaging/device_train.sh (issue 16): a device pack of a home DPD run.
#
#   packaging/device_pack.sh RUN_DIR CORPUS [PACK_DIR]     # PACK_DIR default: .devpack in this checkout
#
# Reads RUN_DIR (its checkpoints/last.pt, run.json, the feature cache next to it) and CORPUS without
# changing them; writes PACK_DIR: the run's weights, as many training windows as fit, the upstream
# runs outside the checkout, and the wheels the device image lacks. The checkout a device call sends
# plus PACK_DIR must stay under 64 MiB: the pack fills what the checkout leaves (pack.json says what
# went in). Run it in the checkout the device calls send (the lead's), so the budget is that one's.
# Environment: WINDOW_SECONDS (12), WEIGHTS (bf16 | fp32), DATA_MIB (cap), MEASURE=1 (valid loss of the
# bf16 weights and uint8 latents vs exact, on the CPU), PYTHON (python), WHEELS (a folder of the wheels,
# else pip downloads them for the device's Python 3.12 / x86-64), MINUTES (8: in the printed command).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { sed -n 2,12p "$0"; exit 2; }
RUN_DIR=$1 CORPUS=$2 PACK=${3:-.devpack}
PY=${PYTHON:-python}
MINUTES=${MINUTES:-8}
export OMP_WAIT_POLICY=PASSIVE
case "$PACK" in /*) ;; *) PACK="$PWD/$PACK" ;; esac
case "$PACK" in "$PWD"/*) ;; *) echo "error: $PACK is outside this checkout: a device call would not send it"; exit 2 ;; esac
mkdir -p "$PACK"
git check-ignore -q "$PACK" || { echo "error: $PACK is not git-ignored (add it to .gitignore or .git/info/exclude)"; exit 2; }
rel=${PACK#"$PWD"/}

WHEELS=${WHEELS:-}
if [ -z "$WHEELS" ]; then
    WHEELS=$(mktemp -d)
    trap 'rm -rf "$WHEELS"' EXIT
    # the versions the device's Python 3.12 (x86-64, manylinux) takes; soundfile bundles libsndfile
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$WHEELS" soundfile==0.13.1 soxr==0.5.0.post1 cffi==2.0.0 pycparser==2.22
fi
args=(build "$RUN_DIR" "$CORPUS" "$PACK" --repo "$PWD" --wheels "$WHEELS"
      --window-seconds "${WINDOW_SECONDS:-12}" --weights "${WEIGHTS:-bf16}")
[ -n "${DATA_MIB:-}" ] && args+=(--data-mib "$DATA_MIB")
[ -n "${MEASURE:-}" ] && args+=(--measure)
nice -n "${NICE:-10}" "$PY" -m melody_core.train.devrun "${args[@]}"

timeout=$(( ${MINUTES%.*} * 60 + 75 ))
cat <<EOT

Device call (one; what comes back lands under the reply's files_at):
  run(command="MINUTES=$MINUTES bash packaging/device_train.sh $rel", carry=["$rel"], timeout_s=$timeout)
Then bring the weights home (packaging/README.md, "Training on a lent GPU"):
  python -m melody_core.train.devrun import FILES_AT --home $RUN_DIR --into NEW_RUN_DIR
EOT
