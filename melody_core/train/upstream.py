"""Where trained components come from: bundle folders and run folders.

A *run folder* is what `melody train STAGE --out RUN_DIR` writes:
    run.json              stage, component, preset, model config, options, data summary, upstream
                          hashes, export meta (e.g. the DPD's `latent_scale`)
    checkpoints/last.pt   full training state (weights, optimizers, RNG, sampler, step, wall time)
    checkpoints/best.pt   weights of the best validation score so far
    metrics.csv, loss.png
A *bundle* is a `melody_core.checkpoint` folder. Both can provide a component's weights: as an
upstream model of a later stage (`--upstream`), to initialise a stage (`--init-from`), or to export.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from melody_core.checkpoint import MANIFEST_NAME, load_bundle
from melody_core.config import BaseConfig, component_classes
from melody_core.train.state import load_state, module_hash

RUN_FILE = "run.json"
CKPT_DIR = "checkpoints"
WEIGHTS = ("last", "best")


class TrainError(ValueError):
    """A user-facing training problem (bad folder, missing upstream, mismatched run): one line."""


@dataclass
class Component:
    """A trained model with its config, weight hash and provenance."""

    name: str
    model: nn.Module
    config: BaseConfig
    hash: str
    source: str
    meta: dict[str, Any] = field(default_factory=dict)  # bundle meta / run export meta
    moved_options: dict[str, Any] = field(default_factory=dict)  # trainer options its config held before
    # they left the model config (`BaseConfig.MOVED_TO_TRAINER`; bundles and runs written before that)


def is_bundle(path: Path) -> bool:
    manifest = Path(path) / MANIFEST_NAME
    if not manifest.is_file():
        return False
    try:
        return json.loads(manifest.read_text(encoding="utf-8")).get("format") == "melody-bundle"
    except (OSError, ValueError, AttributeError):
        return False


def is_run(path: Path) -> bool:
    return (Path(path) / RUN_FILE).is_file()


def read_run(path: Path) -> dict[str, Any]:
    try:
        return json.loads((Path(path) / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TrainError(f"{path}: cannot read {RUN_FILE} ({exc})") from None


def run_weights(path: Path, which: str = "last") -> tuple[dict[str, Any], dict[str, Any]]:
    """(run.json, checkpoint dict) of a run folder; `which` = "last" or "best" (falls back to last)."""
    if which not in WEIGHTS:
        raise TrainError(f"weights must be one of {WEIGHTS}, got {which!r}")
    run = read_run(path)
    ckpt = Path(path) / CKPT_DIR / f"{which}.pt"
    if which == "best" and not ckpt.is_file():
        ckpt = Path(path) / CKPT_DIR / "last.pt"
    if not ckpt.is_file():
        raise TrainError(f"{path}: no checkpoint yet (train the stage first)")
    return run, load_state(ckpt)


def run_component(path: Path, device: torch.device, which: str = "last") -> Component:
    """The exported component of a run folder, built from its config and checkpoint weights."""
    run, ckpt = run_weights(path, which)
    name = run["component"]
    cfg_cls, model_cls = component_classes(name)
    cfg = cfg_cls.from_dict(run["config"])
    model = model_cls(cfg)
    model.load_state_dict(ckpt["models"][name])
    model = model.to(device).eval()
    meta = dict(run.get("export_meta", {}), **ckpt.get("export_meta", {}))
    source = f"run {path} ({which}, step {ckpt['step']})"
    moved = cfg_cls.moved_to_trainer(run["config"])
    return Component(name, model, cfg, module_hash(model), source, meta, moved)


def bundle_component(path: Path, name: str, device: torch.device) -> Component:
    bundle = load_bundle(path, device=device, components=[name])
    model = bundle.models[name]
    raw = json.loads((Path(path) / MANIFEST_NAME).read_text(encoding="utf-8"))["components"][name]["config"]
    moved = type(bundle.configs[name]).moved_to_trainer(raw)
    return Component(
        name, model, bundle.configs[name], module_hash(model), f"bundle {path}", dict(bundle.meta), moved
    )


def load_component(path: Path, name: str, device: torch.device) -> Component:
    """Component `name` from a bundle or a run folder at `path`."""
    path = Path(path)
    if is_bundle(path):
        if not _bundle_has(path, name):
            raise TrainError(f"{path}: bundle has no {name!r} component")
        return bundle_component(path, name, device)
    if is_run(path):
        comp = read_run(path).get("component")
        if comp != name:
            raise TrainError(f"{path}: run folder holds a {comp!r} component, not {name!r}")
        return run_component(path, device)
    raise TrainError(f"{path}: neither a bundle nor a run folder")


def resolve_upstream(
    paths: list[Path], needed: tuple[str, ...], device: torch.device
) -> dict[str, Component]:
    """Each needed component from the given paths: a run folder provides its own component, a
    bundle any of its components; the first path providing a component wins."""
    found: dict[str, Component] = {}
    for name in needed:
        for p in paths:
            p = Path(p)
            if (is_run(p) and read_run(p).get("component") == name) or (
                is_bundle(p) and _bundle_has(p, name)
            ):
                found[name] = load_component(p, name, device)
                break
        else:
            raise TrainError(
                f"this stage needs a trained {name!r}: pass --upstream RUN_DIR_OR_BUNDLE that provides it"
            )
    return found


def _bundle_has(path: Path, name: str) -> bool:
    try:
        manifest = json.loads((path / MANIFEST_NAME).read_text(encoding="utf-8"))
        return name in manifest.get("components", {})
    except (OSError, ValueError):
        return False
