import pytest
import torch

from melody_core.modules import Attention, KVCache, num_segments, overlap_add, segment


@pytest.mark.parametrize("length", [1, 7, 63, 64, 65, 250, 2500])
@pytest.mark.parametrize("k", [2, 8, 64])
def test_segmentation_overlap_add_is_identity(length: int, k: int) -> None:
    x = torch.randn(2, length, 5)
    segs = segment(x, k)
    assert segs.shape == (2, num_segments(length, k), k, 5)
    torch.testing.assert_close(overlap_add(segs, length), x, rtol=0, atol=0)


def test_paper_segment_count() -> None:
    assert num_segments(2500, 64) == 80  # §5.1: L = 2500, K = 64 -> S = 80


def test_cached_attention_matches_full_causal() -> None:
    attn = Attention(32, 4, rope=True).eval()
    x = torch.randn(2, 9, 32)
    full = attn(x, causal=True)
    cache = KVCache()
    first = attn(x[:, :4], cache=cache, causal=True)
    steps = [attn(x[:, i : i + 1], cache=cache, causal=True) for i in range(4, 9)]
    torch.testing.assert_close(torch.cat([first, *steps], 1), full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("preset", ["tiny", "paper"])
def test_presets_are_consistent_across_components(preset: str) -> None:
    from melody_core.config import MelodyConfig

    cfg = MelodyConfig.preset(preset)  # validate() runs inside
    again = MelodyConfig.from_dict(cfg.to_dict())
    assert again.to_dict() == cfg.to_dict()


def test_inconsistent_components_are_refused() -> None:
    from melody_core.config import ConfigError, MelodyConfig

    cfg = MelodyConfig.preset("tiny")
    cfg.components["lm"].vocab_size = 999
    with pytest.raises(ConfigError, match="vocab_size"):
        cfg.validate()
