"""The bundled trainer: one module per stage on a small generic loop (`loop.py`).

Stages, in dependency order: vae, ssl, kmeans (needs ssl), mulan, lm (needs ssl + kmeans + mulan),
dpd (needs vae + ssl + kmeans); unet1d trains the ablation network like dpd; dpd-distill (needs a
trained dpd as its teacher) distils it into fewer, single-forward steps.
"""

from __future__ import annotations

import importlib

# stage name -> (module, class)
STAGES: dict[str, tuple[str, str]] = {
    "vae": ("melody_core.train.vae", "VAEStage"),
    "ssl": ("melody_core.train.ssl", "SSLStage"),
    "kmeans": ("melody_core.train.kmeans", "KMeansStage"),
    "mulan": ("melody_core.train.mulan", "MuLanStage"),
    "lm": ("melody_core.train.lm", "LMStage"),
    "dpd": ("melody_core.train.dpd", "DPDStage"),
    "unet1d": ("melody_core.train.dpd", "UNet1DStage"),
    "dpd-distill": ("melody_core.train.dpd_distill", "DPDDistillStage"),
}


def make_stage(name: str):
    """A fresh Stage instance for `name` (see STAGES)."""
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r} (choose from {', '.join(STAGES)})")
    module, cls = STAGES[name]
    return getattr(importlib.import_module(module), cls)()
