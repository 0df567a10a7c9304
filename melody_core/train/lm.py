"""Stage `lm`: the semantic LM (Eq. 1) on cached semantic tokens with a MuLan RVQ prefix.

Audio-only training (§3.1.1): the prefix of a crop is the RVQ codes of the MuLan *audio* embedding
of the 10 s window of the clip nearest the crop's centre; at inference a text embedding goes
through the same RVQ. Tokens (SSL + k-means) and codes (MuLan) come from caches built once from
the upstream models (`cache.py`). Crops: `max_len` tokens (250 = 10 s), any token offset.
Validation: cross-entropy and next-token accuracy on fixed held-out crops.

Prefix mix (our choice, `LMConfig.text_prefix_prob` / `prefix_dropout`; the paper trains on audio
codes only): each crop's uniform `u` picks its prefix — u < prefix_dropout: the null prefix (LM
guidance at inference); then a share text_prefix_prob: the RVQ codes of one of the clip's texts
through MuLan's text tower (which one: the rest of u) — its captions and the short prompts of its
attributes ("solo piano", "string quartet, chorale": `captions.short_prompts`; a two-word prompt's
RVQ codes differ from those of a long caption of the same clip: none of 200 piano captions shares
"solo piano"'s first code); otherwise the audio window's codes. Why:
with the tiny MuLan, generation from an audio-embedding prefix (style prompt) told "solo piano"
from "string quartet" in 17 of 24 clips, from the text prompts in 12 of 24 (chance): the text
codes sit off the audio-trained distribution. Validation also reports `loss_text` (first text's
codes) and `loss_null` (null prefix): loss_null - loss is what the prefix tells the LM.
"""

from __future__ import annotations

import torch
from torch import nn

from melody_core import SEMANTIC_RATE
from melody_core.models.semantic_lm import NULL_PREFIX, LMConfig, SemanticLM
from melody_core.train.cache import caption_codes, mulan_codes, semantic_tokens, window_index
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
    metrics = ("loss", "accuracy", "loss_text", "loss_null")
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
        self.p_null, self.p_text = cfg.prefix_dropout, cfg.text_prefix_prob
        mulan = up["mulan"].model.to(ctx.device)
        self.captions, self.valid_captions = (caption_codes(mulan, c, ctx.device) for c in sets)
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

    def _audio_prefix(self, it: Item, codes: list[torch.Tensor]) -> torch.Tensor:
        centre = (it.offset + self.crop / 2) / SEMANTIC_RATE
        return codes[it.clip][window_index(centre, self.window_s, len(codes[it.clip]))]  # (n_prefix,)

    def _prefix(self, it: Item, codes: list[torch.Tensor], captions: list[torch.Tensor]) -> torch.Tensor:
        """The crop's prefix as chosen by its `u` (module docstring)."""
        audio = self._audio_prefix(it, codes)
        if it.u < self.p_null:
            return torch.full_like(audio, NULL_PREFIX)
        caps = captions[it.clip]  # (n_captions, n_prefix)
        v = (it.u - self.p_null) / self.p_text if self.p_text > 0 else 1.0
        if v < 1.0 and len(caps):
            return caps[min(len(caps) - 1, int(v * len(caps)))]
        return audio

    def _batch(self, items: list[Item], tokens: list[torch.Tensor], prefixes: list[torch.Tensor]):
        toks = torch.stack([tokens[it.clip][it.offset : it.offset + self.crop] for it in items])  # (B, T)
        prefix = torch.stack(prefixes)  # (B, n_prefix)
        return prefix.to(self.ctx.device), toks.to(self.ctx.device)

    def train_step(self, step: int) -> dict[str, float]:
        items = self.sampler.next()
        prefixes = [self._prefix(it, self.codes, self.captions) for it in items]
        prefix, toks = self._batch(items, self.tokens, prefixes)
        with self.ctx.autocast():
            loss = self.net(prefix, toks)
        optimize(loss, self.opt, self.ctx.hp.grad_clip)
        return {"loss": float(loss.detach())}

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        if not self.valid_items:
            return {}
        self.model.eval()
        totals = dict.fromkeys(self.metrics, 0.0)
        n = 0
        ce = nn.functional.cross_entropy
        try:
            for items in batches(self.valid_items, self.ctx.hp.batch_size):
                audio = [self._audio_prefix(it, self.valid_codes) for it in items]
                caps = [self.valid_captions[it.clip] for it in items]
                text = [c[0] if len(c) else a for c, a in zip(caps, audio)]  # first caption (clip_texts)
                null = [torch.full_like(a, NULL_PREFIX) for a in audio]
                for key, prefixes in (("loss", audio), ("loss_text", text), ("loss_null", null)):
                    prefix, toks = self._batch(items, self.valid_tokens, prefixes)
                    logits = self.model(prefix, toks)  # (B, T, V)
                    totals[key] += float(ce(logits.flatten(0, 1), toks.flatten())) * len(items)
                    if key == "loss":
                        totals["accuracy"] += float((logits.argmax(-1) == toks).float().mean()) * len(items)
                n += len(items)
        finally:
            self.model.train()
        return {k: v / n for k, v in totals.items()}
