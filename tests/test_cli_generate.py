"""`melody generate / continue / inpaint / bench` in process on a shrunken random tiny bundle."""

from __future__ import annotations

import json

import numpy as np
import pytest
from micro_bundle import MICRO_OVERRIDES

from melody_core import SAMPLE_RATE
from melody_core.audio import load_audio, read_metadata
from melody_core.checkpoint import inspect_bundle, random_bundle
from melody_core.cli import main

OVERRIDES = MICRO_OVERRIDES


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("cli") / "tiny"
    random_bundle(path, "tiny", overrides=OVERRIDES)
    return str(path)


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_generate_wav_and_flac_with_metadata(bundle: str, tmp_path, capsys) -> None:
    out = tmp_path / "a.wav"
    code, stdout, _ = run(capsys, "generate", "soft piano", "-o", str(out), "--bundle", bundle,
                          "--seconds", "2", "--seed", "5", "--steps", "3", "--guidance", "2.0",
                          "--device", "cpu", "-q")
    assert code == 0 and "wrote" in stdout
    wav = load_audio(out)
    assert wav.shape == (2 * SAMPLE_RATE,)
    tags = read_metadata(out)
    assert tags["prompt"] == "soft piano" and tags["seed"] == "5" and tags["mode"] == "generate"
    assert tags["model_hash"] == inspect_bundle(bundle).model_hash
    settings = json.loads(tags["settings"])
    assert settings["steps"] == 3 and settings["guidance"] == 2.0 and settings["seed"] == 5
    assert int(tags["nfe"]) == 50 + 3 + 1  # 50 LM tokens, T = 3 steps, one ceil(3/4)-step continuation window
    flac = tmp_path / "a.flac"
    code, _, _ = run(capsys, "generate", "soft piano", "-o", str(flac), "--bundle", bundle, "--seconds", "2",
                     "--seed", "5", "--steps", "3", "--guidance", "2.0", "-q")
    assert code == 0 and read_metadata(flac) == tags
    np.testing.assert_allclose(load_audio(flac).numpy(), wav.numpy(), atol=2e-4)  # 16-bit both


def test_continue_and_inpaint(bundle: str, tmp_path, capsys) -> None:
    src = tmp_path / "src.wav"
    run(capsys, "generate", "drums", "-o", str(src), "--bundle", bundle, "--seconds", "2", "--seed", "1",
        "--steps", "2", "-q")
    original = load_audio(src).numpy()
    cont = tmp_path / "cont.flac"
    code, _, _ = run(capsys, "continue", str(src), "-o", str(cont), "--seconds", "1.5", "--bundle", bundle,
                     "--seed", "2", "--steps", "2", "-q")
    assert code == 0
    out = load_audio(cont).numpy()
    assert len(out) == len(original) + round(1.5 * SAMPLE_RATE)
    np.testing.assert_array_equal(out[: len(original)], original)  # 16-bit PCM in, same PCM out
    assert json.loads(read_metadata(cont)["continued_from_s"]) == 2.0
    inp = tmp_path / "inp.wav"
    code, _, _ = run(capsys, "inpaint", str(src), "--start", "0.5", "--end", "1.0", "-o", str(inp),
                     "--bundle", bundle, "--seed", "3", "--steps", "2", "-q")
    assert code == 0
    out = load_audio(inp).numpy()
    fade = round(0.05 * SAMPLE_RATE)
    np.testing.assert_array_equal(out[: 12000 - fade], original[: 12000 - fade])
    np.testing.assert_array_equal(out[24000 + fade :], original[24000 + fade :])
    assert json.loads(read_metadata(inp)["region_s"]) == [0.5, 1.0]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["generate", "", "-o", "{tmp}/x.wav"], "prompt"),
        (["generate", "   ", "-o", "{tmp}/x.wav"], "prompt"),
        (["generate", "p", "-o", "{tmp}/x.mp3"], ".wav or .flac"),
        (["generate", "p", "-o", "{tmp}/x.wav", "--seconds", "100000"], "length"),
        (["generate", "p", "-o", "{tmp}/x.wav", "--seconds", "-1"], "length"),
        (["generate", "p", "-o", "{tmp}/x.wav", "--steps", "0"], "steps"),
        (["generate", "p", "-o", "{tmp}/x.wav", "--style-audio", "{tmp}/garbage.wav"], "garbage.wav"),
        (["continue", "{tmp}/garbage.wav", "-o", "{tmp}/x.wav"], "garbage.wav"),
        (["continue", "{tmp}/missing.wav", "-o", "{tmp}/x.wav"], "missing.wav"),
        (["continue", "{tmp}/ok.wav", "-o", "{tmp}/x.wav", "--seconds", "0"], "length"),
        (["inpaint", "{tmp}/ok.wav", "--start", "0.5", "--end", "3", "-o", "{tmp}/x.wav"], "outside"),
        (["inpaint", "{tmp}/ok.wav", "--start", "0.8", "--end", "0.2", "-o", "{tmp}/x.wav"], "outside"),
        (["generate", "p", "-o", "{tmp}/x.wav", "--bundle", "{tmp}/no_bundle"], "no_bundle"),
    ],
)
def test_error_paths(argv: list[str], message: str, bundle: str, tmp_path, capsys) -> None:
    (tmp_path / "garbage.wav").write_bytes(b"this is not audio" * 50)
    import soundfile as sf

    sf.write(tmp_path / "ok.wav", np.zeros(SAMPLE_RATE, np.float32), SAMPLE_RATE)
    args = [a.format(tmp=tmp_path) for a in argv]
    if "--bundle" not in args:
        args += ["--bundle", bundle]
    code, out, err = run(capsys, *args)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "x.wav").exists()


def test_bench_json(capsys) -> None:
    code, out, _ = run(capsys, "bench", "--preset", "tiny", "--random-init", "--json", "--seconds", "1",
                       "--steps", "2", "--repeats", "1", "--stream-seconds", "1", "--device", "cpu")
    assert code == 0
    r = json.loads(out)
    keys = ("realtime_factor_10s", "first_chunk_seconds", "streaming_realtime_factor", "nfe", "peak_rss_mb")
    for key in keys:
        assert key in r
    assert r["nfe"] == 25 + 2 and r["nfe_reference"]["musiclm"] == 625
    assert set(r["realtime_factor_10s_by_steps"]) == {"2", "5"}  # --steps and the paper's 5
    assert r["realtime_factor_10s_by_steps"]["2"] == r["realtime_factor_10s"]
    a = r["target_arithmetic"]
    assert a["dpd_gflop_per_guided_step"] > 0 and a["matmul_gflops"] > 0 and a["lm_tokens_per_s"] > 0
    assert a["by_steps"]["5"]["dpd_steps"] == 5 and len(r["load_average"]["start"]) == 3
    code, _, err = run(capsys, "bench", "--preset", "paper")
    assert code == 2 and "--random-init" in err


def test_written_audio_is_levelled_unless_no_levels(bundle: str, tmp_path, capsys, monkeypatch) -> None:
    """Default: -14 LUFS target, true peak <= -1 dBTP, never clipped; --no-levels: the decoder's level.
    The decoder is made to overshoot (x 8) so that the limiter has work to do."""
    from melody_core.audio.levels import integrated_lufs, true_peak_dbtp
    from melody_core.generation.pipeline import MelodyPipeline

    real = MelodyPipeline.generate

    def loud(self, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        result = real(self, *a, **k)
        result.audio = result.audio / max(float(np.abs(result.audio).max()), 1e-6) * 1.8
        return result

    monkeypatch.setattr(MelodyPipeline, "generate", loud)
    args = ["--bundle", bundle, "--seconds", "2", "--seed", "5", "--steps", "2", "-q"]
    assert run(capsys, "generate", "loud", "-o", str(tmp_path / "l.wav"), *args)[0] == 0
    y = load_audio(tmp_path / "l.wav").numpy()
    assert true_peak_dbtp(y, SAMPLE_RATE) <= -1.0 + 0.01  # 16-bit rounding
    assert integrated_lufs(y, SAMPLE_RATE) <= -14.0 + 0.1
    assert run(capsys, "generate", "loud", "-o", str(tmp_path / "raw.flac"), *args, "--no-levels")[0] == 0
    raw = load_audio(tmp_path / "raw.flac").numpy()
    # not loudness-normalised; the overshoot is limited by the writer's full-scale guard, not clipped
    assert integrated_lufs(raw, SAMPLE_RATE) > integrated_lufs(y, SAMPLE_RATE) + 1.0
    assert true_peak_dbtp(raw, SAMPLE_RATE) <= -0.1 + 0.01
    assert not np.isclose(np.abs(raw), 1.0, atol=1e-4).any()
