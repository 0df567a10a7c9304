"""The trainer end to end on a synthetic corpus (in process): every stage, export, --init-from,
resume rules, the crop sampler, CLI errors."""

import argparse
import json
import math
from pathlib import Path

import pytest
import torch

from melody_core.checkpoint import load_bundle
from melody_core.commands import CLIError
from melody_core.commands.train import main, options_from_args, register, run_stage
from melody_core.commands.train_smoke import SMOKE_RUN, run_pipeline, stage_argv
from melody_core.train.data import CropSampler
from melody_core.train.loop import train
from melody_core.train.metrics import read_metrics
from melody_core.train.state import module_hash


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pipeline")
    run_pipeline(root)
    return root


def _args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["train", *argv])


def test_every_stage_trains_and_exports_one_bundle(smoke: Path) -> None:
    bundle = load_bundle(smoke / "bundle")
    assert set(bundle.models) == {"vae", "ssl", "kmeans", "mulan", "lm", "dpd"}
    runs = smoke / "runs"
    dpd_run = json.loads((runs / "dpd" / "run.json").read_text())
    scale = dpd_run["export_meta"]["latent_scale"]
    assert scale > 0 and bundle.meta["latent_scale"] == pytest.approx(scale)
    for name, (steps, _, _) in SMOKE_RUN.items():
        info = bundle.meta["stages"][name]
        assert info["step"] == steps and info["wall_s"] >= 0
        assert info["data"]["train_clips"] == 6 and info["hardware"]["device"] == "cpu"
        assert info["hash"] == module_hash(bundle.models[name])
        rows = read_metrics(runs / name / "metrics.csv")
        assert [int(r["step"]) for r in rows if r["split"] == "train"] == list(range(1, steps + 1))
        assert any(r["split"] == "valid" for r in rows)
        key = "inertia" if name == "kmeans" else "loss"
        assert all(math.isfinite(float(r[key])) for r in rows)
    # the LM/DPD were trained on exactly the exported upstream weights
    assert bundle.meta["stages"]["lm"]["upstream"]["kmeans"]["hash"] == module_hash(bundle.models["kmeans"])
    assert bundle.meta["stages"]["dpd"]["upstream"]["vae"]["hash"] == module_hash(bundle.models["vae"])
    # caches were built once per (kind, upstream) and hold one file per clip
    caches = sorted(p.name.split("-")[0] for p in (runs / "cache").iterdir())
    assert caches == ["latents", "mulan", "tokens"]
    assert all(len(list(p.glob("*.safetensors"))) == 8 for p in (runs / "cache").iterdir())


def test_init_from_bundle_keeps_weights_and_latent_scale(smoke: Path) -> None:
    runs, out = smoke / "runs", smoke / "init_dpd"
    argv = stage_argv(
        "dpd",
        smoke / "corpus",
        runs,
        "--init-from",
        str(smoke / "bundle"),
        "--steps",
        "1",
        "--lr",
        "1e-12",
        "--warmup",
        "0",
        out=out,
    )
    assert main(argv) == 0
    bundle = load_bundle(smoke / "bundle")
    run = json.loads((out / "run.json").read_text())
    assert run["init_from"]["hash"] == module_hash(bundle.models["dpd"])
    assert run["export_meta"]["latent_scale"] == pytest.approx(bundle.meta["latent_scale"])
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["models"]["dpd"]
    for key, t in bundle.models["dpd"].state_dict().items():
        assert torch.allclose(state[key], t, atol=1e-6), key


def test_export_refuses_runs_trained_on_other_upstream(smoke: Path) -> None:
    runs = smoke / "runs"
    other = smoke / "kmeans_other"
    assert main(stage_argv("kmeans", smoke / "corpus", runs, "--seed", "5", out=other)) == 0
    parts = [str(runs / "ssl"), str(other), str(runs / "mulan"), str(runs / "lm")]
    args = _args(["export", *parts, "--out", str(smoke / "bad")])
    with pytest.raises(CLIError, match="lm was trained on another kmeans"):
        args.func(args)
    assert not (smoke / "bad").exists()
    assert main(["export", *parts, "--out", str(smoke / "forced"), "--allow-mismatch"]) == 0
    assert load_bundle(smoke / "forced").meta["mismatches"]


def test_resume_rules(smoke: Path) -> None:
    runs = smoke / "runs"
    out = smoke / "rules_vae"
    first = stage_argv("vae", smoke / "corpus", runs, "--steps", "2", out=out)
    assert main([a for a in first if a != "--no-plot"]) == 0
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # same command again: nothing left to do, the checkpoint is untouched
    assert main(stage_argv("vae", smoke / "corpus", runs, "--steps", "2", out=out)) == 0
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["step"] == 2
    # more steps: continues from step 2
    assert main(stage_argv("vae", smoke / "corpus", runs, "--steps", "3", out=out)) == 0
    rows = [r for r in read_metrics(out / "metrics.csv") if r["split"] == "train"]
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    # another model config cannot resume this run...
    bad = stage_argv("vae", smoke / "corpus", runs, "--steps", "4", "--set", "kl_weight=0.5", out=out)
    with pytest.raises(CLIError, match="config differs"):
        run_stage(_args(bad))
    # ...but --no-resume starts over
    assert main([*bad, "--no-resume"]) == 0
    assert [int(r["step"]) for r in read_metrics(out / "metrics.csv") if r["split"] == "train"] == [
        1,
        2,
        3,
        4,
    ]


def test_wall_clock_budget_and_hubert_objective(smoke: Path) -> None:
    runs = smoke / "runs"
    argv = stage_argv("ssl", smoke / "corpus", runs, "--objective", "hubert", out=smoke / "hubert")
    i = argv.index("--steps")
    argv = argv[:i] + argv[i + 2 :]  # no step limit: the budget stops it
    summary = train(options_from_args(_args([*argv, "--minutes", "0.08"])))
    assert summary["stopped"] == "time budget" and summary["step"] >= 1
    state = torch.load(smoke / "hubert" / "checkpoints" / "last.pt", weights_only=True)
    assert state["extra"]["hubert_centroids"].shape == (8, 128)
    rows = [r for r in read_metrics(smoke / "hubert" / "metrics.csv") if r["split"] == "train"]
    assert len(rows) == summary["step"] and all(float(r["accuracy"]) >= 0 for r in rows)


def test_user_errors_are_one_line_cli_errors(smoke: Path, tmp_path: Path) -> None:
    runs = smoke / "runs"
    no_up = stage_argv("lm", smoke / "corpus", tmp_path / "nothing", out=tmp_path / "lm")
    with pytest.raises(CLIError, match="needs a trained 'ssl'"):
        run_stage(_args(no_up))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CLIError, match="no audio clips"):
        run_stage(_args(stage_argv("vae", tmp_path / "empty", runs, out=tmp_path / "v")))
    with pytest.raises(CLIError, match="unknown field"):
        run_stage(_args(stage_argv("vae", smoke / "corpus", runs, "--set", "bogus=1", out=tmp_path / "v")))
    with pytest.raises(CLIError, match="at least 5.00 s"):
        run_stage(_args(stage_argv("vae", smoke / "corpus", runs, "--crop-seconds", "5", out=tmp_path / "v")))
    with pytest.raises(CLIError, match="set by the upstream"):
        run_stage(
            _args(stage_argv("lm", smoke / "corpus", runs, "--set", "vocab_size=7", out=tmp_path / "l"))
        )


def test_sampler_shards_one_global_stream_and_resumes_exactly() -> None:
    lengths = [50, 7, 120, 33, 80]  # the 7-unit clip is shorter than the crop: never drawn
    single = CropSampler(lengths, crop=10, batch=6, seed=3, align=2)
    ranks = [CropSampler(lengths, crop=10, batch=3, world=2, rank=r, seed=3, align=2) for r in range(2)]
    for _ in range(25):  # several epochs
        items = single.next()
        assert items == ranks[0].next() + ranks[1].next()
        assert all(it.clip != 1 and it.offset % 2 == 0 and it.offset + 10 <= lengths[it.clip] for it in items)
    state = single.state_dict()
    expected = [single.next() for _ in range(5)]
    fresh = CropSampler(lengths, crop=10, batch=6, seed=3, align=2)
    fresh.load_state_dict(state)
    assert [fresh.next() for _ in range(5)] == expected
    counts = torch.bincount(torch.tensor([it.clip for _ in range(50) for it in fresh.next()]), minlength=5)
    assert counts[2] > counts[0] > counts[3] > 0 and counts[1] == 0  # drawn in proportion to length


def test_decoder_only_vae_finetune_keeps_latents_and_exports(smoke: Path) -> None:
    runs, out = smoke / "runs", smoke / "vae_decoder_only"
    base = load_bundle(smoke / "bundle").models["vae"]
    argv = stage_argv("vae", smoke / "corpus", runs, "--init-from", str(smoke / "bundle"), "--steps", "2",
                      "--freeze-encoder", "--adversarial-start-step", "0", out=out)
    assert main(argv) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["training"]["freeze_encoder"] is True and run["training"]["adversarial_start_step"] == 0
    assert "freeze_encoder" not in run["config"]  # trainer options stay out of the model config
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["models"]["vae"]
    enc = {k: v for k, v in state.items() if k.startswith("encoder.")}
    dec = {k: v for k, v in state.items() if k.startswith("decoder.")}
    ref = base.state_dict()
    assert enc and all(torch.equal(v, ref[k]) for k, v in enc.items())  # encoder untouched
    assert any(not torch.equal(v, ref[k]) for k, v in dec.items())  # decoder trained
    # the DPD was trained on the original VAE: same encoder, same latents -> no mismatch
    parts = [str(out), *(str(runs / s) for s in SMOKE_RUN if s != "vae")]
    assert main(["export", *parts, "--out", str(smoke / "decoder_only")]) == 0
    assert "mismatches" not in load_bundle(smoke / "decoder_only").meta
    # same model config as the plain run's VAE: the trainer options do not enter the model hash
    vae_cfg = lambda b: json.loads((b / "config.json").read_text())["components"]["vae"]["config"]  # noqa: E731
    assert vae_cfg(smoke / "decoder_only") == vae_cfg(smoke / "bundle")


def test_freeze_encoder_needs_init_from(smoke: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The old spelling `--set freeze_encoder=true` still reaches the trainer option, with a note."""
    argv = stage_argv("vae", smoke / "corpus", smoke / "runs", "--set", "freeze_encoder=true",
                      out=smoke / "vae_frozen_scratch")
    assert main(argv) == 2
    out = capsys.readouterr()
    assert "--set freeze_encoder=... is deprecated" in out.out and "use --freeze-encoder" in out.out
    assert "--freeze-encoder needs --init-from" in out.err


def test_training_flags_are_the_trainer_options() -> None:
    """Each stage's trainer-option flags are its options dataclass, the fields its model config gave up."""
    from dataclasses import fields

    from melody_core.commands.train import TRAINING_ARGS
    from melody_core.config import component_classes
    from melody_core.train import make_stage

    assert set(TRAINING_ARGS) == {"vae", "lm"}
    for name, flags in TRAINING_ARGS.items():
        stage, (cfg_cls, _) = make_stage(name), component_classes(name)
        names = tuple(f.name for f in fields(stage.training_options))
        assert flags == names == cfg_cls.MOVED_TO_TRAINER
        assert not set(names) & {f.name for f in fields(cfg_cls)}


def test_resume_of_a_run_written_before_the_options_moved(smoke: Path, capsys: pytest.CaptureFixture) -> None:
    """A run folder whose run.json holds the trainer options in its model config (as runs made before
    the move do) resumes with those options, also under the old `--set` spelling; a different
    explicit value is a one-line error."""
    import shutil

    runs, out = smoke / "runs", smoke / "vae_legacy_run"
    base = stage_argv("vae", smoke / "corpus", runs, "--init-from", str(smoke / "bundle"), out=out)
    at = base.index("--adversarial-start-step")
    base = base[:at] + base[at + 2 :]  # no explicit warm-up: it must come from the resumed run
    assert main([*base, "--steps", "1", "--freeze-encoder", "--adversarial-start-step", "0"]) == 0
    run = json.loads((out / "run.json").read_text())
    legacy = dict(run, config={**run["config"], **run.pop("training")})  # the old layout
    (out / "run.json").write_text(json.dumps(legacy))
    frozen = load_bundle(smoke / "bundle").models["vae"].state_dict()
    assert main([*base, "--steps", "2", "--set", "freeze_encoder=true"]) == 0  # the lead's old command line
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] == 2
    encoder = {k: v for k, v in state["models"]["vae"].items() if k.startswith("encoder.")}
    assert encoder and all(torch.equal(v, frozen[k]) for k, v in encoder.items())
    resumed = json.loads((out / "run.json").read_text())["training"]
    assert resumed["freeze_encoder"] is True
    assert resumed["adversarial_start_step"] == 0  # the run's, not the preset's 4000
    capsys.readouterr()
    assert main([*base, "--steps", "3", "--no-freeze-encoder"]) == 2
    err = capsys.readouterr().err
    assert "freeze_encoder differ from the run being resumed" in err and len(err.strip().splitlines()) == 1
    shutil.rmtree(out)


def test_kmeans_on_first_iteration_mel_features(smoke: Path) -> None:
    from melody_core.models.ssl_conformer import MEL_FEATURE_DIM, hubert_frame_features

    runs, out = smoke / "runs", smoke / "kmeans_mel"
    assert main(stage_argv("kmeans", smoke / "corpus", runs, "--set", "layer=-1", out=out)) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["layer"] == -1 and run["config"]["dim"] == MEL_FEATURE_DIM
    ssl = load_bundle(smoke / "bundle").models["ssl"]
    wav = torch.randn(1, 24000)
    assert torch.equal(ssl.extract(wav, layer=-1), hubert_frame_features(wav))
    bad = stage_argv("kmeans", smoke / "corpus", runs, "--set", "layer=-3", out=smoke / "kmeans_bad")
    assert main(bad) == 2


def test_lm_prefix_mix_and_validation_losses(smoke: Path) -> None:
    from melody_core.models.semantic_lm import NULL_PREFIX
    from melody_core.train.data import Item
    from melody_core.train.lm import LMStage

    rows = [r for r in read_metrics(smoke / "runs" / "lm" / "metrics.csv") if r["split"] == "valid"]
    assert all(math.isfinite(float(r[k])) for r in rows for k in ("loss_text", "loss_null"))
    stage = LMStage()
    stage.p_null, stage.p_text, stage.crop, stage.window_s = 0.1, 0.4, 10, 10.0
    audio = [torch.arange(12).view(1, 12)]  # one window of codes
    caps = [torch.stack([torch.full((12,), 100), torch.full((12,), 200)])]  # two captions' codes
    pick = lambda u, c=caps: stage._prefix(Item(0, 0, u), audio, c).tolist()  # noqa: E731
    assert pick(0.05) == [NULL_PREFIX] * 12
    assert pick(0.15) == [100] * 12 and pick(0.45) == [200] * 12  # [0.1, 0.3) caption 0, [0.3, 0.5) 1
    assert pick(0.5) == list(range(12)) and pick(0.99) == list(range(12))
    assert pick(0.2, [torch.zeros(0, 12, dtype=torch.long)]) == list(range(12))  # no captions: audio


def test_vae_output_gain_calibration(smoke: Path) -> None:
    from melody_core.models.vae_gan import AudioVAE
    from melody_core.train.vae import GAIN_GRID_DB

    runs, out = smoke / "runs", smoke / "vae_gain"
    argv = stage_argv("vae", smoke / "corpus", runs, "--init-from", str(smoke / "bundle"), "--steps", "1",
                      "--freeze-encoder", "--calibrate-gain", out=out)
    assert main(argv) == 0
    cal = json.loads((out / "run.json").read_text())["export_meta"]["output_gain_calibration"]
    assert cal["output_gain_db"] in GAIN_GRID_DB and cal["mel_after"] <= cal["mel_before"]
    # scale_output multiplies the decoded waveform exactly (below the magnitude clamp)
    vae = AudioVAE(load_bundle(smoke / "bundle").models["vae"].config).eval()
    z = torch.randn(1, 40, vae.config.latent_dim)
    with torch.no_grad():
        before = vae.decode(z)
        vae.decoder.scale_output(1.5)
        torch.testing.assert_close(vae.decode(z), 1.5 * before, atol=1e-5, rtol=1e-4)


def test_dpd_latent_scale_kept_only_for_the_same_vae() -> None:
    """An init's latent scale is reused only when it was trained on this VAE's encoder."""
    from types import SimpleNamespace

    from melody_core.models.vae_gan import AudioVAE, VAEConfig
    from melody_core.train.dpd import DPDStage
    from melody_core.train.state import encoder_hash

    vae = AudioVAE(VAEConfig.tiny())
    stage = DPDStage.__new__(DPDStage)
    stage.latents = [2.0 * torch.randn(400, 16)]
    estimate = 1.0 / float(torch.cat(stage.latents).std())

    def scale(meta: dict | None) -> float:
        init = None if meta is None else SimpleNamespace(meta=meta)
        up = {"vae": SimpleNamespace(model=vae)}
        ctx = SimpleNamespace(init=init, upstream=up, dist=SimpleNamespace(rank=0))
        return stage._initial_scale(ctx)

    same = encoder_hash(vae)
    assert scale(None) == pytest.approx(estimate)
    assert scale({"latent_scale": 7.0, "vae_encoder_hash": same}) == 7.0  # a run on this VAE
    bundle_meta = {"latent_scale": 7.0, "stages": {"dpd": {"upstream": {"vae": {"encoder_hash": same}}}}}
    assert scale(bundle_meta) == 7.0  # a bundle whose DPD was trained on this VAE
    assert scale({"latent_scale": 7.0, "vae_encoder_hash": "another"}) == pytest.approx(estimate)
    assert scale({"latent_scale": 7.0}) == pytest.approx(estimate)  # unknown VAE: re-estimated
    stage.latent_scale = scale({"latent_scale": 7.0, "vae_encoder_hash": same})
    assert stage.export_meta() == {"latent_scale": 7.0, "vae_encoder_hash": same}


def _distill_argv(smoke: Path, out: Path, teacher: Path, *extra: str) -> list[str]:
    runs = smoke / "runs"
    argv = ["dpd-distill", "--data", str(smoke / "corpus"), "--out", str(out), "--batch-size", "2",
            "--crop-seconds", "0.4", "--threads", "1", "--valid-batches", "1", "--no-plot",
            "--cache-dir", str(runs / "cache"), "--upstream", str(teacher)]  # fmt: skip
    for up in ("vae", "ssl", "kmeans"):
        argv += ["--upstream", str(runs / up)]
    return argv + list(extra)


def test_dpd_v2_guidance_and_progressive_distillation(smoke: Path) -> None:
    """`train dpd --size v2` (patches of 10 frames), then `dpd-distill`: a guidance-input student whose
    rho changes its output, then two progressive rounds (4 -> 2 -> 1 steps), resumed, exported."""
    from melody_core.train.upstream import run_component

    runs = smoke / "runs"
    v2 = smoke / "dpd_v2"
    assert main(stage_argv("dpd", smoke / "corpus", runs, "--size", "v2", "--steps", "2", out=v2)) == 0
    assert json.loads((v2 / "run.json").read_text())["config"]["patch"] == 10
    guided = smoke / "distill_guidance"
    assert main(_distill_argv(smoke, guided, v2, "--steps", "2", "--lr", "1e-2", "--warmup", "0")) == 0
    student = run_component(guided, torch.device("cpu")).model
    assert student.config.guidance_embed and student.config.patch == 10
    z, delta = torch.randn(1, 100, student.config.d_latent), torch.full((1, 100), 0.8)
    tokens = torch.randint(0, student.config.vocab_size, (1, 10))
    with torch.no_grad():
        v1, v4 = student(z, delta, tokens, guidance=1.0), student(z, delta, tokens, guidance=4.0)
    assert (v1 - v4).abs().max() > 0  # rho is an input of the student
    rows = read_metrics(guided / "metrics.csv")
    assert all(math.isfinite(float(r["loss"])) for r in rows) and any(r["split"] == "valid" for r in rows)
    prog = smoke / "distill_progressive"
    flags = ["--phase", "progressive", "--teacher-steps", "4", "--rounds", "2", "--warmup", "0"]
    assert main(_distill_argv(smoke, prog, guided, "--steps", "2", *flags)) == 0
    assert main(_distill_argv(smoke, prog, guided, "--steps", "3", *flags)) == 0  # resumes at step 2
    run = json.loads((prog / "run.json").read_text())
    sampler = run["export_meta"]["dpd_sampler"]
    assert sampler["steps"] == 1 and sampler["guidance_input"]
    assert [int(r["step"]) for r in read_metrics(prog / "metrics.csv") if r["split"] == "train"] == [1, 2, 3]
    other = [*flags, "--teacher-steps", "8", "--steps", "4"]  # the last --teacher-steps wins
    with pytest.raises(CLIError, match="same options"):  # a resumed run keeps its distillation settings
        run_stage(_args(_distill_argv(smoke, prog, guided, *other)))
    assert main(["export", str(prog), "--base", str(smoke / "bundle"), "--out", str(smoke / "v2")]) == 0
    bundle = load_bundle(smoke / "v2")
    assert bundle.configs["dpd"].guidance_embed and bundle.configs["dpd"].patch == 10
    with pytest.raises(CLIError, match="already takes rho"):  # no second guidance phase
        run_stage(_args(_distill_argv(smoke, smoke / "bad_distill", guided, "--steps", "1")))
