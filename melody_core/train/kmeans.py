"""Stage `kmeans`: fit the semantic-token k-means (§5.1) on SSL features of one Conformer layer.

One shot (no gradient loop): features of the training clips, taken in a seeded random clip order
until `max_frames` frames are gathered (then subsampled to exactly that), go through Lloyd k-means
(`KMeansTokenizer.fit`, k-means++ init) for `--steps` iterations. metrics.csv gets one row per
iteration (mean inertia); validation reports the inertia of held-out frames. The layer defaults to
the upstream SSL model's `token_layer`; `--set layer=N` picks another, and `--set layer=-1` fits the
HuBERT first-iteration log-mel features instead of a network layer (the tiny bundle's tokenizer: at
its budget they carry more musical information than the trained SSL layers — `melody eval-tokens`),
and `--set layer=-2` those plus chroma and a local tempogram (`models.token_features`: an option that
makes the tokens carry key and tempo; the committed tiny bundle keeps -1).
"""

from __future__ import annotations

import torch
from torch import nn

from melody_core.models.kmeans import KMeansTokenizer
from melody_core.models.ssl_conformer import MEL_CHROMA_TOKEN_LAYER, MEL_TOKEN_LAYER, token_feature_dim
from melody_core.train.cache import ssl_features
from melody_core.train.stage import Hyper, Stage, StageContext, TrainError

MAX_FRAMES = {"tiny": 200_000, "paper": 1_000_000}  # training frames for the fit (25 Hz: ~2.2 h / 11 h)
VALID_FRAMES = 20_000  # held-out frames scored by validation


class KMeansStage(Stage):
    name = component = "kmeans"
    needs = ("ssl",)
    metrics = ("inertia",)
    valid_key = "inertia"
    one_shot = True

    def defaults(self, preset: str) -> Hyper:
        return Hyper(batch_size=1, crop_seconds=10.0, lr=0.0, steps=50, warmup=0)

    def derived_config(self, upstream, hp, opts) -> dict:
        ssl = upstream["ssl"].config
        layer = opts.overrides.get("layer", ssl.token_layer)
        out = {"dim": token_feature_dim(layer, ssl.d_model)}
        if "layer" not in opts.overrides:
            out["layer"] = ssl.token_layer
        return out

    def setup(self, ctx: StageContext) -> None:
        if ctx.init is not None:
            raise TrainError("kmeans is always fit from scratch; drop --init-from")
        self.km = KMeansTokenizer(ctx.config).to(ctx.device)
        self.ssl = ctx.upstream["ssl"].model.eval()
        layer = ctx.config.layer
        network_free = layer in (MEL_TOKEN_LAYER, MEL_CHROMA_TOKEN_LAYER)
        if not network_free and not 0 <= layer <= self.ssl.config.n_layers:
            raise TrainError(
                f"layer {layer} outside the SSL model's 0..{self.ssl.config.n_layers} "
                f"({MEL_TOKEN_LAYER} = first-iteration log-mel features, "
                f"{MEL_CHROMA_TOKEN_LAYER} = those + chroma + tempogram)"
            )
        self.max_frames = MAX_FRAMES.get(ctx.opts.preset, MAX_FRAMES["tiny"])
        self.valid_feats: torch.Tensor | None = None

    def modules(self) -> dict[str, nn.Module]:
        return {"kmeans": self.km}

    def _features(self, clips, limit: int, seed: int) -> torch.Tensor:
        from melody_core.audio import load_audio

        gen = torch.Generator().manual_seed(seed)
        feats, n = [], 0
        for i in torch.randperm(len(clips), generator=gen).tolist():
            f = ssl_features(self.ssl, load_audio(clips.path(i)), self.km.config.layer, self.ctx.device)
            feats.append(f)
            n += len(f)
            if n >= limit:
                break
        x = torch.cat(feats) if feats else torch.zeros(0, self.km.config.dim)
        if len(x) > limit:
            x = x[torch.randperm(len(x), generator=gen)[:limit]]
        return x

    def fit(self) -> list[dict[str, float]]:
        ctx = self.ctx
        x = self._features(ctx.train, self.max_frames, ctx.opts.seed)
        if len(x) < self.km.config.n_clusters:
            raise TrainError(
                f"only {len(x)} SSL frames for {self.km.config.n_clusters} clusters; add audio "
                "or --set n_clusters=..."
            )
        history = self.km.fit(x, n_iter=ctx.hp.steps, seed=ctx.opts.seed, device=ctx.device)
        if len(ctx.valid):
            self.valid_feats = self._features(ctx.valid, VALID_FRAMES, ctx.opts.seed + 1)
        return [{"inertia": h} for h in history]

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        x = self.valid_feats
        if x is None or not len(x):
            return {}
        ids = self.km.assign(x)
        return {
            "inertia": float((x.to(self.km.centroids.device) - self.km.lookup(ids)).pow(2).sum(-1).mean())
        }
