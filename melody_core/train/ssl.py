"""Stage `ssl`: the Wav2Vec2-Conformer whose layer features become the semantic tokens (§4, §5.1).

`--objective wav2vec2` (the paper's): contrastive loss over masked frames + diversity loss, with
the Gumbel temperature annealed per step (`SSLConfig.gumbel_temperature`).
`--objective hubert`: a HuBERT-style first iteration for small budgets — masked prediction of
k-means ids (`SSLConfig.hubert_classes` clusters) of `hubert_frame_features`. The k-means is fit
once at setup on frames of the training clips and stored in the checkpoint (resumes never refit).

*(our choice)*: crops start on the 960-sample frame grid so targets line up with the clip's frames;
heads of the other objective are frozen (no DDP "unused parameter" work). Validation: loss and
masked-frame accuracy with a fixed mask/negatives seed.
"""

from __future__ import annotations

import torch
from torch import nn

from melody_core import SAMPLE_RATE
from melody_core.models.kmeans import KMeansConfig, KMeansTokenizer
from melody_core.models.ssl_conformer import HOP, SSLConfig, Wav2Vec2Conformer, hubert_frame_features
from melody_core.train.data import AudioStore, batches, fixed_items
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

OBJECTIVES = ("wav2vec2", "hubert")
HUBERT_MELS = 64  # hubert_frame_features default: 2 x 64 dims (log-mel + delta)
HUBERT_FIT_FRAMES = 100_000  # frames used to fit the first-iteration k-means
HUBERT_FIT_SECONDS = 60.0  # at most this much of each clip goes into the fit
HUBERT_KMEANS_ITERS = 30


class _HubertObjective(nn.Module):
    """Routes DDP's forward to `forward_hubert`."""

    def __init__(self, model: Wav2Vec2Conformer) -> None:
        super().__init__()
        self.model = model

    def forward(self, wav: torch.Tensor, targets: torch.Tensor):
        return self.model.forward_hubert(wav, targets)


class SSLStage(Stage):
    name = component = "ssl"
    metrics = ("loss", "contrastive", "diversity", "code_ppl", "accuracy", "temperature")
    valid_key = "loss"

    def defaults(self, preset: str) -> Hyper:
        if preset == "paper":
            return Hyper(
                batch_size=32,
                crop_seconds=10.0,
                lr=3e-4,
                steps=400_000,
                warmup=32_000,
                grad_clip=10.0,
                valid_every=2000,
            )
        return Hyper(
            batch_size=8, crop_seconds=4.0, lr=5e-4, steps=3000, warmup=300, grad_clip=10.0, valid_every=250
        )

    def setup(self, ctx: StageContext) -> None:
        if ctx.opts.objective not in OBJECTIVES:
            raise TrainError(f"--objective must be one of {OBJECTIVES}")
        self.cfg: SSLConfig = ctx.config  # type: ignore[assignment]
        self.hubert = ctx.opts.objective == "hubert"
        self.model = Wav2Vec2Conformer(self.cfg).to(ctx.device)
        self.init_weights(self.model)
        unused = (
            [self.model.hubert_head]
            if not self.hubert
            else [self.model.quantizer, self.model.project_q, self.model.final_proj]
        )
        for m in unused:
            m.requires_grad_(False)
        self.net = ctx.prepare(_HubertObjective(self.model) if self.hubert else self.model)
        self.opt = adamw([self.model], ctx.hp)
        self.schedules = {"model": LRSchedule(self.opt, ctx.hp.lr, ctx.hp.warmup, ctx.total_steps)}
        self.crop = crop_units(ctx.hp.crop_seconds, 1 / SAMPLE_RATE, HOP)
        if self.crop < 2 * HOP:
            raise TrainError("ssl needs crops of at least 2 frames (0.08 s)")
        self.sampler = self.make_sampler(ctx.train.lengths, self.crop, align=HOP)
        self.audio, self.valid_audio = AudioStore(ctx.train), AudioStore(ctx.valid)
        self.valid_items = fixed_items(
            ctx.valid.lengths, self.crop, ctx.hp.valid_batches * ctx.hp.batch_size, ctx.opts.seed, HOP
        )
        self.targets_km: KMeansTokenizer | None = None
        if self.hubert:
            self.targets_km = KMeansTokenizer(
                KMeansConfig(n_clusters=self.cfg.hubert_classes, dim=2 * HUBERT_MELS, layer=0)
            )
            if not ctx.resuming:
                self._fit_targets()

    def _fit_targets(self) -> None:
        """First-iteration k-means on log-mel(+delta) frames of the training clips (rank 0, broadcast)."""
        ctx = self.ctx
        cent = None
        if ctx.dist.is_main:
            feats, n = [], 0
            limit = int(HUBERT_FIT_SECONDS * SAMPLE_RATE)
            for i in range(len(ctx.train)):
                wav = self.audio.clip(i)[:limit]
                if wav.shape[-1] < HOP:
                    continue
                f = hubert_frame_features(wav.unsqueeze(0), n_mels=HUBERT_MELS)[0]  # (N, 128)
                feats.append(f)
                n += len(f)
                if n >= HUBERT_FIT_FRAMES:
                    break
            x = torch.cat(feats)
            if len(x) < self.cfg.hubert_classes:
                raise TrainError(
                    f"hubert targets: {len(x)} frames < hubert_classes={self.cfg.hubert_classes}"
                )
            self.targets_km.fit(x, n_iter=HUBERT_KMEANS_ITERS, seed=ctx.opts.seed)
            cent = self.targets_km.centroids
        self.targets_km.centroids.copy_(ctx.dist.broadcast_object(cent))

    def modules(self) -> dict[str, nn.Module]:
        return {"ssl": self.model}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"model": self.opt}

    def extra_state(self) -> dict:
        return {"hubert_centroids": self.targets_km.centroids} if self.targets_km is not None else {}

    def load_extra_state(self, state: dict) -> None:
        if self.targets_km is not None:
            if "hubert_centroids" not in state:
                raise TrainError("checkpoint was trained with the wav2vec2 objective; keep --objective")
            self.targets_km.centroids.copy_(state["hubert_centroids"])

    def _targets(self, wav: torch.Tensor) -> torch.Tensor:
        feats = hubert_frame_features(wav.float(), n_mels=HUBERT_MELS)  # (B, N, 128)
        return self.targets_km.assign(feats.cpu()).to(wav.device)  # (B, N)

    def _loss(self, net: nn.Module, wav: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.hubert:
            out = net(wav, self._targets(wav))
            return {"loss": out.loss, "contrastive": out.prediction_loss, "accuracy": out.accuracy}
        out = net(wav)
        return {
            "loss": out.loss,
            "contrastive": out.contrastive_loss,
            "diversity": out.diversity_loss,
            "code_ppl": out.code_perplexity,
            "accuracy": out.accuracy,
        }

    def train_step(self, step: int) -> dict[str, float]:
        ctx = self.ctx
        temp = self.cfg.gumbel_temperature(step)
        self.model.quantizer.temperature = temp
        wav = self.audio.batch(self.sampler.next(), self.crop).to(ctx.device)  # (B, T)
        with ctx.autocast():
            terms = self._loss(self.net, wav)
        optimize(terms["loss"], self.opt, ctx.hp.grad_clip)
        values = {k: float(v.detach()) for k, v in terms.items()}
        if not self.hubert:
            values["temperature"] = temp
        return values

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        ctx = self.ctx
        if not self.valid_items:
            return {}
        self.model.eval()
        sums: dict[str, float] = {}
        n = 0
        try:
            for items in batches(self.valid_items, ctx.hp.batch_size):
                wav = self.valid_audio.batch(items, self.crop).to(ctx.device)
                for k, v in self._loss(
                    self.model if not self.hubert else _HubertObjective(self.model), wav
                ).items():
                    sums[k] = sums.get(k, 0.0) + float(v) * len(items)
                n += len(items)
        finally:
            self.model.train()
        return {k: v / n for k, v in sums.items()}
