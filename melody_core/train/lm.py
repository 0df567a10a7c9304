"""Stage `lm`: the semantic LM (Eq. 1) on cached semantic tokens with a MuLan RVQ prefix.

Audio-only training (§3.1.1): the prefix of a crop is the RVQ codes of the MuLan *audio* embedding
of the 10 s window of the clip nearest the crop's centre; at inference a text embedding goes
through the same RVQ. Tokens (SSL + k-means) and codes (MuLan) come from caches built once from
the upstream models (`cache.py`). Crops: `max_len` tokens (250 = 10 s), any token offset.
Validation: cross-entropy and next-token accuracy on fixed held-out crops.
"""

from __future__ import annotations

import torch
from torch import nn

from melody_core import SEMANTIC_RATE
from melody_core.models.semantic_lm import LMConfig, SemanticLM
from melody_core.train.cache import mulan_codes, semantic_tokens, window_index
from melody_core.train.data import Item, batches, fixed_items
from melody_core.train.stage import Hyper, LRSchedule, Stage, StageContext, adamw, crop_units, optimize

LLAMA_BETAS = (0.9, 0.95)


class _LMObjective(nn.Module):
    """DDP's forward = the LM's mean cross-entropy."""

    def __init__(self, model: SemanticLM) -> None:
        super().__init__()
        self.model = model

    def forward(self, prefix: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.loss(prefix, tokens)


class LMStage(Stage):
    name = component = "lm"
    needs = ("ssl", "kmeans", "mulan")
    metrics = ("loss", "accuracy")
    unit_seconds = 1.0 / SEMANTIC_RATE

    def defaults(self, preset: str) -> Hyper:
        if preset == "paper":
            return Hyper(
                batch_size=32,
                crop_seconds=10.0,
                lr=3e-4,
                steps=400_000,
                warmup=4000,
                weight_decay=0.1,
                betas=LLAMA_BETAS,
                valid_every=2000,
            )
        return Hyper(
            batch_size=16,
            crop_seconds=10.0,
            lr=6e-4,
            steps=3000,
            warmup=200,
            weight_decay=0.1,
            betas=LLAMA_BETAS,
            valid_every=250,
        )

    def derived_config(self, upstream, hp, opts) -> dict:
        mulan = upstream["mulan"].config
        max_len = crop_units(hp.crop_seconds, self.unit_seconds)
        out = {
            "vocab_size": upstream["kmeans"].config.n_clusters,
            "n_prefix": mulan.rvq_codebooks,
            "prefix_codebook_size": mulan.rvq_codebook_size,
            "max_len": max_len,
        }
        if "window_keep" not in opts.overrides:
            out["window_keep"] = max(1, max_len // 2)
        return out

    def setup(self, ctx: StageContext) -> None:
        cfg: LMConfig = ctx.config  # type: ignore[assignment]
        self.model = SemanticLM(cfg).to(ctx.device)
        self.init_weights(self.model)
        self.net = ctx.prepare(_LMObjective(self.model))
        self.opt = adamw([self.model], ctx.hp)
        self.schedules = {"model": LRSchedule(self.opt, ctx.hp.lr, ctx.hp.warmup, ctx.total_steps)}
        up, sets = ctx.upstream, [ctx.train, ctx.valid]
        (self.tokens, self.valid_tokens) = semantic_tokens(
            ctx.cache_dir, up["ssl"], up["kmeans"], sets, ctx.dist, ctx.device
        )
        (self.codes, self.valid_codes) = mulan_codes(ctx.cache_dir, up["mulan"], sets, ctx.dist, ctx.device)
        self.window_s = up["mulan"].config.clip_seconds
        self.crop = cfg.max_len
        self.sampler = self.make_sampler([len(t) for t in self.tokens], self.crop)
        self.valid_items = fixed_items(
            [len(t) for t in self.valid_tokens],
            self.crop,
            ctx.hp.valid_batches * ctx.hp.batch_size,
            ctx.opts.seed,
        )

    def modules(self) -> dict[str, nn.Module]:
        return {"lm": self.model}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"model": self.opt}

    def _batch(self, items: list[Item], tokens: list[torch.Tensor], codes: list[torch.Tensor]):
        toks = torch.stack([tokens[it.clip][it.offset : it.offset + self.crop] for it in items])  # (B, T)
        centre = [(it.offset + self.crop / 2) / SEMANTIC_RATE for it in items]
        prefix = torch.stack(
            [
                codes[it.clip][window_index(c, self.window_s, len(codes[it.clip]))]
                for it, c in zip(items, centre)
            ]
        )  # (B, n_prefix)
        return prefix.to(self.ctx.device), toks.to(self.ctx.device)

    def train_step(self, step: int) -> dict[str, float]:
        prefix, toks = self._batch(self.sampler.next(), self.tokens, self.codes)
        with self.ctx.autocast():
            loss = self.net(prefix, toks)
        optimize(loss, self.opt, self.ctx.hp.grad_clip)
        return {"loss": float(loss.detach())}

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        if not self.valid_items:
            return {}
        self.model.eval()
        loss = acc = 0.0
        n = 0
        try:
            for items in batches(self.valid_items, self.ctx.hp.batch_size):
                prefix, toks = self._batch(items, self.valid_tokens, self.valid_codes)
                logits = self.model(prefix, toks)  # (B, T, V)
                loss += float(nn.functional.cross_entropy(logits.flatten(0, 1), toks.flatten())) * len(items)
                acc += float((logits.argmax(-1) == toks).float().mean()) * len(items)
                n += len(items)
        finally:
            self.model.train()
        return {"loss": loss / n, "accuracy": acc / n}
