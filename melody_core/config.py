"""Typed configs: a small base class for every model config, and `MelodyConfig`, the whole family.

Each model keeps its own dataclass config next to its code (nanoGPT style, e.g.
`melody_core.models.dpd.DPDConfig`), with a comment on each field and two presets as classmethods:
`tiny()` (trains in about an hour per stage on a 2-core CPU) and `paper()` (the sizes of §5.1).
This module gathers them into one `MelodyConfig` with `MelodyConfig.preset("tiny" | "paper")`.
"""

from __future__ import annotations

import dataclasses
import importlib
import typing
from dataclasses import dataclass, fields
from typing import Any, ClassVar, TypeVar

PRESETS = ("tiny", "paper")

C = TypeVar("C", bound="BaseConfig")


class ConfigError(ValueError):
    """A config dict that does not describe a valid config (unknown/missing field, wrong type)."""


@dataclass
class BaseConfig:
    """Base for model configs: dict round-trip with validation, and presets."""

    # Former fields that are trainer options now (they steer a training run, not the model, so they
    # stay out of the model hash): a dict that still holds them (bundles and run folders written
    # before the move) loads, they are dropped, and `moved_to_trainer(data)` returns them.
    MOVED_TO_TRAINER: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.__name__}: expected an object, got {type(data).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names - set(cls.MOVED_TO_TRAINER))
        if unknown:
            raise ConfigError(f"{cls.__name__}: unknown field(s) {', '.join(unknown)}")
        hints = typing.get_type_hints(cls)
        kwargs: dict[str, Any] = {}
        for name, value in data.items():
            if name in names:
                kwargs[name] = _coerce(cls.__name__, name, hints.get(name), value)
        try:
            return cls(**kwargs)
        except TypeError as exc:  # missing required fields
            raise ConfigError(f"{cls.__name__}: {exc}") from None

    @classmethod
    def moved_to_trainer(cls, data: dict[str, Any]) -> dict[str, Any]:
        """The `MOVED_TO_TRAINER` entries of a config dict written before they moved."""
        return {k: data[k] for k in cls.MOVED_TO_TRAINER if k in data}

    @classmethod
    def preset(cls: type[C], name: str) -> C:
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r} (choose from {', '.join(PRESETS)})")
        return getattr(cls, name)()

    @classmethod
    def tiny(cls: type[C]) -> C:  # overridden by each model config
        return cls()

    @classmethod
    def paper(cls: type[C]) -> C:  # overridden by each model config
        return cls()


def _coerce(owner: str, name: str, hint: Any, value: Any) -> Any:
    """Light type check for JSON values: ints/floats/bools/strings/lists of them."""
    if hint is None:
        return value
    origin = typing.get_origin(hint)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{owner}.{name}: expected a list, got {type(value).__name__}")
        args = typing.get_args(hint)
        inner = args[0] if args else None
        items = [_coerce(owner, name, inner, v) if inner is not Ellipsis else v for v in value]
        return tuple(items) if origin is tuple else items
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{owner}.{name}: expected true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{owner}.{name}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{owner}.{name}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{owner}.{name}: expected a string, got {value!r}")
        return value
    return value


# component name -> (module, config class, model class). The bundle format and `melody info`
# use this table; models are imported lazily so configs stay cheap to read.
COMPONENTS: dict[str, tuple[str, str, str]] = {
    "vae": ("melody_core.models.vae_gan", "VAEConfig", "AudioVAE"),
    "dpd": ("melody_core.models.dpd", "DPDConfig", "DualPathDiffusion"),
    "unet1d": ("melody_core.models.unet1d", "UNet1DConfig", "UNet1D"),
    "ssl": ("melody_core.models.ssl_conformer", "SSLConfig", "Wav2Vec2Conformer"),
    "kmeans": ("melody_core.models.kmeans", "KMeansConfig", "KMeansTokenizer"),
    "lm": ("melody_core.models.semantic_lm", "LMConfig", "SemanticLM"),
    "mulan": ("melody_core.models.mulan", "MuLanConfig", "MuLan"),
}

# what `MelodyConfig` (and a default bundle) holds; unet1d is only for the ablation
PIPELINE_COMPONENTS = ("vae", "dpd", "ssl", "kmeans", "lm", "mulan")


def component_classes(name: str) -> tuple[type[BaseConfig], type]:
    """(config class, model class) of a registered component."""
    if name not in COMPONENTS:
        raise ConfigError(f"unknown component {name!r} (known: {', '.join(COMPONENTS)})")
    module_name, cfg_name, model_name = COMPONENTS[name]
    module = importlib.import_module(module_name)
    return getattr(module, cfg_name), getattr(module, model_name)


@dataclass
class MelodyConfig:
    """The configs of every pipeline component, keyed by component name."""

    components: dict[str, BaseConfig]
    preset_name: str = "custom"

    @classmethod
    def preset(cls, name: str) -> MelodyConfig:
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r} (choose from {', '.join(PRESETS)})")
        comps = {c: component_classes(c)[0].preset(name) for c in PIPELINE_COMPONENTS}
        config = cls(components=comps, preset_name=name)
        config.validate()
        return config

    def validate(self) -> None:
        """Cross-component contracts: shared vocabularies, dims and rates agree."""
        c = self.components
        checks: list[tuple[str, object, object]] = []
        if "kmeans" in c:
            v = c["kmeans"].n_clusters
            for name in ("dpd", "lm"):
                if name in c:
                    checks.append((f"{name}.vocab_size vs kmeans.n_clusters", c[name].vocab_size, v))
            if "ssl" in c:
                what, width = c["ssl"].token_features(c["kmeans"].layer)
                checks.append((f"kmeans.dim vs {what}", c["kmeans"].dim, width))
        if "lm" in c and "mulan" in c:
            checks.append(("lm.n_prefix vs mulan.rvq_codebooks", c["lm"].n_prefix, c["mulan"].rvq_codebooks))
            checks.append(
                ("lm.prefix_codebook_size vs mulan.rvq_codebook_size",
                 c["lm"].prefix_codebook_size, c["mulan"].rvq_codebook_size)
            )
        if "vae" in c and "dpd" in c:
            checks.append(("dpd.d_latent vs vae.latent_dim", c["dpd"].d_latent, c["vae"].latent_dim))
        bad = [f"{what}: {a} != {b}" for what, a, b in checks if a != b]
        if bad:
            raise ConfigError("inconsistent components: " + "; ".join(bad))

    def to_dict(self) -> dict[str, Any]:
        comps = {k: v.to_dict() for k, v in self.components.items()}
        return {"preset": self.preset_name, "components": comps}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MelodyConfig:
        comps = {k: component_classes(k)[0].from_dict(v) for k, v in data["components"].items()}
        return cls(components=comps, preset_name=data.get("preset", "custom"))
