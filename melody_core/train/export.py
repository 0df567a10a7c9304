"""`melody train export RUN_DIR... --out BUNDLE`: trained runs -> one checkpoint bundle.

Each run folder contributes its component (latest or best-validation weights); `--base BUNDLE`
supplies the components no run provides (e.g. refresh only the DPD of the shipped bundle).
Bundle meta:
  "stages": {component: {stage, run, weights, step, wall_s, hardware, data (corpus summary),
             upstream (hashes the run was trained on), hash (of the exported weights), ...}}
  "latent_scale": the DPD's latent scale (multiply VAE latents by it before the DPD, divide the
                  DPD's output by it before decoding; see train/dpd.py)
Runs trained on other upstream weights than the ones in the bundle (an LM on tokens of another
SSL/k-means, a DPD on latents of another VAE) are refused unless `allow_mismatch`.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from torch import nn

from melody_core.checkpoint import BundleInfo, load_bundle, save_bundle
from melody_core.config import PIPELINE_COMPONENTS, BaseConfig, ConfigError, MelodyConfig, component_classes
from melody_core.train.state import encoder_hash, load_state, module_hash
from melody_core.train.upstream import CKPT_DIR, TrainError, run_weights

# the ablation network's contracts (MelodyConfig.validate covers the pipeline components)
UNET_CONSISTENCY = (
    ("unet1d", "vocab_size", "kmeans", "n_clusters"),
    ("unet1d", "d_latent", "vae", "latent_dim"),
)


def export_runs(
    runs: list[Path], out: Path, which: str = "last", base: Path | None = None, allow_mismatch: bool = False
) -> BundleInfo:
    models: dict[str, nn.Module] = {}
    configs: dict[str, BaseConfig] = {}
    meta: dict[str, Any] = {"stages": {}}
    if base is not None:
        bundle = load_bundle(base)
        models.update(bundle.models)
        configs.update(bundle.configs)
        meta["stages"].update(bundle.meta.get("stages", {}))
        if "latent_scale" in bundle.meta:
            meta["latent_scale"] = bundle.meta["latent_scale"]
        meta["base_bundle"] = {"path": str(base), "hash": bundle.model_hash}
    upstream: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    for run_dir in runs:
        run, ckpt = run_weights(run_dir, which)
        name = run["component"]
        if name in seen:
            raise TrainError(f"two runs provide the {name!r} component")
        seen.add(name)
        cfg_cls, model_cls = component_classes(name)
        cfg = cfg_cls.from_dict(run["config"])
        model = model_cls(cfg)
        model.load_state_dict(ckpt["models"][name])
        models[name], configs[name] = model.eval(), cfg
        last = ckpt if which == "last" else load_state(Path(run_dir) / CKPT_DIR / "last.pt")
        extra = {**run.get("export_meta", {}), **ckpt.get("export_meta", {})}
        meta["stages"][name] = {
            "stage": run["stage"],
            "run": str(run_dir),
            "weights": which,
            "step": int(ckpt["step"]),
            "total_steps": int(last["step"]),
            "wall_s": round(float(last.get("wall_s", 0.0)), 1),
            "hardware": run.get("hardware", {}),
            "data": run.get("data", {}),
            "preset": run.get("preset"),
            "upstream": run.get("upstream", {}),
            "init_from": run.get("init_from"),
            "hash": module_hash(model),
            "hyper": run.get("hyper", {}),
            **extra,
        }
        if name == "dpd" and "latent_scale" in extra:
            meta["latent_scale"] = extra["latent_scale"]
        upstream[name] = run.get("upstream", {})
    problems = _mismatches(models, configs, upstream)
    if problems and not allow_mismatch:
        raise TrainError("; ".join(problems) + " (retrain, export the matching runs, or --allow-mismatch)")
    meta["exported"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    if problems:
        meta["mismatches"] = problems
    return save_bundle(out, models, configs, meta)


def _mismatches(
    models: dict[str, nn.Module], configs: dict[str, BaseConfig], upstream: dict[str, dict[str, Any]]
) -> list[str]:
    out = []
    hashes = {n: module_hash(m) for n, m in models.items()}
    for name, ups in upstream.items():
        for up_name, info in ups.items():
            if up_name not in hashes or hashes[up_name] == info.get("hash"):
                continue
            if up_name == name:  # distillation (dpd-distill): the teacher is not exported
                continue
            if up_name == "vae" and info.get("encoder_hash") == encoder_hash(models["vae"]):
                continue  # decoder-only fine-tuning: same encoder, same latents
            out.append(f"{name} was trained on another {up_name} than the one exported")
    try:
        MelodyConfig({n: c for n, c in configs.items() if n in PIPELINE_COMPONENTS}).validate()
    except ConfigError as exc:
        out.append(str(exc))
    for a, fa, b, fb in UNET_CONSISTENCY:
        if a in configs and b in configs and getattr(configs[a], fa) != getattr(configs[b], fb):
            out.append(f"{a}.{fa}={getattr(configs[a], fa)} != {b}.{fb}={getattr(configs[b], fb)}")
    return out
