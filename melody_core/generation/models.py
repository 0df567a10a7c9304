"""The loaded model set of a bundle, typed: the networks generation runs, the window layout, the
latent scale, and how the DPD and MuLan are called (precision, threads). Jobs and the engine get a
`ModelSet`; nothing below the façade refers back to `MelodyPipeline`.

Latent scale: the DPD works on `latent_scale` × VAE latents (`melody_core.train.dpd`), read from the
bundle meta `latent_scale` (written by `melody train export`), default 1.0.

Precision *(our choice)*: fp32 by default; on CUDA "tf32" (TensorFloat-32 matmuls) or "bf16"/"fp16"
autocast for the DPD only — the VAE decoder stays fp32 (streamed = full decode to 1e-4 needs it).
bf16 is not the default because the SRU's CPU path is not autocast-safe (measure it with
packaging/gpu_bench.sh first). `compile=True` wraps the DPD in `torch.compile`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from melody_core import FRAMES_PER_TOKEN, SAMPLE_RATE
from melody_core.checkpoint import Bundle
from melody_core.generation.plan import Layout
from melody_core.generation.types import PipelineError
from melody_core.generation.validation import EMPTY_PROMPT, check, finite
from melody_core.models.controls import Controls, prompt_with_controls, resolve_controls
from melody_core.models.dpd import DualPathDiffusion
from melody_core.models.kmeans import KMeansTokenizer
from melody_core.models.mulan import MuLan
from melody_core.models.semantic_lm import SemanticLM
from melody_core.models.ssl_conformer import Wav2Vec2Conformer
from melody_core.models.vae_gan import AudioVAE

# DPD precision: autocast dtype (None = fp32 weights and activations); "tf32" = fp32 with TensorFloat-32
# matmuls/convolutions (CUDA only; sets the process-wide torch.backends flags)
PRECISIONS = {"fp32": None, "tf32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class ModelSet:
    """The networks of one loaded bundle and how generation calls them."""

    vae: AudioVAE  # latents <-> 24 kHz PCM
    dpd: DualPathDiffusion  # the diffusion network (Fig. 2)
    lm: SemanticLM  # semantic tokens from MuLan prefix tokens
    mulan: MuLan  # text / audio conditioning -> RVQ prefix tokens
    ssl: Wav2Vec2Conformer | None  # semantic features of given audio (continue / inpaint)
    kmeans: KMeansTokenizer | None  # features -> semantic tokens (continue / inpaint)
    device: torch.device  # where every network lives
    layout: Layout  # DPD window geometry (DPDConfig.train_length / train_chunks)
    latent_scale: float  # DPD latents = latent_scale × VAE latents
    lm_threads: int | None  # torch threads while sampling LM tokens (None: unchanged)
    precision: str = "fp32"  # key of PRECISIONS
    dpd_net: Any = None  # the DPD as called (torch.compile wrapper or the module itself)

    def __post_init__(self) -> None:
        check(self.precision in PRECISIONS, f"precision must be one of auto, {', '.join(PRECISIONS)}")
        check(finite(self.latent_scale) and self.latent_scale > 0,
              f"bundle latent_scale must be a positive number, got {self.latent_scale!r}")
        if self.dpd_net is None:
            self.dpd_net = self.dpd

    @classmethod
    def from_bundle(cls, bundle: Bundle, lm_threads: int | None, precision: str = "auto",
                    compile: bool = False) -> ModelSet:
        """A `checkpoint.Bundle` -> ModelSet (raises PipelineError for an unusable bundle)."""
        m = bundle.models
        cfg = m["dpd"].config
        try:
            layout = Layout(cfg.train_length, cfg.train_chunks)
        except ValueError as exc:
            raise PipelineError(f"DPD window of this bundle is unusable: {exc}") from None
        precision = "fp32" if precision == "auto" else precision
        scale = bundle.meta.get("latent_scale", 1.0)
        check(finite(scale), f"bundle latent_scale must be a positive number, got {scale!r}")
        models = cls(m["vae"], m["dpd"], m["lm"], m["mulan"], m.get("ssl"), m.get("kmeans"), bundle.device,
                     layout, float(scale), lm_threads, precision)
        if precision == "tf32" and models.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        if compile:
            models.dpd_net = torch.compile(models.dpd)
        return models

    @property
    def context_tokens(self) -> int:
        """Tokens of source audio analysed before (and after) a continue / inpaint point."""
        return max(self.lm.config.window, (self.layout.length - self.layout.hop) // FRAMES_PER_TOKEN) + 1

    @property
    def mulan_clip_samples(self) -> int:
        return round(self.mulan.config.clip_seconds * SAMPLE_RATE)

    # ------------------------------------------------------------------ DPD
    def dpd_forward(self, z: Tensor, delta: Tensor, tokens: Tensor | None, uncond: Tensor | None,
                    context: Any = None, **guidance: float) -> Tensor:
        """The DPD network contract (diffusion.DPDNetwork), under autocast when precision asks;
        `context` from `dpd_prepare` replaces tokens / uncond (DualPathDiffusion.prepare); `guidance`:
        rho of a guidance-distilled DPD (part of the context when there is one)."""
        kw = dict(guidance) if context is None else {"context": context}
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return self.dpd_net(z, delta, tokens, uncond, **kw)
        with torch.autocast(self.device.type, dtype=dtype):
            return self.dpd_net(z, delta, tokens, uncond, **kw).float()

    def dpd_prepare(self, tokens: Tensor | None, uncond: Tensor | None, rows: int, length: int,
                    shared_input: bool = False, **guidance: float) -> Any:
        """Per-window DPD context (`DualPathDiffusion.prepare`), or None where the network has none
        or is compiled (then `dpd_forward` takes tokens / uncond)."""
        prepare = getattr(self.dpd, "prepare", None)
        if prepare is None or self.dpd_net is not self.dpd:
            return None
        dtype = PRECISIONS[self.precision]
        with torch.inference_mode():
            if dtype is None:
                return prepare(tokens, uncond, rows, length, shared_input, **guidance)
            with torch.autocast(self.device.type, dtype=dtype):  # as the forward will run
                return prepare(tokens, uncond, rows, length, shared_input, **guidance)

    # ------------------------------------------------------------------ MuLan conditioning
    def controls(self, prompt: str | None, bpm: float | None = None,
                 key: str | None = None) -> Controls | None:
        """The BPM / key the LM is given (explicit settings over the prompt's words); None when the
        LM has no controls (semantic_lm: explicit controls)."""
        if not self.lm.config.n_controls:
            return None
        return resolve_controls(prompt, bpm, key)

    def condition(self, prompt: str | None, style: Tensor | None, style_weight: float,
                  bpm: float | None = None, key: str | None = None) -> Tensor:
        """MuLan text and/or audio embedding, blended ((1 − w) text + w audio) -> RVQ -> (1, 12) tokens,
        then the LM's control tokens, (1, n_cond). Explicit `bpm` / `key` override the prompt's; an
        LM without controls gets them as prompt text (`prompt_with_controls`), as the app did."""
        ctl = self.controls(prompt, bpm, key)
        if ctl is None and (bpm is not None or key):
            prompt = prompt_with_controls(prompt, bpm, key)
        text = (prompt or "").strip() or None
        check(text is not None or style is not None, EMPTY_PROMPT)
        with torch.inference_mode():
            t = self.mulan.embed_text([text]) if text is not None else None
            a = None if style is None else self.mulan.embed_audio(style.to(self.device).unsqueeze(0))
            prefix = self.mulan.conditioning_tokens(self.mulan.blend(t, a, style_weight))  # (1, n_prefix)
            if ctl is None:
                return prefix
            tokens = self.lm.config.control_tokens(ctl.bpm, ctl.key)
            return torch.cat([prefix, prefix.new_tensor([tokens])], dim=1)  # (1, n_cond)
