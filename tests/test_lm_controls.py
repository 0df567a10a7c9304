"""Explicit BPM / key controls of the semantic LM (issue 16): the LM's layout, buckets and decoding,
the prompt parser, settings / CLI validation, generation conditioning, the trainer's labels,
dropout and --init-from an LM without controls."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from micro_bundle import MICRO_OVERRIDES

from melody_core.models.controls import (
    clip_controls,
    find_controls,
    key_name,
    parse_key,
    prompt_with_controls,
)
from melody_core.models.semantic_lm import NULL_CONTROL, NULL_PREFIX, LMConfig, SemanticLM

ATOL = 1e-5


def cfg_of(**kw) -> LMConfig:
    base = dict(vocab_size=64, prefix_codebook_size=32, d_model=64, n_layers=2, n_heads=4, ffn_hidden=96,
                max_len=16, window_keep=6)
    return LMConfig(**{**base, **kw})


CTL = dict(bpm_buckets=40, key_tokens=24)


# ---- model ---------------------------------------------------------------------------------------


def test_off_by_default_adds_no_parameters_and_on_keeps_the_old_init() -> None:
    plain = cfg_of()
    assert plain.controls == () and plain.n_cond == plain.n_prefix
    torch.manual_seed(3)
    a = SemanticLM(plain)
    assert a.bpm_embed is None and a.key_embed is None
    assert not any(k.startswith(("bpm_embed", "key_embed")) for k in a.state_dict())
    torch.manual_seed(3)
    b = SemanticLM(cfg_of(**CTL))
    sb = b.state_dict()
    assert sb["bpm_embed.weight"].shape == (40, 64) and sb["key_embed.weight"].shape == (24, 64)
    for k, t in a.state_dict().items():  # control tables are drawn last: the old init is unchanged
        assert torch.equal(sb[k], t), k
    assert LMConfig.from_dict(plain.to_dict()) == plain  # an old config dict reads as controls off


def test_control_tokens_change_the_logits_and_missing_columns_are_null() -> None:
    cfg = cfg_of(**CTL)
    lm = SemanticLM(cfg).eval()
    assert cfg.controls == ("bpm", "key") and cfg.n_cond == cfg.n_prefix + 2
    prefix = torch.randint(0, 32, (1, cfg.n_prefix))
    tokens = torch.randint(0, 64, (1, 8))
    with_ctl = lambda b, k: torch.cat([prefix, torch.tensor([[b, k]])], 1)  # noqa: E731
    with torch.no_grad():
        base = lm(with_ctl(cfg.bpm_token(120), 14), tokens)
        other_bpm = lm(with_ctl(cfg.bpm_token(80), 14), tokens)
        other_key = lm(with_ctl(cfg.bpm_token(120), 3), tokens)
        null = lm(with_ctl(NULL_CONTROL, NULL_CONTROL), tokens)
        short = lm(prefix, tokens)  # (B, n_prefix): controls not given = null
    for other in (other_bpm, other_key, null):
        assert (other - base).abs().max() > 1e-4
    torch.testing.assert_close(short, null, atol=0, rtol=0)
    # the control embeddings are zero for null (the null prefix rule)
    emb = lm.embed_prefix(lm.condition(torch.full((1, cfg.n_prefix), NULL_PREFIX)))
    assert emb.shape == (1, cfg.n_cond, 64) and not emb.any()
    with pytest.raises(ValueError, match="bpm control"):
        lm(with_ctl(40, 0), tokens)
    with pytest.raises(ValueError, match="key control"):
        lm(with_ctl(0, 24), tokens)
    with pytest.raises(ValueError):
        SemanticLM(cfg_of())(with_ctl(0, 0), tokens)  # no controls: n_prefix columns only


def test_decoding_with_controls_matches_full_forward_across_rebuilds_and_guidance() -> None:
    cfg = cfg_of(**CTL)
    lm = SemanticLM(cfg).eval()
    controls = torch.tensor([[5, 14], [30, NULL_CONTROL]])
    prefix = torch.cat([torch.randint(0, 32, (2, cfg.n_prefix)), controls], 1)
    tokens = torch.randint(0, 64, (2, 50))

    def full_next(p: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return lm(p, torch.cat([window, window[:, :1]], 1))[:, window.shape[1]]

    g = 2.5
    state = lm.start(prefix, prompt_tokens=tokens[:, :5], guidance=g)
    assert state.prefix.shape == (4, cfg.n_cond) and (state.prefix[2:] == -1).all()  # null prefix + controls
    null = torch.full_like(prefix, -1)
    for j in range(5, 50):
        window = state.window[:2]
        cond = torch.log_softmax(full_next(prefix, window), -1)
        uncond = torch.log_softmax(full_next(null, window), -1)
        torch.testing.assert_close(state.next_logits(), uncond + g * (cond - uncond), atol=1e-4, rtol=0)
        lm.step(state, tokens[:, j])
    assert state.n_rebuilds >= 4  # window 15, keep 6
    plain = lm.start(prefix, prompt_tokens=tokens[:, :5])
    for j in range(5, 30):
        torch.testing.assert_close(plain.logits, full_next(prefix, plain.window), atol=ATOL, rtol=0)
        lm.step(plain, tokens[:, j])


ECHO = dict(CTL, beat_echo=3)


def test_beat_echo_is_zero_at_init_and_reads_the_tokens_whole_beats_back() -> None:
    torch.manual_seed(5)
    plain = SemanticLM(cfg_of(**CTL)).eval()
    torch.manual_seed(5)
    echo = SemanticLM(cfg_of(**ECHO, max_len=80, window_keep=40)).eval()
    old, new = plain.state_dict(), echo.state_dict()
    assert set(new) == set(old) | {"echo_proj"} and not new["echo_proj"].any()
    for k, t in old.items():  # drawn after the other parameters, without a draw: old init unchanged
        assert torch.equal(new[k], t), k
    cfg = echo.config
    prefix = torch.randint(0, 32, (2, cfg.n_prefix))
    cond = torch.cat([prefix, torch.tensor([[cfg.bpm_token(120), 3], [NULL_CONTROL, 3]])], 1)
    lags = echo.echo_lags(cond)
    beat = 60 * 25 / cfg.bpm_of_token(cfg.bpm_token(120))  # tokens per beat at the bucket centre
    assert lags[0].tolist() == [round(beat), round(2 * beat), round(4 * beat)] and not lags[1].any()
    tokens = torch.randint(0, 64, (2, 70))
    with torch.no_grad():
        base = echo(cond, tokens)
        torch.testing.assert_close(echo(cond, tokens)[:, :16], plain(cond, tokens[:, :16]), atol=1e-6, rtol=0)
        echo.echo_proj.normal_(0, 0.3)
        moved = echo(cond, tokens)
    lag = int(lags[0, 0])
    # row 0 (120 BPM): slots before the first whole beat see no echo, later ones do
    torch.testing.assert_close(moved[0, :lag], base[0, :lag], atol=1e-6, rtol=0)
    assert (moved[0, lag:] - base[0, lag:]).abs().max() > 1e-3
    torch.testing.assert_close(moved[1], base[1], atol=1e-6, rtol=0)  # null BPM: no echo
    # the echo of the slot predicting u_j reads u_{j - lag}: changing that token changes it
    j = lag + 5
    other = tokens.clone()
    other[0, j - lag] = (other[0, j - lag] + 1) % 64
    with torch.no_grad():
        changed = echo(cond, other)
    assert (changed[0, j] - moved[0, j]).abs().max() > 1e-4


def test_beat_echo_decoding_matches_full_forward_across_rebuilds_and_guidance() -> None:
    cfg = cfg_of(**ECHO, max_len=60, window_keep=30)
    lm = SemanticLM(cfg).eval()
    with torch.no_grad():
        lm.echo_proj.normal_(0, 0.3)
    controls = torch.tensor([[cfg.bpm_token(170), 2], [5, 14]])
    prefix = torch.cat([torch.randint(0, 32, (2, cfg.n_prefix)), controls], 1)
    tokens = torch.randint(0, 64, (2, 140))

    def full_next(p: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return lm(p, torch.cat([window, window[:, :1]], 1))[:, window.shape[1]]

    g = 2.0
    state = lm.start(prefix, prompt_tokens=tokens[:, :20], guidance=g)
    null = torch.full_like(prefix, -1)
    for j in range(20, 140):
        window = state.window[:2]
        cond = torch.log_softmax(full_next(prefix, window), -1)
        uncond = torch.log_softmax(full_next(null, window), -1)
        torch.testing.assert_close(state.next_logits(), uncond + g * (cond - uncond), atol=1e-4, rtol=0)
        lm.step(state, tokens[:, j])
    assert state.n_rebuilds >= 3


def test_beat_echo_needs_the_bpm_control() -> None:
    with pytest.raises(ValueError, match="BPM control"):
        cfg_of(beat_echo=2)
    with pytest.raises(ValueError, match="beat_echo"):
        cfg_of(**dict(CTL, beat_echo=5))


def test_bpm_buckets_are_log_spaced_and_clamped() -> None:
    cfg = cfg_of(bpm_buckets=40)
    width = (cfg.bpm_max / cfg.bpm_min) ** (1 / 40)
    assert width == pytest.approx(1.0411, abs=1e-4)
    assert cfg.bpm_token(40) == 0 and cfg.bpm_token(199.9) == 39
    assert cfg.bpm_token(10) == 0 and cfg.bpm_token(400) == 39  # outside the range: end buckets
    for bpm in (47.0, 60.0, 85.0, 120.0, 141.0, 174.0):
        centre = cfg.bpm_of_token(cfg.bpm_token(bpm))
        assert abs(centre / bpm - 1) <= math.sqrt(width) - 1 + 1e-9  # within half a bucket (2.0 %)
    toks = [cfg.bpm_token(b) for b in range(40, 201)]
    assert toks == sorted(toks) and set(toks) == set(range(40))
    assert cfg.control_tokens(None, None) == [NULL_CONTROL]
    for bad in (dict(bpm_buckets=-1), dict(key_tokens=12), dict(bpm_min=200)):
        with pytest.raises(ValueError):
            cfg_of(**bad)


# ---- parsing -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prompt, bpm, key",
    [
        ("dark trap beat 140 bpm", 140.0, None),
        ("lofi at 85 BPM, in D minor", 85.0, "D minor"),
        ("house 120bpm F# major", 120.0, "F# major"),
        ("Bb min ballad", None, "Bb minor"),
        ("cinematic strings in a minor", None, "A minor"),
        ("E-flat major waltz, 92.5 beats per minute", 92.5, "Eb major"),
        ("tempo 128, key of c# min", 128.0, "C# minor"),
        ("BPM: 98", 98.0, None),
        ("warm jazz piano", None, None),
        ("a minor change of mood, 1000 bpm", None, None),  # lowercase tonic without "in"; out of range
        ("I am here at 12 bpm", None, None),
        ("Gb major (141 bpm)", 141.0, "F# major"),  # enharmonic: one index
    ],
)
def test_prompt_parser(prompt: str, bpm: float | None, key: str | None) -> None:
    c = find_controls(prompt)
    assert c.bpm == bpm and c.key_name == key


def test_key_strings_and_clip_attributes() -> None:
    assert [parse_key(k) for k in ("C major", "D minor", "Bb min", "eb", "B", "F#m", "H minor")] == [
        0, 14, 22, 3, 11, None, None]
    assert key_name(14) == "D minor"
    assert clip_controls({"bpm": 120, "key": "Eb minor"}) == find_controls("120 bpm in Eb minor")
    assert clip_controls({"bpm": 96, "tonic": "C#", "mode": "minor"}).key == 13
    assert clip_controls({}).bpm is None and clip_controls({"bpm": "fast"}).bpm is None
    assert prompt_with_controls("piano", 92.0, "A minor") == "piano, 92 bpm, A minor"
    assert prompt_with_controls("piano 92 bpm", 92.0, None) == "piano 92 bpm"


# ---- generation / CLI ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from melody_core.checkpoint import random_bundle

    root = tmp_path_factory.mktemp("ctl")
    plain, ctl = root / "plain", root / "ctl"
    random_bundle(plain, "tiny", overrides=MICRO_OVERRIDES)
    over = {**MICRO_OVERRIDES, "lm": {**MICRO_OVERRIDES["lm"], **CTL, "prefix_dropout": 0.1}}
    random_bundle(ctl, "tiny", overrides=over)
    return {"plain": plain, "ctl": ctl}


def test_generation_passes_controls_explicit_over_parsed(bundles: dict[str, Path]) -> None:
    from melody_core.generation.pipeline import MelodyPipeline
    from melody_core.generation.types import GenerationSettings

    pipe = MelodyPipeline.load(bundles["ctl"], device="cpu", threads=1)
    m, cfg = pipe.models, pipe.models.lm.config
    assert pipe.controls == ("bpm", "key")
    prompt = "warm piano at 120 bpm in D minor"
    p = m.condition(prompt, None, 0.5)
    assert p.shape == (1, cfg.n_cond) and p[0, -2:].tolist() == [cfg.bpm_token(120), 14]
    assert m.condition(prompt, None, 0.5, 90.0, "F# major")[0, -2:].tolist() == [cfg.bpm_token(90), 6]
    assert m.condition("warm piano", None, 0.5)[0, -2:].tolist() == [NULL_CONTROL, NULL_CONTROL]
    overridden = m.condition(prompt, None, 0.5, 60.0)  # MuLan still reads the prompt as written
    torch.testing.assert_close(p[:, : cfg.n_prefix], overridden[:, : cfg.n_prefix], atol=0, rtol=0)
    s = GenerationSettings(prompt=prompt, seconds=1.0, steps=1, seed=3, key="Bb min")
    r = pipe.generate(s)
    assert r.metadata["controls"] == {"bpm": 120.0, "key": "Bb minor"}
    other = pipe.generate(GenerationSettings(prompt=prompt, seconds=1.0, steps=1, seed=3, key="E major"))
    assert not (r.audio == other.audio).all()  # the key token reached the LM


def test_lm_without_controls_gets_explicit_values_as_prompt_text(bundles: dict[str, Path]) -> None:
    from melody_core.generation.pipeline import MelodyPipeline
    from melody_core.generation.types import GenerationSettings

    pipe = MelodyPipeline.load(bundles["plain"], device="cpu", threads=1)
    m = pipe.models
    assert pipe.controls == ()
    torch.testing.assert_close(m.condition("piano", None, 0.5, 92.0, "A minor"),
                               m.condition("piano, 92 bpm, A minor", None, 0.5), atol=0, rtol=0)
    assert m.condition("piano", None, 0.5).shape == (1, m.lm.config.n_prefix)
    r = pipe.generate(GenerationSettings(prompt="piano", seconds=1.0, steps=1, seed=3))
    assert "controls" not in r.metadata and r.metadata["settings"]["bpm"] is None


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--bpm", "fast"], "--bpm must be a number"),
        (["--bpm", "0"], "--bpm must be a number"),
        (["--bpm", "nan"], "--bpm must be a number"),
        (["--key", "H minor"], "unknown key 'H minor'"),
        (["--key", ""], "unknown key"),
    ],
)
def test_cli_rejects_bad_bpm_and_key(extra: list[str], message: str, bundles: dict[str, Path], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    from melody_core.cli import main

    out = tmp_path / "x.wav"
    code = main(["generate", "p", "-o", str(out), "--bundle", str(bundles["ctl"]), *extra])
    _, err = capsys.readouterr()
    assert code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not out.exists()


def test_cli_bpm_and_key_reach_the_metadata(bundles: dict[str, Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from melody_core.audio import read_metadata
    from melody_core.cli import main

    out = tmp_path / "x.wav"
    code = main(["generate", "soft piano 100 bpm", "-o", str(out), "--bundle", str(bundles["ctl"]), "--bpm",
                 "120", "--key", "D minor", "--seconds", "1", "--steps", "1", "--seed", "1", "-q"])
    capsys.readouterr()
    assert code == 0
    tags = read_metadata(out)
    settings = json.loads(tags["settings"])
    assert settings["bpm"] == 120.0 and settings["key"] == "D minor"
    assert json.loads(tags["controls"]) == {"bpm": 120.0, "key": "D minor"}


# ---- trainer -------------------------------------------------------------------------------------

KEYS = ["C major", "D minor", "F# major", "Bb minor", "E minor", "Ab major", "G major", "B minor"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny generated corpus whose clips carry bpm / key attributes (clip 0: none; clip 1: tonic and
    mode only), and upstream + a plain (no controls) LM run trained on it."""
    from melody_core.commands.train import main
    from melody_core.commands.train_smoke import stage_argv
    from melody_core.data.corpus import read_corpus, write_records
    from melody_core.train.data import write_synthetic_corpus

    root = tmp_path_factory.mktemp("lmctl")
    data = write_synthetic_corpus(root / "corpus", n_train=6, n_valid=2, seconds=1.0)
    records = read_corpus(data)
    for i, rec in enumerate(records):
        if i == 1:
            rec.attributes = {"bpm": 96, "tonic": "C#", "mode": "minor"}
        elif i:
            rec.attributes = {"bpm": 60 + 15 * i, "key": KEYS[i], "kind": "arrangement"}
    write_records(data / "captions.jsonl", records)
    for stage in ("ssl", "kmeans", "mulan", "lm"):
        assert main(stage_argv(stage, data, root / "runs")) == 0, stage
    return root


def _lm_state(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)["models"]["lm"]


def test_init_from_an_lm_without_controls_then_two_steps(runs: Path) -> None:
    from melody_core.commands.train import main
    from melody_core.commands.train_smoke import stage_argv
    from melody_core.train.metrics import read_metrics

    out = runs / "lm_ctl"
    argv = stage_argv("lm", runs / "corpus", runs / "runs", "--init-from", str(runs / "runs" / "lm"),
                      "--set", "bpm_buckets=40", "--set", "key_tokens=24", "--control-dropout", "0.3",
                      "--steps", "2", "--lr", "1e-12", "--warmup", "0", out=out)
    assert main(argv) == 0
    run = json.loads((out / "run.json").read_text())
    old, new = _lm_state(runs / "runs" / "lm"), _lm_state(out)
    assert set(new) == set(old) | {"bpm_embed.weight", "key_embed.weight"}
    for k, t in old.items():  # every old weight loaded (lr 1e-12: unchanged to 1e-6)
        assert torch.allclose(new[k], t, atol=1e-6), k
    assert new["bpm_embed.weight"].shape[0] == 40 and new["key_embed.weight"].shape[0] == 24
    assert 0.005 < float(new["bpm_embed.weight"].std()) < 0.05  # fresh N(0, 0.02) init
    assert run["init_from"]["hash"]
    assert run["config"]["bpm_buckets"] == 40 and run["config"]["key_tokens"] == 24
    rows = [r for r in read_metrics(out / "metrics.csv") if r["split"] == "valid"]
    assert rows and all(math.isfinite(float(r[k])) for r in rows for k in ("loss", "loss_nullctl"))
    # a config whose control tables do not match the init's: one-line error, exit 2
    bad = stage_argv("lm", runs / "corpus", runs / "runs", "--init-from", str(out), "--set", "bpm_buckets=20",
                     "--steps", "1", out=runs / "lm_bad")
    assert main(bad) == 2
    # beat echo added to an LM with controls: its projections start at zero, every old weight loads
    echo_out = runs / "lm_echo"
    argv = stage_argv("lm", runs / "corpus", runs / "runs", "--init-from", str(out),
                      "--set", "bpm_buckets=40", "--set", "key_tokens=24", "--set", "beat_echo=2",
                      "--steps", "1", "--lr", "1e-12", "--warmup", "0", out=echo_out)
    assert main(argv) == 0
    echoed = _lm_state(echo_out)
    assert set(echoed) == set(new) | {"echo_proj"} and echoed["echo_proj"].abs().max() < 1e-6
    for k, t in new.items():
        assert torch.allclose(echoed[k], t, atol=1e-6), k


def test_clip_labels_and_control_dropout(runs: Path) -> None:
    from melody_core.data.corpus import read_corpus
    from melody_core.train.data import Item
    from melody_core.train.lm import LMStage, LMTraining

    cfg = cfg_of(**CTL)
    records = read_corpus(runs / "corpus")
    labels = LMStage._clip_labels(cfg, records)  # noqa: SLF001
    assert labels.shape == (len(records), 2)
    assert labels[0].tolist() == [NULL_CONTROL, NULL_CONTROL]
    assert labels[1].tolist() == [cfg.bpm_token(96), 13]
    assert labels[3].tolist() == [cfg.bpm_token(105), parse_key(KEYS[3])]
    stage = LMStage()
    stage.ctx = SimpleNamespace(config=cfg, opts=SimpleNamespace(seed=0), dist=SimpleNamespace(rank=0),
                                training=LMTraining(control_dropout=0.5))
    items = [Item(3, 0, 0.5)] * 64
    audio = [torch.arange(12)] * 63 + [torch.full((12,), NULL_PREFIX)]
    out = torch.stack(stage._controls(items, labels, audio, step=7))  # noqa: SLF001
    assert out.shape == (64, 14) and (out[-1] == -1).all()  # null prefix: null controls too
    ctl = out[:-1, 12:]
    dropped = (ctl == NULL_CONTROL).float().mean(0)
    assert ((ctl == labels[3]) | (ctl == NULL_CONTROL)).all()
    assert (0.25 < dropped).all() and (dropped < 0.75).all()
    again = torch.stack(stage._controls(items, labels, audio, step=7))  # noqa: SLF001
    assert torch.equal(out, again)  # same step: same draws (resumable)
    valid = torch.stack(stage._controls(items, labels, audio, step=None))  # noqa: SLF001
    assert (valid[:-1, 12:] == labels[3]).all()


# ---- app -----------------------------------------------------------------------------------------


def test_app_fields_set_settings_when_the_lm_has_controls(qtbot) -> None:
    from app.views.prompt_panel import PromptPanel

    panel = PromptPanel()
    qtbot.addWidget(panel)
    panel.prompt.setPlainText("warm piano")
    panel.bpm.setValue(120)
    panel.key.setCurrentIndex(panel.key.findData("D minor"))
    s = panel.settings()  # no controls (today's bundles): written into the prompt, fields unset
    assert s.prompt == "warm piano, 120 bpm, D minor" and s.bpm is None and s.key is None
    panel.set_explicit_controls(("bpm", "key"))
    s = panel.settings()
    assert s.prompt == "warm piano" and s.bpm == 120.0 and s.key == "D minor"
    panel.set_explicit_controls(("bpm",))  # an LM with only a BPM control: the key stays text
    s = panel.settings()
    assert s.prompt == "warm piano, D minor" and s.bpm == 120.0 and s.key is None
    panel.bpm.setValue(0)
    panel.apply_settings({"prompt": "x", "bpm": 90.0, "key": "F# major"})
    assert panel.musical() == (90.0, "F# major")


def test_a_run_saved_before_the_control_fields_resumes(runs: Path) -> None:
    """The lead's LM run of this session was started by code without these config fields."""
    import shutil

    from melody_core.commands.train import main
    from melody_core.commands.train_smoke import stage_argv

    old = runs / "lm_old"
    shutil.copytree(runs / "runs" / "lm", old)
    run = json.loads((old / "run.json").read_text())
    for k in ("bpm_buckets", "bpm_min", "bpm_max", "key_tokens"):
        del run["config"][k]
    (old / "run.json").write_text(json.dumps(run))
    assert main(stage_argv("lm", runs / "corpus", runs / "runs", "--steps", "6", out=old)) == 0
    assert json.loads((old / "run.json").read_text())["config"]["bpm_buckets"] == 0
    changed = stage_argv("lm", runs / "corpus", runs / "runs", "--steps", "7", "--set", "n_layers=2", out=old)
    assert main(changed) == 2  # another config is still refused


def test_init_weights_from_the_committed_bundle_lm() -> None:
    """The committed bundle's LM (v2: BPM / key controls and the beat echo) continues training: its
    weights load into its own config, and an LM without the echo loads into one with it (fresh zero
    projections), as `--init-from` does."""
    from melody_core.generation.pipeline import DEFAULT_BUNDLE
    from melody_core.train.lm import LMStage
    from melody_core.train.upstream import load_component

    init = load_component(DEFAULT_BUNDLE, "lm", torch.device("cpu"))
    assert init.config.controls == ("bpm", "key") and init.config.beat_echo > 0
    stage = LMStage()
    stage.ctx = SimpleNamespace(init=init)
    model = SemanticLM(init.config)
    stage.init_weights(model)
    old = init.model.state_dict()
    assert set(model.state_dict()) == set(old)
    assert all(torch.equal(model.state_dict()[k], t) for k, t in old.items())
    # the same LM without the echo, as an init for one with it
    plain_cfg = LMConfig.from_dict({**init.config.to_dict(), "beat_echo": 0})
    plain = SemanticLM(plain_cfg)
    plain.load_state_dict({k: t for k, t in old.items() if k != "echo_proj"})
    stage.ctx = SimpleNamespace(init=SimpleNamespace(model=plain))
    echo = SemanticLM(init.config)
    stage.init_weights(echo)
    assert not echo.state_dict()["echo_proj"].any()
    assert all(torch.equal(echo.state_dict()[k], t) for k, t in plain.state_dict().items())


def test_control_dropout_is_a_trainer_option() -> None:
    """`control_dropout` is not part of the LM config (nor its hash); a config written with it loads."""
    from melody_core.config import ConfigError
    from melody_core.train.lm import LMTraining

    with pytest.raises(ConfigError):
        LMTraining(control_dropout=1.5)
    old = {**LMConfig(**CTL).to_dict(), "control_dropout": 0.2}
    assert LMConfig.from_dict(old) == LMConfig(**CTL)
    assert LMConfig.moved_to_trainer(old) == {"control_dropout": 0.2}
