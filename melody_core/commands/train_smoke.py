"""End-to-end smoke run of the trainer: every stage on a synthetic corpus with shrunken tiny configs,
then an export — seconds on a CPU. Used by the tests and handy after a change:

    python -m melody_core.commands.train_smoke /tmp/melody-smoke
"""

from __future__ import annotations

import sys
from pathlib import Path

# tiny presets shrunk further (config overrides, as `--set KEY=VALUE`)
SMOKE_OVERRIDES: dict[str, dict[str, object]] = {
    "vae": {
        "encoder_channels": [8, 8, 16, 32],
        "decoder_channels": 32,
        "istft_blocks": 1,
        "encoder_latent_blocks": 1,
        "mpd_periods": [2, 3],
        "mrsd_resolutions": [[256, 64, 256]],
    },
    "ssl": {
        "d_model": 32,
        "n_layers": 1,
        "n_heads": 2,
        "final_dim": 32,
        "codebook_entries": 16,
        "num_negatives": 5,
        "token_layer": 1,
        "pos_conv_kernel": 8,
        "pos_conv_groups": 4,
        "hubert_classes": 8,
    },
    "kmeans": {"n_clusters": 16},
    "mulan": {
        "text_backbone": "hash",
        "d_model": 32,
        "n_layers": 1,
        "n_heads": 2,
        "ffn_hidden": 64,
        "stem_channels": 8,
        "rvq_codebook_size": 16,
        "rvq_codebooks": 4,
        "hash_buckets": 256,
        "hash_dim": 16,
        "text_head_hidden": 32,
    },
    "lm": {"d_model": 32, "n_layers": 1, "n_heads": 2, "ffn_hidden": 64},
    "dpd": {"d_hid": 32, "n_blocks": 1, "n_heads": 2, "segment_size": 16, "sru_hidden": 16, "angle_dim": 32},
}
# trainer options (flags, not model config: `Stage.training_options`)
SMOKE_TRAINING: dict[str, list[str]] = {"vae": ["--adversarial-start-step", "2"]}
# per-stage options: (steps, batch size, crop seconds)
SMOKE_RUN: dict[str, tuple[int, int, float]] = {
    "vae": (4, 2, 0.1),
    "ssl": (4, 2, 1.0),
    "kmeans": (5, 1, 1.0),
    "mulan": (6, 4, 1.0),
    "lm": (4, 4, 1.0),
    "dpd": (4, 2, 0.4),
}
UPSTREAM = {"kmeans": ("ssl",), "lm": ("ssl", "kmeans", "mulan"), "dpd": ("vae", "ssl", "kmeans")}


def stage_argv(
    stage: str, data: Path, runs: Path, *extra: str, threads: int = 1, out: Path | None = None
) -> list[str]:
    """`melody train` arguments of a smoke run of `stage`: upstream runs in runs/<stage>, output to
    `out` (default runs/<stage>)."""
    import json

    steps, batch, crop = SMOKE_RUN[stage]
    out = runs / stage if out is None else out
    argv = [
        stage,
        "--data",
        str(data),
        "--out",
        str(out),
        "--steps",
        str(steps),
        "--batch-size",
        str(batch),
        "--crop-seconds",
        str(crop),
        "--threads",
        str(threads),
        "--valid-batches",
        "1",
        "--no-plot",
        "--cache-dir",
        str(runs / "cache"),
    ]
    for key, value in SMOKE_OVERRIDES[stage].items():
        argv += ["--set", f"{key}={json.dumps(value)}"]
    argv += SMOKE_TRAINING.get(stage, [])
    for up in UPSTREAM.get(stage, ()):
        argv += ["--upstream", str(runs / up)]
    return argv + list(extra)


def run_pipeline(root: Path, threads: int = 1) -> Path:
    """Synthetic corpus -> every stage -> bundle at root/bundle; returns the bundle path."""
    from melody_core.commands.train import main
    from melody_core.train.data import write_synthetic_corpus

    root = Path(root)
    data = write_synthetic_corpus(root / "corpus", n_train=6, n_valid=2, seconds=1.0)
    runs = root / "runs"
    for stage in ("vae", "ssl", "kmeans", "mulan", "lm", "dpd"):
        if main(stage_argv(stage, data, runs, threads=threads)) != 0:
            raise RuntimeError(f"smoke run of {stage} failed")
    if main(["export", *(str(runs / s) for s in SMOKE_RUN), "--out", str(root / "bundle")]) != 0:
        raise RuntimeError("smoke export failed")
    return root / "bundle"


if __name__ == "__main__":
    print(run_pipeline(Path(sys.argv[1] if len(sys.argv) > 1 else "melody-smoke")))
