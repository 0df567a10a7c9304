"""Pipeline internals: window plans (paper geometry), streamed decoding."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from melody_core.generation.decode import StreamDecoder, crossfade_ramp, decode_range
from melody_core.generation.plan import (
    Layout,
    continuation_windows,
    generation_windows,
    inpaint_windows,
)
from melody_core.models.vae_gan import AudioVAE, VAEConfig

PAPER = Layout(2500, 4)


def test_paper_layout_on_token_grid() -> None:
    assert PAPER.bounds == (0, 620, 1250, 1870, 2500)
    assert PAPER.hop == 630  # 625 frames = 62.5 tokens rounded up to 63 whole tokens
    assert PAPER.chunk_steps(10) == 3 and PAPER.chunk_steps(10, 5) == 5


def test_generation_windows() -> None:
    w = list(generation_windows(PAPER, 7500, 10, 3))
    assert (w[0].start, w[0].end, w[0].steps) == (0, 2500, 10)
    assert [(x.start, x.end, x.steps) for x in w[1:3]] == [(630, 3130, 3), (1260, 3760, 3)]
    assert w[-1].end >= 7500 and w[-2].end < 7500 and all(x.length == 2500 for x in w)
    assert [x.index for x in w] == list(range(len(w)))
    prog = list(generation_windows(PAPER, 3500, 10, 3, start="progressive"))
    assert [(x.start, x.end, x.steps) for x in prog[:5]] == [
        (0, 620, 10), (0, 1250, 3), (0, 1870, 3), (0, 2500, 3), (630, 3130, 3)]
    assert list(generation_windows(PAPER, 1000, 10, 3)) == [generation_windows(PAPER, 1000, 10, 3).__next__()]
    assert [x.end for x in generation_windows(PAPER, 1000, 10, 3, start="progressive")] == [620, 1000]
    endless = list(itertools.islice(generation_windows(PAPER, None, 10, 3), 5))
    assert [x.end for x in endless] == [2500, 3130, 3760, 4390, 5020]
    with pytest.raises(ValueError):
        list(generation_windows(PAPER, 1005, 10, 3))


def test_continuation_and_inpaint_windows() -> None:
    c = list(continuation_windows(PAPER, 1200, 2500, 3))
    assert [(x.start, x.end) for x in c] == [(0, 1830), (0, 2460), (590, 3090)]
    # short region: one centred window with >= hop frames of context on each side
    (w,) = inpaint_windows(PAPER, 5000, 5400, 10000, 10, 3)
    assert w.length == 2500 and w.start <= 5000 - 630 and w.end >= 5400 + 630 and w.steps == 10
    (w,) = inpaint_windows(PAPER, 100, 300, 10000, 10, 3)
    assert (w.start, w.end) == (0, 2500)
    # long region: left to right, the last window reaches past the region
    ws = inpaint_windows(PAPER, 3000, 6000, 10000, 10, 3)
    assert ws[0].steps == 10 and all(x.steps == 3 for x in ws[1:]) and all(x.length == 2500 for x in ws)
    assert ws[0].start < 3000 < ws[0].end and ws[-1].end >= 6000 + 630
    covered = set()
    for x in ws:
        covered |= set(range(x.start, x.end))
    assert set(range(3000, 6000)) <= covered


@torch.no_grad()
def test_stream_decoder_matches_full_decode() -> None:
    torch.manual_seed(0)
    vae = AudioVAE(VAEConfig.tiny()).eval()
    z = torch.randn(1, 1400, 16)
    full = decode_range(vae, z, 0, 1400, 1400, 2.0)[0].numpy()
    torch.testing.assert_close(torch.from_numpy(full), vae.decode(z / 2.0)[0])
    blocks = decode_range(vae, z, 0, 1400, 1400, 2.0, block=300)[0].numpy()
    assert np.abs(blocks - full).max() <= 1e-4
    for end in (1400, None):  # known end / open-ended stream finished at 1400
        dec = StreamDecoder(vae, 2.0, first=0, end=end)
        parts = []
        for final in (500, 520, 900, 1400):
            parts += [pcm for _, pcm in dec.ready(z, final)]
        parts += [pcm for _, pcm in dec.finish(z, 1400)]
        got = np.concatenate(parts)
        assert got.shape == full.shape and np.abs(got - full).max() <= 1e-4
    dec = StreamDecoder(vae, 2.0, first=0, end=None)
    first = [s for s, _ in dec.ready(z, 600)]
    assert first == [0, 250]  # a short first piece, then frames with final right context only
    assert dec.done == 600 - vae.context_frames


def test_crossfade_ramp() -> None:
    r = crossfade_ramp(100)
    assert r[0] > 0 and r[-1] < 1 and np.all(np.diff(r) > 0)
    np.testing.assert_allclose(r + r[::-1], 1.0, atol=1e-6)
    assert crossfade_ramp(0).shape == (0,)
