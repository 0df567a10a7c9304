"""K-means semantic tokenizer: cluster recovery, determinism, chunking, empty clusters, presets."""

import pytest
import torch

from melody_core.models.kmeans import KMeansConfig, KMeansTokenizer
from melody_core.models.ssl_conformer import SSLConfig


def _blobs(n_per: int = 300, k: int = 6, dim: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, dim, generator=gen) * 10.0
    labels = torch.arange(k).repeat_interleave(n_per)
    x = centres[labels] + torch.randn(k * n_per, dim, generator=gen)
    perm = torch.randperm(k * n_per, generator=gen)
    return x[perm], labels[perm]


def _tok(k: int, dim: int, **kw) -> KMeansTokenizer:
    return KMeansTokenizer(KMeansConfig(n_clusters=k, dim=dim, layer=0, **kw))


def test_recovers_gaussian_blobs() -> None:
    x, labels = _blobs()
    tok = _tok(6, 16)
    history = tok.fit(x, n_iter=30, seed=0, batch_size=257)  # k-means++
    pred = tok.assign(x)
    assert pred.dtype == torch.int64 and pred.shape == labels.shape
    # assignments equal the true labels up to a permutation: a bijection between ids
    pairs = set(zip(labels.tolist(), pred.tolist()))
    assert len(pairs) == 6
    assert len({p for _, p in pairs}) == 6
    assert all(b <= a * (1 + 1e-5) for a, b in zip(history, history[1:]))  # Lloyd never increases
    assert history[-1] == pytest.approx(16.0, rel=0.15)  # within-blob variance 1 per dim


def test_random_init_lloyd_monotone() -> None:
    x, _ = _blobs()
    history = _tok(6, 16).fit(x, n_iter=15, seed=0, init="random")
    assert history[-1] < history[0]
    assert all(b <= a * (1 + 1e-5) for a, b in zip(history, history[1:]))


def test_fit_is_deterministic_for_a_seed() -> None:
    x, _ = _blobs(k=8, n_per=100)
    a, b, c = _tok(12, 16), _tok(12, 16), _tok(12, 16)
    ha = a.fit(x, n_iter=5, seed=3)
    hb = b.fit(x, n_iter=5, seed=3)
    c.fit(x, n_iter=5, seed=4)
    assert ha == hb
    assert torch.equal(a.centroids, b.centroids)
    assert not torch.equal(a.centroids, c.centroids)


def test_chunked_fit_matches_unchunked() -> None:
    x, _ = _blobs(k=5, n_per=100)
    a, b = _tok(10, 16), _tok(10, 16)
    ha = a.fit(x, n_iter=4, seed=1, batch_size=61)
    hb = b.fit(x, n_iter=4, seed=1, batch_size=10**6)
    torch.testing.assert_close(a.centroids, b.centroids, atol=1e-4, rtol=1e-5)
    assert ha == pytest.approx(hb, rel=1e-5)


def test_chunked_assign_equals_unchunked() -> None:
    tok = _tok(64, 32)
    tok.centroids.copy_(torch.randn(64, 32))
    x = torch.randn(3, 101, 32)
    full = tok.assign(x, chunk_size=10**6)
    assert full.shape == (3, 101) and full.dtype == torch.int64
    assert torch.equal(tok.assign(x, chunk_size=7), full)
    brute = torch.cdist(x.reshape(-1, 32), tok.centroids).argmin(-1).view(3, 101)
    assert torch.equal(full, brute)
    assert torch.equal(tok(x), full)
    torch.testing.assert_close(tok.lookup(full), tok.centroids[full])
    with pytest.raises(ValueError):
        tok.assign(torch.randn(4, 31))


def test_empty_clusters_are_reseeded() -> None:
    gen = torch.Generator().manual_seed(0)
    spread = torch.randn(100, 4, generator=gen) * 5.0
    x = torch.cat([torch.zeros(900, 4), spread])  # 90 % one repeated point
    tok = _tok(8, 4)
    tok.fit(x, n_iter=10, seed=0, init="random")  # random init picks duplicates -> empty clusters
    counts = torch.bincount(tok.assign(x), minlength=8)
    assert (counts > 0).all(), counts
    assert len(torch.unique(tok.centroids, dim=0)) == 8


def test_fit_validates_input() -> None:
    tok = _tok(8, 4)
    with pytest.raises(ValueError):
        tok.fit(torch.randn(5, 4))  # fewer rows than clusters
    with pytest.raises(ValueError):
        tok.fit(torch.randn(50, 3))
    with pytest.raises(ValueError):
        tok.fit(torch.randn(50, 4), init="nope")


def test_state_dict_and_meta_construction() -> None:
    for name, v in (("tiny", 256), ("paper", 1024)):
        cfg = KMeansConfig.preset(name)
        ssl = SSLConfig.preset(name)
        assert cfg.n_clusters == v and cfg.dim == ssl.d_model and cfg.layer == ssl.token_layer
        with torch.device("meta"):
            tok = KMeansTokenizer(cfg)
        assert tok.centroids.is_meta and tok.centroids.shape == (v, ssl.d_model)
        assert KMeansConfig.from_dict(cfg.to_dict()) == cfg
    x, _ = _blobs(k=4, n_per=50, dim=8)
    tok = _tok(4, 8)
    tok.fit(x, n_iter=3, seed=0)
    assert list(tok.state_dict()) == ["centroids"]
    clone = _tok(4, 8)
    clone.load_state_dict(tok.state_dict())
    assert torch.equal(clone.assign(x), tok.assign(x))
