"""Stages `dpd` and `unet1d`: v-prediction latent diffusion with multi-chunk training (§4.2).

Per example: a window of `train_length` latent frames (10 s = 2500) of a clip's cached VAE latents,
starting on the semantic-token grid, with its semantic tokens (frame 10 j .. 10 j + 9 <-> token j).
`multi_chunk_training_example(z0, M, grid=10)` draws one angle per chunk (Eq. 7-10, chunk bounds on
the token grid) and the loss is ||v_tgt - v_hat||^2 (Eq. 8). CFG (§5.1): each row is unconditional
with probability `cfg_dropout` (0.1): the network swaps its cross-attention for self-attention.

Latent scale *(our choice, LDM's "scale factor")*: z0 = latent_scale x VAE posterior mean, with
latent_scale = 1 / std of the training latents, estimated once at setup (at most SCALE_FRAMES
frames) so the diffusion sees unit-variance data. It is stored in the checkpoint, in run.json's
`export_meta`, and by `melody train export` in the bundle meta as `latent_scale`: the pipeline
must divide DPD outputs by it before VAE decoding. A run started with `--init-from` keeps the
scale of the weights it starts from (bundle meta / run), so continued training stays consistent.
Validation: conditional v-MSE on fixed crops with fixed noise and angles.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from melody_core import FRAMES_PER_TOKEN, LATENT_RATE
from melody_core.config import component_classes
from melody_core.diffusion import multi_chunk_training_example
from melody_core.train.cache import semantic_tokens, vae_latents
from melody_core.train.data import Item, batches, fixed_items
from melody_core.train.stage import (
    Hyper,
    LRSchedule,
    Stage,
    StageContext,
    TrainError,
    adamw,
    crop_units,
    optimize,
)
from melody_core.train.state import encoder_hash

SCALE_FRAMES = 250_000  # latent frames used to estimate latent_scale


class DPDStage(Stage):
    name = component = "dpd"
    needs = ("vae", "ssl", "kmeans")
    metrics = ("loss",)
    unit_seconds = 1.0 / LATENT_RATE
    # the in-house SRU's custom autograd Function mixes bf16 activations with fp32 gate weights
    # under autocast (RuntimeError in its recurrence): fp32 until sru.py casts its inputs
    amp = False

    def defaults(self, preset: str) -> Hyper:
        if preset == "paper":
            return Hyper(
                batch_size=16, crop_seconds=10.0, lr=1e-4, steps=400_000, warmup=5000, valid_every=2000
            )
        return Hyper(batch_size=4, crop_seconds=10.0, lr=3e-4, steps=3000, warmup=200, valid_every=250)

    def make_config(self, opts, hp, upstream, init):
        """`--size v2`: the CPU preset's second generation (`DPDConfig.tiny_v2`) as the base config."""
        if opts.stage_args.get("size", "v1") == "v2" and self.component == "dpd":
            if opts.preset != "tiny" or init is not None:
                raise TrainError("--size v2 is a tiny-preset architecture for a fresh run (no --init-from)")
            cfg_cls, _ = component_classes(self.component)
            v2 = cfg_cls.tiny_v2().to_dict()
            changed = {k: v for k, v in v2.items() if v != cfg_cls.tiny().to_dict()[k]}
            opts = dataclasses.replace(opts, overrides={**changed, **opts.overrides})
        return super().make_config(opts, hp, upstream, init)

    def derived_config(self, upstream, hp, opts) -> dict:
        fields = {f.name for f in dataclasses.fields(component_classes(self.component)[0])}
        out = {
            "vocab_size": upstream["kmeans"].config.n_clusters,
            "d_latent": upstream["vae"].config.latent_dim,
            "train_length": crop_units(hp.crop_seconds, self.unit_seconds, FRAMES_PER_TOKEN),
        }
        return {k: v for k, v in out.items() if k in fields}

    def setup(self, ctx: StageContext) -> None:
        cfg = ctx.config
        _, model_cls = component_classes(self.component)
        self.model = model_cls(cfg).to(ctx.device)
        self.init_weights(self.model)
        self.net = ctx.prepare(self.model, find_unused=True)  # all-unconditional batches skip E_ST
        self.opt = adamw([self.model], ctx.hp)
        self.schedules = {"model": LRSchedule(self.opt, ctx.hp.lr, ctx.hp.warmup, ctx.total_steps)}
        self.chunks = cfg.train_chunks
        self.p_uncond = cfg.cfg_dropout
        self.crop = crop_units(ctx.hp.crop_seconds, self.unit_seconds, FRAMES_PER_TOKEN)
        if self.crop // FRAMES_PER_TOKEN < self.chunks:
            raise TrainError(f"a {self.crop}-frame window cannot hold {self.chunks} token-aligned chunks")
        up, sets = ctx.upstream, [ctx.train, ctx.valid]
        self.latents, self.valid_latents = vae_latents(ctx.cache_dir, up["vae"], sets, ctx.dist, ctx.device)
        self.tokens, self.valid_tokens = semantic_tokens(
            ctx.cache_dir, up["ssl"], up["kmeans"], sets, ctx.dist, ctx.device
        )
        self.latent_scale = self._initial_scale(ctx)
        lengths = [min(len(z), FRAMES_PER_TOKEN * len(t)) for z, t in zip(self.latents, self.tokens)]
        self.sampler = self.make_sampler(lengths, self.crop, align=FRAMES_PER_TOKEN)
        valid_lengths = [
            min(len(z), FRAMES_PER_TOKEN * len(t)) for z, t in zip(self.valid_latents, self.valid_tokens)
        ]
        self.valid_items = fixed_items(
            valid_lengths,
            self.crop,
            ctx.hp.valid_batches * ctx.hp.batch_size,
            ctx.opts.seed,
            FRAMES_PER_TOKEN,
        )

    def _initial_scale(self, ctx: StageContext) -> float:
        """The init's scale when it was trained on this VAE's latents (same encoder hash), else
        re-estimated: a DPD fine-tuned onto a new VAE must not keep the old latents' scale."""
        self.vae_encoder = encoder_hash(ctx.upstream["vae"].model)
        init = ctx.init.meta if ctx.init is not None else {}
        # a run's export meta names the VAE encoder; a bundle's meta names it in the DPD's upstream
        trained_on = init.get("vae_encoder_hash") or (
            init.get("stages", {}).get("dpd", {}).get("upstream", {}).get("vae", {}).get("encoder_hash")
        )
        if "latent_scale" in init and trained_on == self.vae_encoder:
            return float(init["latent_scale"])
        if "latent_scale" in init and ctx.dist.rank == 0:
            print("dpd: the init was trained on another VAE's latents; latent scale re-estimated", flush=True)
        z = torch.cat(self.latents)[:SCALE_FRAMES]  # (N, D)
        std = float(z.std())
        if not std > 0:
            raise TrainError("the VAE latents of the corpus have zero variance; is the audio silent?")
        return 1.0 / std

    def modules(self) -> dict[str, nn.Module]:
        return {self.component: self.model}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"model": self.opt}

    def extra_state(self) -> dict:
        return {"latent_scale": self.latent_scale}

    def load_extra_state(self, state: dict) -> None:
        self.latent_scale = float(state["latent_scale"])

    def export_meta(self) -> dict:
        return {"latent_scale": self.latent_scale, "vae_encoder_hash": self.vae_encoder}

    def _batch(self, items: list[Item], latents: list[torch.Tensor], tokens: list[torch.Tensor]):
        n_tok = self.crop // FRAMES_PER_TOKEN
        z0 = torch.stack([latents[it.clip][it.offset : it.offset + self.crop] for it in items])  # (B, L, D)
        u = torch.stack(
            [tokens[it.clip][it.offset // FRAMES_PER_TOKEN :][:n_tok] for it in items]
        )  # (B, L/10)
        return (z0 * self.latent_scale).to(self.ctx.device), u.to(self.ctx.device)

    def train_step(self, step: int) -> dict[str, float]:
        ctx = self.ctx
        z0, tokens = self._batch(self.sampler.next(), self.latents, self.tokens)
        ex = multi_chunk_training_example(z0, self.chunks, grid=FRAMES_PER_TOKEN)  # Eq. 7-10
        uncond = torch.rand(z0.shape[0], device=ctx.device) < self.p_uncond  # CFG dropout (§5.1)
        with ctx.autocast():
            v = self.net(ex.z_noisy, ex.delta, tokens, uncond)
        loss = F.mse_loss(v.float(), ex.v_target)  # Eq. 8
        optimize(loss, self.opt, ctx.hp.grad_clip)
        return {"loss": float(loss.detach())}

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        if not self.valid_items:
            return {}
        self.model.eval()
        total, n = 0.0, 0
        try:
            for items in batches(self.valid_items, self.ctx.hp.batch_size):
                z0, tokens = self._batch(items, self.valid_latents, self.valid_tokens)
                ex = multi_chunk_training_example(z0, self.chunks, grid=FRAMES_PER_TOKEN)
                v = self.model(ex.z_noisy, ex.delta, tokens, None)
                total += float(F.mse_loss(v, ex.v_target)) * len(items)
                n += len(items)
        finally:
            self.model.train()
        return {"loss": total / n}


class UNet1DStage(DPDStage):
    """The 1-D U-Net ablation (Appendix E): same data, objective and CFG as DPD."""

    name = component = "unet1d"
    amp = True  # no SRU
