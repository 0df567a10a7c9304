"""Parameter counts of every component of a preset, built on the meta device (nothing allocated).

What is counted (see each config's docstring for the arithmetic against §5.1):
- vae: encoder + decoder + discriminators (`vae_gan_parameter_count`).
- mulan: audio tower + projection heads + RVQ + the pretrained MiniLM text tower
  (`mulan_parameter_count`; MiniLM's shapes are read without loading its weights).
- dpd, ssl, lm: every parameter of the module.
"""

from __future__ import annotations

import torch

from melody_core.config import component_classes

# §5.1 of the paper
PAPER_COUNTS: dict[str, int] = {
    "vae": 100_100_000,
    "dpd": 296_600_000,
    "ssl": 199_500_000,
    "lm": 429_500_000,
    "mulan": 195_300_000,
}


def count_module_parameters(name: str, preset: str) -> int:
    cfg_cls, model_cls = component_classes(name)
    with torch.device("meta"):
        model = model_cls(cfg_cls.preset(preset))
    return sum(p.numel() for p in model.parameters())


def parameter_counts(preset: str) -> dict[str, int]:
    """{"vae", "dpd", "ssl", "lm", "mulan"} -> parameter count for `preset`."""
    from melody_core.models.mulan import MuLanConfig, mulan_parameter_count
    from melody_core.models.vae_gan import VAEConfig, vae_gan_parameter_count

    return {
        "vae": int(vae_gan_parameter_count(VAEConfig.preset(preset))["total"]),
        "dpd": count_module_parameters("dpd", preset),
        "ssl": count_module_parameters("ssl", preset),
        "lm": count_module_parameters("lm", preset),
        "mulan": int(mulan_parameter_count(MuLanConfig.preset(preset))["total"]),
    }
