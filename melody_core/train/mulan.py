"""Stage `mulan`: MuLan's towers (contrastive, §3.1.1) and its RVQ on audio embeddings (§5.1).

Each example pairs a random crop of a clip with one of that clip's captions, drawn at random
(§5.1: "randomly paired each audio with either the generated caption or its respective tags");
clips without captions are skipped. Loss: `MuLan.forward`'s symmetric InfoNCE.

RVQ *(our choice)*: the EMA codebooks want large batches (rvq.py), so detached audio embeddings of
the last `BANK_FACTOR x codebook_size` examples (gathered over DDP ranks) are kept in a FIFO bank,
and every step runs one RVQ training pass over the whole bank once it holds a codebook's worth.
The bank is part of the checkpoint. Embeddings in the bank lag the tower by at most
bank / global batch steps; the EMA (decay 0.99) tracks the drift.
Under DDP, negatives are the per-rank batch (no all-gather of embeddings).
Validation: loss with each clip's first caption, text->audio top-1 retrieval accuracy within the
batch, and the RVQ's relative quantisation error on the audio embeddings.
"""

from __future__ import annotations

import torch
from torch import nn

from melody_core import SAMPLE_RATE
from melody_core.models.mulan import MuLan, MuLanConfig
from melody_core.train.data import AudioStore, ClipSet, batches, fixed_items
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

BANK_FACTOR = 4  # RVQ bank rows = BANK_FACTOR x rvq_codebook_size


def _with_captions(clips: ClipSet) -> list[int]:
    return [i for i, r in enumerate(clips.records) if r.captions]


class MuLanStage(Stage):
    name = component = "mulan"
    metrics = ("loss", "rvq_commit", "rvq_rel_err", "temperature", "retrieval")
    valid_key = "loss"

    def defaults(self, preset: str) -> Hyper:
        if preset == "paper":
            return Hyper(
                batch_size=64, crop_seconds=10.0, lr=1e-4, steps=200_000, warmup=5000, valid_every=2000
            )
        return Hyper(batch_size=16, crop_seconds=10.0, lr=3e-4, steps=2000, warmup=200, valid_every=250)

    def setup(self, ctx: StageContext) -> None:
        cfg: MuLanConfig = ctx.config  # type: ignore[assignment]
        self.cfg = cfg
        self.model = MuLan(cfg).to(ctx.device)
        self.init_weights(self.model)
        self.model.load_pretrained_text_tower()  # frozen MiniLM from its package (no-op for "hash")
        self.net = ctx.prepare(self.model)
        self.opt = adamw([self.model], ctx.hp)
        self.schedules = {"model": LRSchedule(self.opt, ctx.hp.lr, ctx.hp.warmup, ctx.total_steps)}
        self.crop = crop_units(min(ctx.hp.crop_seconds, cfg.clip_seconds), 1 / SAMPLE_RATE)
        self.train_idx = _with_captions(ctx.train)
        if not self.train_idx:
            raise TrainError("mulan needs captions (captions.jsonl or <clip>.txt sidecars)")
        keep = set(self.train_idx)
        lengths = [n if i in keep else 0 for i, n in enumerate(ctx.train.lengths)]
        self.sampler = self.make_sampler(lengths, self.crop)
        self.audio, self.valid_audio = AudioStore(ctx.train), AudioStore(ctx.valid)
        valid_lengths = [n if ctx.valid.records[i].captions else 0 for i, n in enumerate(ctx.valid.lengths)]
        self.valid_items = fixed_items(
            valid_lengths, self.crop, ctx.hp.valid_batches * ctx.hp.batch_size, ctx.opts.seed
        )
        self.bank = torch.zeros(BANK_FACTOR * cfg.rvq_codebook_size, cfg.embed_dim, device=ctx.device)
        self.bank_fill, self.bank_pos = 0, 0

    def modules(self) -> dict[str, nn.Module]:
        return {"mulan": self.model}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"model": self.opt}

    def extra_state(self) -> dict:
        return {"bank": self.bank, "bank_fill": self.bank_fill, "bank_pos": self.bank_pos}

    def load_extra_state(self, state: dict) -> None:
        self.bank.copy_(state["bank"])
        self.bank_fill, self.bank_pos = int(state["bank_fill"]), int(state["bank_pos"])

    def _push(self, emb: torch.Tensor) -> None:
        for row in emb:  # FIFO ring buffer
            self.bank[self.bank_pos] = row
            self.bank_pos = (self.bank_pos + 1) % len(self.bank)
        self.bank_fill = min(len(self.bank), self.bank_fill + len(emb))

    def train_step(self, step: int) -> dict[str, float]:
        ctx = self.ctx
        items = self.sampler.next()
        wav = self.audio.batch(items, self.crop).to(ctx.device)  # (B, T)
        caps = [ctx.train.records[it.clip].captions for it in items]
        texts = [c[min(int(it.u * len(c)), len(c) - 1)] for c, it in zip(caps, items)]
        with ctx.autocast():
            out = self.net(texts, wav)
        optimize(out.loss, self.opt, ctx.hp.grad_clip)
        values = {
            "loss": float(out.loss.detach()),
            "temperature": float(1.0 / self.model.logit_scale.detach().exp()),
        }
        self._push(ctx.dist.all_gather(out.audio_emb.detach().float()))
        if self.bank_fill >= min(len(self.bank), self.cfg.rvq_codebook_size):
            self.model.rvq.train()
            bank = self.bank[: self.bank_fill]
            rvq = self.model.rvq(bank)
            values["rvq_commit"] = float(rvq.commit_loss)
            values["rvq_rel_err"] = float((rvq.quantized - bank).norm(dim=-1).mean())
        return values

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        ctx = self.ctx
        if not self.valid_items:
            return {}
        self.model.eval()
        sums = {"loss": 0.0, "retrieval": 0.0, "rvq_rel_err": 0.0}
        n = 0
        try:
            for items in batches(self.valid_items, ctx.hp.batch_size):
                wav = self.valid_audio.batch(items, self.crop).to(ctx.device)
                texts = [ctx.valid.records[it.clip].captions[0] for it in items]
                out = self.model(texts, wav)
                sims = out.text_emb @ out.audio_emb.t()  # (B, B)
                hit = (texts[j] == texts[int(sims[j].argmax())] for j in range(len(items)))
                rvq = self.model.rvq(out.audio_emb)
                sums["loss"] += float(out.loss) * len(items)
                sums["retrieval"] += float(sum(hit))
                sums["rvq_rel_err"] += float((rvq.quantized - out.audio_emb).norm(dim=-1).sum())
                n += len(items)
        finally:
            self.model.train()
        return {k: v / n for k, v in sums.items()}
