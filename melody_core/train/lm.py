"""Stage `lm`: the semantic LM (Eq. 1) on cached semantic tokens with a MuLan RVQ prefix.

Audio-only training (§3.1.1): the prefix of a crop is the RVQ codes of the MuLan *audio* embedding
of the 10 s window of the clip nearest the crop's centre; at inference a text embedding goes
through the same RVQ. Tokens (SSL + k-means) and codes (MuLan) come from caches built once from
the upstream models (`cache.py`). Crops: `max_len` tokens (250 = 10 s), any token offset.
Validation: cross-entropy and next-token accuracy on fixed held-out crops.

Prefix mix (our choice, `LMTraining.text_prefix_prob` / `LMConfig.prefix_dropout`; the paper trains on audio
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

Explicit controls (issue 16, `LMConfig.bpm_buckets` / `key_tokens`; off by default): each clip's
labels come from its corpus attributes (`bpm`, `key` of `melody data build`'s captions.jsonl,
`models.controls.clip_controls`), null where a clip has none (user folders). A crop whose prefix is
the null prefix gets null controls too (the guidance row is the all-null condition); otherwise
each control is replaced by null with probability `LMTraining.control_dropout`, independently, drawn from a
generator seeded by (run seed, step, rank), so a resumed run draws the same. With controls on,
validation also reports `loss_nullctl` (audio prefix, null controls): loss_nullctl - loss is
what the controls tell the LM beyond the audio prefix.

Adding controls to a trained LM: `melody train lm --init-from RUN_OR_BUNDLE --set bpm_buckets=40
--set key_tokens=24 --control-dropout 0.2 ...` (the config is the init's with the overrides):
`init_weights` loads every weight of the old LM and keeps the fresh N(0, 0.02) init of the
control tables, which the old LM has not; any other mismatch is an error.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from melody_core import SEMANTIC_RATE
from melody_core.config import BaseConfig, ConfigError
from melody_core.models.controls import clip_controls
from melody_core.models.semantic_lm import NULL_CONTROL, NULL_PREFIX, LMConfig, SemanticLM
from melody_core.train.cache import caption_codes, mulan_codes, semantic_tokens, window_index
from melody_core.train.data import Item, batches, fixed_items
from melody_core.train.stage import Hyper, LRSchedule, Stage, StageContext, adamw, crop_units, optimize
from melody_core.train.upstream import TrainError

LLAMA_BETAS = (0.9, 0.95)


class _LMObjective(nn.Module):
    """DDP's forward = the LM's mean cross-entropy."""

    def __init__(self, model: SemanticLM) -> None:
        super().__init__()
        self.model = model

    def forward(self, prefix: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.loss(prefix, tokens)


@dataclass
class LMTraining(BaseConfig):
    """How an LM run trains (flags of `melody train lm`); not part of the model."""

    text_prefix_prob: float = 0.0  # share of crops whose prefix is a caption's text codes (module doc)
    control_dropout: float = 0.0  # probability each BPM/key control of a crop is replaced by null

    def __post_init__(self) -> None:
        if not 0.0 <= self.text_prefix_prob <= 1.0:
            raise ConfigError(f"LMTraining: text_prefix_prob must be in [0, 1], got {self.text_prefix_prob}")
        if not 0.0 <= self.control_dropout <= 1.0:
            raise ConfigError(f"LMTraining: control_dropout must be in [0, 1], got {self.control_dropout}")

    @classmethod
    def tiny(cls) -> LMTraining:
        return cls(text_prefix_prob=0.4)


class LMStage(Stage):
    name = component = "lm"
    training_options = LMTraining
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
        if cfg.n_controls:
            self.metrics = (*type(self).metrics, "loss_nullctl")
        self.net = ctx.prepare(_LMObjective(self.model))
        self.opt = adamw([self.model], ctx.hp)
        self.schedules = {"model": LRSchedule(self.opt, ctx.hp.lr, ctx.hp.warmup, ctx.total_steps)}
        up, sets = ctx.upstream, [ctx.train, ctx.valid]
        (self.tokens, self.valid_tokens) = semantic_tokens(
            ctx.cache_dir, up["ssl"], up["kmeans"], sets, ctx.dist, ctx.device
        )
        (self.codes, self.valid_codes) = mulan_codes(ctx.cache_dir, up["mulan"], sets, ctx.dist, ctx.device)
        self.window_s = up["mulan"].config.clip_seconds
        self.p_null, self.p_text = cfg.prefix_dropout, ctx.training.text_prefix_prob
        if self.p_null + self.p_text > 1.0:
            raise TrainError(f"prefix_dropout ({self.p_null}) + --text-prefix-prob ({self.p_text}) "
                             "must be <= 1")
        mulan = up["mulan"].model.to(ctx.device)
        self.captions, self.valid_captions = (caption_codes(mulan, c, ctx.device) for c in sets)
        self.crop = cfg.max_len
        # (n_clips, n_controls) control tokens of each split's clips
        self.labels, self.valid_labels = (self._clip_labels(cfg, c.records) for c in sets)
        self.sampler = self.make_sampler([len(t) for t in self.tokens], self.crop)
        self.valid_items = fixed_items(
            [len(t) for t in self.valid_tokens],
            self.crop,
            ctx.hp.valid_batches * ctx.hp.batch_size,
            ctx.opts.seed,
        )

    def modules(self) -> dict[str, nn.Module]:
        return {"lm": self.model}

    def init_weights(self, model: nn.Module) -> None:
        """--init-from: every weight of the init LM; control tables and beat-echo projections it lacks
        keep their fresh init."""
        ctx = self.ctx
        if ctx is None or ctx.init is None:
            return
        fresh = {"bpm_embed.weight", "key_embed.weight", "echo_proj"}
        try:
            missing, unexpected = model.load_state_dict(ctx.init.model.state_dict(), strict=False)
        except RuntimeError as exc:  # a shape mismatch (e.g. another bucket count)
            first = str(exc).strip().splitlines()[-1].strip()
            raise TrainError(f"--init-from: the LM's weights do not match this config ({first})") from None
        bad = [k for k in missing if k not in fresh] + list(unexpected)
        if bad:
            raise TrainError(f"--init-from: the LM's weights do not match this config ({', '.join(bad[:4])})")

    @staticmethod
    def _clip_labels(cfg: LMConfig, records) -> torch.Tensor:
        """(n_clips, n_controls) control tokens of each clip (null where it has no label)."""
        rows = []
        for rec in records:
            c = clip_controls(rec.attributes)
            rows.append(cfg.control_tokens(c.bpm, c.key))
        return torch.tensor(rows, dtype=torch.long).view(len(records), cfg.n_controls)

    def _controls(self, items: list[Item], labels: torch.Tensor, prefixes: list[torch.Tensor],
                  step: int | None) -> list[torch.Tensor]:
        """Prefix + control columns per crop (module docstring); `step` None: no dropout."""
        cfg: LMConfig = self.ctx.config  # type: ignore[assignment]
        if not cfg.n_controls:
            return prefixes
        ctl = labels[[it.clip for it in items]].clone()  # (B, n_controls)
        p_drop = self.ctx.training.control_dropout
        if step is not None and p_drop > 0:
            seed = (self.ctx.opts.seed * 1_000_003 + step) * 64 + self.ctx.dist.rank
            drop = torch.rand(ctl.shape, generator=torch.Generator().manual_seed(seed)) < p_drop
            ctl[drop] = NULL_CONTROL
        out = []
        for p, c in zip(prefixes, ctl):
            out.append(torch.cat([p, torch.full_like(c, NULL_CONTROL) if bool((p < 0).all()) else c.to(p)]))
        return out  # (n_cond,) each

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
        prefixes = self._controls(items, self.labels, prefixes, step)
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
                runs = [("loss", audio), ("loss_text", text), ("loss_null", null)]
                if self.model.config.n_controls:  # true labels, and the audio prefix without them
                    runs = [(k, self._controls(items, self.valid_labels, p, None)) for k, p in runs]
                    runs.append(("loss_nullctl", audio))
                for key, prefixes in runs:
                    prefix, toks = self._batch(items, self.valid_tokens, prefixes)
                    logits = self.model(prefix, toks)  # (B, T, V)
                    totals[key] += float(ce(logits.flatten(0, 1), toks.flatten())) * len(items)
                    if key == "loss":
                        totals["accuracy"] += float((logits.argmax(-1) == toks).float().mean()) * len(items)
                n += len(items)
        finally:
            self.model.train()
        return {k: v / n for k, v in totals.items()}
