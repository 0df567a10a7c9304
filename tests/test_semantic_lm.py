"""Semantic LM (Eq. 1) and its samplers: cached decoding == full forward, sliding window, sampling."""

import pytest
import torch

from melody_core.models.sampling import sample_next, top_k_filter, top_p_filter
from melody_core.models.semantic_lm import NULL_PREFIX, LMConfig, SemanticLM

ATOL = 1e-5


def small_config(**overrides) -> LMConfig:
    base = dict(vocab_size=64, prefix_codebook_size=32, d_model=64, n_layers=2, n_heads=4, ffn_hidden=96)
    base.update(overrides)
    base.setdefault("window_keep", base.get("max_len", 250) // 2)
    return LMConfig(**base)


def make(cfg: LMConfig) -> SemanticLM:
    return SemanticLM(cfg).eval()


def rand_prefix(cfg: LMConfig, b: int) -> torch.Tensor:
    return torch.randint(0, cfg.prefix_codebook_size, (b, cfg.n_prefix))


def rand_tokens(cfg: LMConfig, b: int, t: int) -> torch.Tensor:
    return torch.randint(0, cfg.vocab_size, (b, t))


def next_logits_full(lm: SemanticLM, prefix: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Reference: full forward's (B, V) distribution of the token after `window`."""
    dummy = window.new_zeros(window.shape[0], 1)
    with torch.no_grad():
        return lm(prefix, torch.cat([window, dummy], dim=1))[:, window.shape[1]]


# ---- model -------------------------------------------------------------------------------------


def test_forward_shapes_and_causality() -> None:
    cfg = small_config(max_len=16)
    lm = make(cfg)
    prefix, tokens = rand_prefix(cfg, 2), rand_tokens(cfg, 2, 16)
    with torch.no_grad():
        logits = lm(prefix, tokens)
        assert logits.shape == (2, 16, cfg.vocab_size)
        changed = tokens.clone()
        changed[:, 10] = (changed[:, 10] + 1) % cfg.vocab_size
        other = lm(prefix, changed)
    # logits[:, j] depends on tokens[:, :j] only: positions <= 10 unchanged, 11 changes
    torch.testing.assert_close(other[:, :11], logits[:, :11], atol=ATOL, rtol=0)
    assert (other[:, 11] - logits[:, 11]).abs().max() > 1e-4
    with pytest.raises(ValueError):
        lm(prefix, rand_tokens(cfg, 2, 17))  # longer than max_len


def test_prefix_codebooks_have_separate_embeddings() -> None:
    cfg = small_config()
    lm = make(cfg)
    same_ids = torch.full((1, cfg.n_prefix), 5)
    emb = lm.embed_prefix(same_ids)[0]  # (n_prefix, D)
    assert not torch.allclose(emb[0], emb[3])
    with pytest.raises(ValueError):
        lm(torch.full((1, cfg.n_prefix), cfg.prefix_codebook_size), rand_tokens(cfg, 1, 4))


def test_prefix_conditions_the_prediction() -> None:
    cfg = small_config()
    lm = make(cfg)
    tokens = rand_tokens(cfg, 1, 8)
    with torch.no_grad():
        a = lm(rand_prefix(cfg, 1), tokens)
        b = lm(rand_prefix(cfg, 1), tokens)
    assert (a - b).abs().max() > 1e-4


def test_loss_backward_and_a_few_steps_learn() -> None:
    cfg = LMConfig.tiny()
    lm = SemanticLM(cfg)
    prefix, tokens = rand_prefix(cfg, 2), rand_tokens(cfg, 2, 16)
    loss = lm.loss(prefix, tokens)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert abs(loss.item() - torch.log(torch.tensor(float(cfg.vocab_size))).item()) < 0.5  # near uniform
    loss.backward()
    for name, p in lm.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    opt = torch.optim.Adam(lm.parameters(), lr=3e-3)
    first = loss.item()
    for _ in range(8):
        opt.zero_grad()
        loss = lm.loss(prefix, tokens)
        loss.backward()
        opt.step()
    assert loss.item() < first - 0.5


def test_incremental_decoding_matches_full_forward() -> None:
    cfg = small_config(max_len=24)
    lm = make(cfg)
    prefix, tokens = rand_prefix(cfg, 3), rand_tokens(cfg, 3, cfg.max_len)
    with torch.no_grad():
        full = lm(prefix, tokens)  # (B, max_len, V)
    state = lm.start(prefix)
    got = [state.logits]
    for j in range(cfg.max_len - 1):
        got.append(lm.step(state, tokens[:, j]))
    torch.testing.assert_close(torch.stack(got, dim=1), full, atol=ATOL, rtol=0)
    assert state.n_rebuilds == 0 and state.window.shape[1] == cfg.window


def test_prompt_tokens_then_steps_match_full_forward() -> None:
    cfg = small_config(max_len=24)
    lm = make(cfg)
    prefix, tokens = rand_prefix(cfg, 2), rand_tokens(cfg, 2, cfg.max_len)
    with torch.no_grad():
        full = lm(prefix, tokens)
    state = lm.start(prefix, prompt_tokens=tokens[:, :7])
    torch.testing.assert_close(state.logits, full[:, 7], atol=ATOL, rtol=0)
    for j in range(7, 15):
        torch.testing.assert_close(lm.step(state, tokens[:, j]), full[:, j + 1], atol=ATOL, rtol=0)
    # several tokens at once (feed) equals feeding them one by one
    torch.testing.assert_close(lm.feed(state, tokens[:, 15:20]), full[:, 20], atol=ATOL, rtol=0)
    assert state.n_consumed == 20


def test_sliding_window_rebuild_matches_full_forward_on_the_window() -> None:
    cfg = small_config(max_len=16, window_keep=6)
    lm = make(cfg)
    prefix, tokens = rand_prefix(cfg, 2), rand_tokens(cfg, 2, 60)
    state = lm.start(prefix, prompt_tokens=tokens[:, :10])
    for j in range(10, 60):
        logits = lm.step(state, tokens[:, j])
        window = state.window
        assert 1 <= window.shape[1] <= cfg.window
        torch.testing.assert_close(window, tokens[:, j + 1 - window.shape[1] : j + 1], atol=0, rtol=0)
        torch.testing.assert_close(logits, next_logits_full(lm, prefix, window), atol=ATOL, rtol=0)
    # window = 15 tokens; every rebuild keeps 6, so the window refills every 9 + 1 tokens
    assert state.n_rebuilds >= 4


def test_long_prompt_keeps_most_recent_window() -> None:
    cfg = small_config(max_len=16, window_keep=6)
    lm = make(cfg)
    prefix, tokens = rand_prefix(cfg, 1), rand_tokens(cfg, 1, 40)
    state = lm.start(prefix, prompt_tokens=tokens)
    torch.testing.assert_close(state.window, tokens[:, -cfg.window :], atol=0, rtol=0)
    torch.testing.assert_close(state.logits, next_logits_full(lm, prefix, state.window), atol=ATOL, rtol=0)


def test_generate_600_tokens_with_window_250_and_callback() -> None:
    cfg = LMConfig.tiny()
    assert cfg.max_len == 250
    lm = make(cfg)
    prefix = rand_prefix(cfg, 1)
    calls: list[tuple[int, int]] = []
    gen = torch.Generator().manual_seed(1)
    out = lm.generate(prefix, 600, generator=gen, callback=lambda i, n: calls.append((i, n)))
    assert out.shape == (1, 600) and out.dtype == torch.int64
    assert 0 <= out.min() and out.max() < cfg.vocab_size
    assert calls[0] == (1, 600) and calls[-1] == (600, 600) and len(calls) == 600


def test_generate_is_deterministic_with_a_seed_and_greedy_matches_argmax() -> None:
    cfg = small_config(max_len=16, window_keep=5)
    lm = make(cfg)
    prefix, prompt = rand_prefix(cfg, 2), rand_tokens(cfg, 2, 4)
    a = lm.generate(prefix, 40, prompt, temperature=1.0, top_k=10, generator=torch.Generator().manual_seed(7))
    b = lm.generate(prefix, 40, prompt, temperature=1.0, top_k=10, generator=torch.Generator().manual_seed(7))
    c = lm.generate(prefix, 40, prompt, temperature=1.0, top_k=10, generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert not torch.equal(a, c)
    # greedy decoding by hand through full forwards on the sliding window
    greedy = lm.generate(prefix, 30, prompt, temperature=0.0)
    state = lm.start(prefix, prompt)
    for j in range(30):
        ref = next_logits_full(lm, prefix, state.window).argmax(-1)
        torch.testing.assert_close(greedy[:, j], ref, atol=0, rtol=0)
        lm.step(state, greedy[:, j])


def test_stream_yields_chunks_and_state_resumes() -> None:
    cfg = small_config(max_len=16, window_keep=5)
    lm = make(cfg)
    prefix = rand_prefix(cfg, 2)
    ref = lm.generate(prefix, 40, generator=torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(3)
    state = lm.start(prefix)
    stream = lm.stream(state, generator=gen, chunk_size=8)
    chunks = [next(stream), next(stream)]
    stream.close()
    assert chunks[0].shape == (2, 8) and state.n_consumed == 16
    n_window = state.window.shape[1]  # the window (15) overflowed once
    torch.testing.assert_close(state.window, torch.cat(chunks, dim=1)[:, -n_window:], atol=0, rtol=0)
    # a new stream on the same state continues exactly where the first one stopped
    chunks.append(next(lm.stream(state, generator=gen, chunk_size=24)))
    torch.testing.assert_close(torch.cat(chunks, dim=1), ref, atol=0, rtol=0)


def test_null_prefix_stays_exactly_zero_through_the_network() -> None:
    cfg = small_config(max_len=16)
    lm = make(cfg)
    null = torch.full((2, cfg.n_prefix), NULL_PREFIX)
    assert torch.equal(lm.embed_prefix(null), torch.zeros(2, cfg.n_prefix, cfg.d_model))
    # the null positions are all-zero inputs: they stay zero (no parameters), so every null prefix
    # gives the same distribution as any other, and it differs from a real prefix's
    x = lm.embed_prefix(null)
    for layer in lm.layers:
        x = layer(x)
    assert torch.equal(x, torch.zeros_like(x))
    tokens = rand_tokens(cfg, 2, 8)
    with torch.no_grad():
        a, b = lm(null, tokens), lm(rand_prefix(cfg, 2), tokens)
    assert (a - b).abs().max() > 1e-4
    mixed = rand_prefix(cfg, 2)
    mixed[0] = NULL_PREFIX
    with torch.no_grad():
        torch.testing.assert_close(lm(mixed, tokens)[0], a[0], atol=ATOL, rtol=0)
    with pytest.raises(ValueError):
        lm(torch.full((2, cfg.n_prefix), -2), tokens)


def test_guided_decoding_is_cfg_of_the_two_full_forwards() -> None:
    cfg = small_config(max_len=16, window_keep=6)
    lm = make(cfg)
    g = 3.0
    prefix, tokens = rand_prefix(cfg, 2), rand_tokens(cfg, 2, 40)
    null = torch.full_like(prefix, NULL_PREFIX)
    state = lm.start(prefix, prompt_tokens=tokens[:, :5], guidance=g)
    assert state.prefix.shape == (4, cfg.n_prefix) and state.rows == 2
    for j in range(5, 40):  # across sliding-window rebuilds too
        window = state.window[:2]
        torch.testing.assert_close(state.window[2:], window, atol=0, rtol=0)
        cond = torch.log_softmax(next_logits_full(lm, prefix, window), -1)
        uncond = torch.log_softmax(next_logits_full(lm, null, window), -1)
        torch.testing.assert_close(state.next_logits(), uncond + g * (cond - uncond), atol=1e-4, rtol=0)
        lm.step(state, tokens[:, j])
    # guidance 1 is the plain conditional path, bit for bit
    gen = lambda k: torch.Generator().manual_seed(k)  # noqa: E731
    torch.testing.assert_close(
        lm.generate(prefix, 20, guidance=1.0, generator=gen(4)), lm.generate(prefix, 20, generator=gen(4)),
        atol=0, rtol=0,
    )
    guided = lm.generate(prefix, 20, guidance=g, generator=gen(4))
    assert guided.shape == (2, 20) and not torch.equal(guided, lm.generate(prefix, 20, generator=gen(4)))
    with pytest.raises(ValueError):
        lm.start(prefix, guidance=float("nan"))


def test_prefix_mix_settings_are_validated() -> None:
    from melody_core.train.lm import LMTraining

    with pytest.raises(ValueError):
        small_config(prefix_dropout=-0.1)
    with pytest.raises(ValueError):
        LMTraining(text_prefix_prob=1.5)
    # an LM config written before text_prefix_prob became a trainer option still loads
    old = {**LMConfig.tiny().to_dict(), "text_prefix_prob": 0.4}
    assert LMConfig.from_dict(old) == LMConfig.tiny()
    assert LMConfig.moved_to_trainer(old) == {"text_prefix_prob": 0.4}


def test_meta_construction_and_paper_parameter_count() -> None:
    with torch.device("meta"):
        lm = SemanticLM(LMConfig.paper())
    n = sum(p.numel() for p in lm.parameters())
    assert abs(n - 429.5e6) / 429.5e6 < 0.10, n
    assert n == 417_383_424  # the arithmetic in LMConfig's docstring
    assert all(p.device.type == "meta" for p in lm.parameters())


def test_state_dict_is_plain_and_config_round_trips() -> None:
    cfg = LMConfig.tiny()
    lm = SemanticLM(cfg)
    assert all(isinstance(v, torch.Tensor) for v in lm.state_dict().values())
    clone = SemanticLM(LMConfig.from_dict(cfg.to_dict()))
    clone.load_state_dict(lm.state_dict())
    assert LMConfig.preset("paper").vocab_size == 1024
    with pytest.raises(ValueError):
        LMConfig(window_keep=250, max_len=250)


# ---- sampling ----------------------------------------------------------------------------------


def test_top_k_1_and_tiny_top_p_and_zero_temperature_equal_argmax_with_ties() -> None:
    logits = torch.randn(64, 50)
    logits[:8, 10] = logits[:8, 3] = 100.0  # ties for the maximum: argmax takes the lower id
    expect = logits.argmax(-1)
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        for kw in ({"top_k": 1}, {"top_p": 1e-6}):
            torch.testing.assert_close(sample_next(logits, 1.0, generator=gen, **kw), expect, atol=0, rtol=0)
    torch.testing.assert_close(sample_next(logits, 0.0), expect, atol=0, rtol=0)


def test_top_k_keeps_exactly_k_on_ties() -> None:
    logits = torch.tensor([[0.0, 1.0, 1.0, 1.0, 0.5]])
    kept = torch.isfinite(top_k_filter(logits, 2))
    assert kept.tolist() == [[False, True, True, False, False]]
    assert torch.isfinite(top_k_filter(logits, 0)).all()  # disabled


def test_top_p_keeps_the_smallest_nucleus() -> None:
    probs = torch.tensor([[0.05, 0.5, 0.3, 0.15]])
    logits = probs.log()
    assert torch.isfinite(top_p_filter(logits, 0.5)).tolist() == [[False, True, False, False]]
    assert torch.isfinite(top_p_filter(logits, 0.6)).tolist() == [[False, True, True, False]]
    assert torch.isfinite(top_p_filter(logits, 0.9)).tolist() == [[False, True, True, True]]
    assert torch.isfinite(top_p_filter(logits, 1.0)).all()


def empirical(logits: torch.Tensor, n: int, seed: int, **kw) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    draws = sample_next(logits.expand(n, -1), generator=gen, **kw)  # n independent rows
    return torch.bincount(draws, minlength=logits.shape[-1]).double() / n


def test_sample_distribution_matches_softmax() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, 0.5, -3.0]])
    n = 200_000
    for temperature in (1.0, 0.5, 2.0):
        target = (logits / temperature).softmax(-1)[0].double()
        freq = empirical(logits, n, seed=1, temperature=temperature)
        sigma = (target * (1 - target) / n).sqrt()
        assert ((freq - target).abs() <= 5 * sigma + 1e-9).all(), (temperature, freq, target)
    # lower temperature sharpens, higher flattens
    assert empirical(logits, n, 2, temperature=0.5)[0] > empirical(logits, n, 2, temperature=2.0)[0]


def test_filtered_sample_distribution_is_renormalised() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, 0.5, -3.0]])
    n = 200_000
    freq = empirical(logits, n, seed=4, top_k=3)
    target = torch.zeros(6, dtype=torch.float64)
    target[[0, 1, 4]] = logits[0, [0, 1, 4]].double().softmax(-1)
    assert freq[[2, 3, 5]].sum() == 0
    sigma = (target * (1 - target) / n).sqrt()
    assert ((freq - target).abs() <= 5 * sigma + 1e-9).all()
    # nucleus 0.7: p = [.52, .19, .07, .03, .12, .003] -> keeps tokens 0, 1 (mass .71)
    freq = empirical(logits, n, seed=5, top_p=0.7)
    assert set(torch.nonzero(freq).flatten().tolist()) == {0, 1}


def test_sampling_is_deterministic_with_a_generator() -> None:
    logits = torch.randn(4, 100)
    a = [sample_next(logits, 0.9, 20, 0.95, torch.Generator().manual_seed(11)) for _ in range(2)]
    torch.testing.assert_close(a[0], a[1], atol=0, rtol=0)
    with pytest.raises(ValueError):
        sample_next(logits, -1.0)
