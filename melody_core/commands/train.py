"""`melody train STAGE ...` and `melody train export RUN_DIR... --out BUNDLE`.

Stages (dependency order): vae, ssl, kmeans, mulan, lm, dpd (+ unet1d, the ablation network).
Every stage resumes from RUN_DIR/checkpoints/last.pt by default; run it under
`torchrun --nproc_per_node=N -m melody_core.cli train STAGE ...` for DDP (same options).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from melody_core.commands import CLIError

STAGE_HELP = {
    "vae": "audio VAE-GAN (reconstruction + KL + adversarial + feature matching)",
    "ssl": "Wav2Vec2-Conformer (wav2vec 2.0, or --objective hubert)",
    "kmeans": "k-means semantic tokenizer on SSL features (needs --upstream with ssl)",
    "mulan": "MuLan text/audio towers (contrastive) + RVQ on audio embeddings",
    "lm": "semantic LM (needs --upstream providing ssl, kmeans, mulan)",
    "dpd": "dual-path diffusion (needs --upstream providing vae, ssl, kmeans)",
    "unet1d": "1-D U-Net ablation diffusion network (same data as dpd)",
    "dpd-distill": "distil a trained dpd (the --upstream dpd: teacher) into a guidance-input and/or "
    "fewer-step student",
}


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def _override(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw  # a bare string
    return key.strip(), value


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, type=Path, help="corpus folder (captions.jsonl or audio files)")
    p.add_argument("--out", required=True, type=Path, help="run folder (checkpoints, metrics.csv, loss.png)")
    p.add_argument("--preset", choices=["tiny", "paper"], default="tiny", help="model and batch presets")
    p.add_argument("--steps", type=_positive_int, help="total optimizer steps (k-means: Lloyd iterations)")
    p.add_argument("--minutes", type=_positive_float, help="wall-clock budget of this invocation")
    p.add_argument("--batch-size", type=_positive_int, help="examples per process per step")
    p.add_argument("--lr", type=_positive_float, help="peak learning rate")
    p.add_argument("--warmup", type=int, help="linear warm-up steps")
    p.add_argument("--crop-seconds", type=_positive_float, help="training crop/window length in seconds")
    p.add_argument("--grad-clip", type=float, help="gradient-norm clip (0 = off)")
    p.add_argument("--weight-decay", type=float, help="AdamW weight decay")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="continue from RUN_DIR's last checkpoint (default) or start over",
    )
    p.add_argument("--init-from", type=Path, metavar="BUNDLE_OR_RUN", help="start from these weights")
    p.add_argument(
        "--upstream",
        type=Path,
        action="append",
        default=[],
        metavar="BUNDLE_OR_RUN",
        help="where earlier stages' models come from (repeatable)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        type=_override,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a model config field (JSON value), e.g. --set n_layers=2",
    )
    p.add_argument("--cache-dir", type=Path, help="feature caches (default: RUN_DIR/../.melody-cache)")
    p.add_argument("--valid-every", type=int, help="steps between validations (0 = only at the end)")
    p.add_argument("--valid-batches", type=int, help="fixed validation batches")
    p.add_argument("--ckpt-every", type=_positive_int, default=200, help="steps between checkpoints")
    p.add_argument("--ckpt-minutes", type=_positive_float, default=10.0, help="also checkpoint this often")
    p.add_argument("--log-every", type=_positive_int, default=1, help="steps between metrics.csv rows")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True, help="bf16 autocast on CUDA")
    p.add_argument("--compile", action="store_true", help="torch.compile the networks (CUDA only)")
    p.add_argument("--threads", type=_positive_int, help="torch CPU threads")
    p.add_argument("--no-plot", dest="plot", action="store_false", help="do not write loss.png")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: only on a terminal)",
    )
    p.add_argument("--kill-at-step", type=int, help=argparse.SUPPRESS)  # fault injection for tests


def register(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser(
        "train",
        help="train a pipeline stage or export runs to a bundle",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    stages = train.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for name, text in STAGE_HELP.items():
        p = stages.add_parser(name, help=text, description=text)
        _common(p)
        if name == "ssl":
            p.add_argument(
                "--objective",
                choices=["wav2vec2", "hubert"],
                default="wav2vec2",
                help="wav2vec 2.0 (paper) or HuBERT-style first iteration (k-means mel targets)",
            )
        if name == "dpd":
            p.add_argument("--size", choices=["v1", "v2"], default="v1",
                           help="tiny DPD: v1 (0.21M, one frame per position) or v2 (5.7M, 10 frames per "
                           "position; DPDConfig.tiny_v2)")
        if name == "dpd-distill":
            _distill_args(p)
        if name == "vae":
            _vae_training_args(p)
        if name == "lm":
            g = p.add_argument_group("trainer options (not part of the model config or its hash)")
            g.add_argument("--text-prefix-prob", type=float, metavar="P",
                           help="share of crops whose prefix is a caption's text codes (tiny preset: 0.4)")
            g.add_argument("--control-dropout", type=float, metavar="P",
                           help="probability each BPM/key control of a crop is replaced by null (default 0)")
        p.set_defaults(func=run_stage)
    exp = stages.add_parser(
        "export",
        help="collect trained runs into one checkpoint bundle",
        description="Collect the weights of run folders into one bundle (meta: steps, "
        "wall time, hardware, data per stage; the DPD's latent_scale).",
    )
    exp.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    exp.add_argument("--out", required=True, type=Path, help="bundle folder to write")
    exp.add_argument(
        "--weights",
        choices=["last", "best"],
        default="last",
        help="latest checkpoint or best validation weights",
    )
    exp.add_argument("--base", type=Path, metavar="BUNDLE", help="take the other components from this bundle")
    exp.add_argument(
        "--allow-mismatch",
        action="store_true",
        help="export even if a run was trained on different upstream weights",
    )
    exp.set_defaults(func=run_export)


STAGE_ARGS = ("size", "phase", "rho", "teacher_steps", "rounds")  # options of dpd / dpd-distill only
# trainer options (`Stage.training_options`, e.g. train.vae.VAETraining) per stage: given only when
# typed, so the preset, a resumed run or an old --init-from config fills the rest
TRAINING_ARGS = {"vae": ("adversarial_start_step", "freeze_encoder", "latent_noise", "calibrate_gain"),
                 "lm": ("text_prefix_prob", "control_dropout")}


def _vae_training_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("trainer options (not part of the model config or its hash)")
    g.add_argument("--adversarial-start-step", type=int, metavar="STEP",
                   help="reconstruction-only warm-up: GAN terms from this step on (tiny preset: 4000)")
    g.add_argument("--freeze-encoder", action=argparse.BooleanOptionalAction, default=None,
                   help="train only the decoder and discriminators (needs --init-from; latents unchanged)")
    g.add_argument("--latent-noise", type=float, metavar="STD",
                   help="Gaussian noise of std up to STD on the decoder's input latents")
    g.add_argument("--calibrate-gain", action=argparse.BooleanOptionalAction, default=None,
                   help="at the start, rescale the iSTFT decoder output by the gain minimising the mel loss")


def _distill_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--phase", choices=["guidance", "progressive"], default="guidance",
                   help="guidance: rho as an input, one forward a step; progressive: half the steps a round")
    p.add_argument("--rho", type=float, nargs=2, default=[1.0, 5.0], metavar=("LOW", "HIGH"),
                   help="range of the guidance scale rho the student learns")
    p.add_argument("--teacher-steps", type=_positive_int, default=16,
                   help="progressive: sampler steps of the teacher in the first round")
    p.add_argument("--rounds", type=_positive_int, default=1,
                   help="progressive: rounds in this run, each halving the steps")


def options_from_args(args: argparse.Namespace):
    from melody_core.train.stage import TrainOptions

    return TrainOptions(
        stage=args.stage,
        data=args.data,
        out=args.out,
        preset=args.preset,
        steps=args.steps,
        minutes=args.minutes,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup=args.warmup,
        crop_seconds=args.crop_seconds,
        grad_clip=args.grad_clip,
        weight_decay=args.weight_decay,
        valid_every=args.valid_every,
        valid_batches=args.valid_batches,
        ckpt_every=args.ckpt_every,
        ckpt_minutes=args.ckpt_minutes,
        log_every=args.log_every,
        seed=args.seed,
        resume=args.resume,
        init_from=args.init_from,
        upstream=list(args.upstream),
        overrides=dict(args.overrides),
        training={k: getattr(args, k) for k in TRAINING_ARGS.get(args.stage, ())
                  if getattr(args, k) is not None},
        cache_dir=args.cache_dir,
        device=args.device,
        amp=args.amp,
        compile=args.compile,
        threads=args.threads,
        objective=getattr(args, "objective", "wav2vec2"),
        plot=args.plot,
        progress=args.progress,
        kill_at_step=args.kill_at_step,
        stage_args={k: getattr(args, k) for k in STAGE_ARGS if hasattr(args, k)},
    )


def run_stage(args: argparse.Namespace) -> int:
    from melody_core.audio import AudioError
    from melody_core.checkpoint import BundleError
    from melody_core.config import ConfigError
    from melody_core.data.corpus import CorpusError
    from melody_core.train.loop import train
    from melody_core.train.state import StateFileError
    from melody_core.train.upstream import TrainError

    try:
        summary = train(options_from_args(args))
    except (TrainError, StateFileError, CorpusError, BundleError, ConfigError, AudioError) as exc:
        raise CLIError(str(exc)) from None
    return 130 if summary.get("stopped") == "signal" else 0


def run_export(args: argparse.Namespace) -> int:
    from melody_core.checkpoint import BundleError, describe_bundle
    from melody_core.train.export import export_runs
    from melody_core.train.state import StateFileError
    from melody_core.train.upstream import TrainError

    try:
        info = export_runs(
            args.runs, args.out, which=args.weights, base=args.base, allow_mismatch=args.allow_mismatch
        )
    except (TrainError, StateFileError, BundleError) as exc:
        raise CLIError(str(exc)) from None
    print(describe_bundle(info))
    return 0


def main(argv: list[str] | None = None) -> int:
    """The `train` command alone (`main(["vae", "--data", ...])`; the smoke runner and tests use it)."""
    parser = argparse.ArgumentParser(prog="melody")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(["train", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.func(args) or 0)
    except CLIError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
