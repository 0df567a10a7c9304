"""K-means semantic tokenizer (§5.1): SSL embeddings (25 Hz) -> discrete semantic tokens.

"The training targets were 10s semantic tokens, which are obtained from discretizing the 25Hz
embeddings from a 199.5M Wav2Vec2-Conformer with 1024-center k-means." The centroids live in a
persistent buffer, so a fitted tokenizer is a plain state_dict.

Fitting is batch Lloyd k-means in torch (CPU or CUDA), with distances computed in row chunks so
that N = 1e6 x d = 256 never materialises an N x V matrix.

*(our choice)* where the paper is silent:
- Initialisation: k-means++ (Arthur & Vassilvitskii 2007) on a random subsample of the data
  (`init_sample` rows; full k-means++ over 1e6 rows is 1024 sequential passes over the data), or
  plain random rows. All randomness comes from one `torch.Generator` seeded by `seed`, drawn on the
  CPU, so a fit is deterministic for a seed (on CPU; CUDA `index_add_` uses atomics, so centroid
  sums may differ in the last bits).
- Empty clusters are re-seeded with the points currently farthest from their centre (as sklearn's
  relocation), so every token id stays in use.
- Lloyd stops early when the relative inertia improvement falls below `tol` (0 = run all iterations).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from melody_core.config import BaseConfig
from melody_core.models.ssl_conformer import SSLConfig

# rows per k-means++ init sample, per cluster (our choice: 16 V rows seed every mode well enough;
# k-means++ is V sequential passes over the sample, so it is kept small)
INIT_ROWS_PER_CLUSTER = 16


@dataclass
class KMeansConfig(BaseConfig):
    """Semantic-token k-means. tiny: 256 clusters; paper: 1024 clusters (§5.1)."""

    n_clusters: int = 256  # V_ST, semantic vocabulary size (§5.1: 1024 centres)
    dim: int = 128  # feature dimension = SSLConfig.d_model of the layer it was fit on
    layer: int = 2  # SSL Conformer layer the features come from (SSLConfig.token_layer)
    chunk_size: int = 16_384  # rows per chunk of the (rows x V) distance matrix in fit/assign

    @classmethod
    def tiny(cls) -> KMeansConfig:
        ssl = SSLConfig.tiny()
        return cls(n_clusters=256, dim=ssl.d_model, layer=ssl.token_layer)

    @classmethod
    def paper(cls) -> KMeansConfig:
        ssl = SSLConfig.paper()
        return cls(n_clusters=1024, dim=ssl.d_model, layer=ssl.token_layer)


class KMeansTokenizer(nn.Module):
    """Nearest-centroid tokenizer.

    assign / forward: features (..., dim) float -> tokens (...) int64 in [0, n_clusters).
    lookup: tokens (...) int64 -> centroids (..., dim).
    fit: features (N, dim) -> per-iteration inertia list; fills the `centroids` (V, dim) buffer.
    """

    def __init__(self, config: KMeansConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("centroids", torch.zeros(config.n_clusters, config.dim), persistent=True)

    # ------------------------------------------------------------------ inference
    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.assign(features)

    @torch.no_grad()
    def assign(self, features: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
        """(..., dim) -> (...) int64 nearest-centroid ids, computed `chunk_size` rows at a time."""
        if features.shape[-1] != self.config.dim:
            raise ValueError(f"expected feature dim {self.config.dim}, got {features.shape[-1]}")
        lead = features.shape[:-1]
        flat = features.reshape(-1, self.config.dim)  # (N, dim)
        chunk = chunk_size or self.config.chunk_size
        cent = self.centroids.float()
        c_sq = cent.pow(2).sum(-1)  # (V,)
        out = [self._nearest(x.to(cent.device, torch.float32), cent, c_sq)[1] for x in flat.split(chunk)]
        ids = torch.cat(out) if out else flat.new_zeros(0, dtype=torch.long)
        return ids.to(features.device).reshape(lead)  # (...)

    def lookup(self, tokens: torch.Tensor) -> torch.Tensor:
        """(...) int64 -> (..., dim) centroid vectors."""
        return self.centroids[tokens]

    @staticmethod
    def _nearest(
        x: torch.Tensor, cent: torch.Tensor, c_sq: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (n, d) -> squared distance to and index of the nearest centroid, (n,) each."""
        d2 = torch.addmm(c_sq.unsqueeze(0), x, cent.T, alpha=-2.0)  # (n, V), ||x||^2 added after the min
        best, idx = d2.min(dim=1)
        return (best + x.pow(2).sum(-1)).clamp(min=0.0), idx

    # ------------------------------------------------------------------ fitting
    @torch.no_grad()
    def fit(
        self,
        features: torch.Tensor,
        n_iter: int = 50,
        seed: int = 0,
        batch_size: int | None = None,
        init: str = "k-means++",
        init_sample: int | None = None,
        tol: float = 0.0,
        device: torch.device | str | None = None,
    ) -> list[float]:
        """Lloyd k-means on features (N, dim). Returns the mean inertia (squared distance to the
        assigned centre) of each iteration, measured before that iteration's centroid update.

        batch_size: rows per distance chunk (default config.chunk_size); device: where to compute
        (default: the buffer's device); init: "k-means++" or "random"; init_sample: rows used by
        k-means++ (default min(N, 16 V)).
        """
        n, dim = features.shape
        v = self.config.n_clusters
        if dim != self.config.dim:
            raise ValueError(f"expected feature dim {self.config.dim}, got {dim}")
        if n < v:
            raise ValueError(f"need at least n_clusters={v} rows to fit, got {n}")
        chunk = batch_size or self.config.chunk_size
        dev = torch.device(device) if device is not None else self.centroids.device
        gen = torch.Generator().manual_seed(seed)
        cent = self._init(features, gen, init, init_sample, dev)  # (V, dim) float32
        history: list[float] = []
        for _ in range(n_iter):
            sums = torch.zeros(v, dim, dtype=torch.float64, device=dev)
            counts = torch.zeros(v, dtype=torch.float64, device=dev)
            min_d2 = torch.empty(n, dtype=torch.float32, device=dev)
            c_sq = cent.pow(2).sum(-1)
            for start in range(0, n, chunk):
                x = features[start : start + chunk].to(dev, torch.float32)  # (n_c, dim)
                d2, idx = self._nearest(x, cent, c_sq)
                min_d2[start : start + len(x)] = d2
                sums += torch.zeros_like(cent).index_add_(0, idx, x).double()  # f32 per chunk, f64 total
                counts += torch.bincount(idx, minlength=v).double()
            history.append(float(min_d2.double().mean()))
            cent = (sums / counts.clamp(min=1.0).unsqueeze(1)).float()
            empty = torch.nonzero(counts == 0).flatten()
            if len(empty):  # re-seed with the farthest points (distinct rows)
                far = min_d2.topk(len(empty)).indices
                cent[empty] = features[far.to(features.device)].to(dev, torch.float32)
            if tol > 0 and len(history) > 1 and history[-2] - history[-1] <= tol * history[-2]:
                break
        self.centroids.copy_(cent.to(self.centroids.device, self.centroids.dtype))
        return history

    def _init(
        self,
        features: torch.Tensor,
        gen: torch.Generator,
        init: str,
        init_sample: int | None,
        dev: torch.device,
    ) -> torch.Tensor:
        """Initial centroids (V, dim) float32 on `dev`."""
        n, v = features.shape[0], self.config.n_clusters
        if init == "random":
            rows = torch.randperm(n, generator=gen)[:v]
            return features[rows.to(features.device)].to(dev, torch.float32)
        if init != "k-means++":
            raise ValueError(f"unknown init {init!r} (use 'k-means++' or 'random')")
        m = min(n, init_sample or INIT_ROWS_PER_CLUSTER * v)
        rows = torch.randperm(n, generator=gen)[:m]
        x = features[rows.to(features.device)].to(dev, torch.float32)  # (m, dim) subsample
        return _kmeans_pp(x, v, gen)


def _kmeans_pp(x: torch.Tensor, v: int, gen: torch.Generator) -> torch.Tensor:
    """k-means++ seeding on x (m, dim): each new centre drawn with probability ∝ D(x)^2."""
    m = x.shape[0]
    first = int(torch.randint(m, (1,), generator=gen))
    cent = x.new_empty(v, x.shape[1])
    cent[0] = x[first]
    x_sq = x.pow(2).sum(-1)  # (m,)
    d2 = (x_sq - 2.0 * (x @ cent[0]) + cent[0].pow(2).sum()).clamp(min=0.0)  # (m,)
    for i in range(1, v):
        total = d2.sum()
        if total <= 0:  # fewer distinct points than centres: fall back to uniform draws
            probs = torch.full((m,), 1.0 / m)
        else:
            probs = (d2 / total).double().cpu()
        pick = int(torch.multinomial(probs, 1, generator=gen))
        cent[i] = x[pick]
        new = (x_sq - 2.0 * (x @ cent[i]) + cent[i].pow(2).sum()).clamp(min=0.0)  # (m,)
        d2 = torch.minimum(d2, new)
    return cent
