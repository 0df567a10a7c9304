"""Audio file I/O: formats, rates, channels, odd-but-valid files, typed one-line errors, atomic save,
metadata round trip, resampling. Every file is generated on the fly in tmp_path."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from melody_core.audio import io as audio_io
from melody_core.audio.io import (
    AudioError,
    AudioInfo,
    AudioNotFoundError,
    AudioTooLongError,
    CorruptAudioError,
    EmptyAudioError,
    InvalidSampleRateError,
    MetadataError,
    NonFiniteAudioError,
    NotAudioError,
    UnsupportedFormatError,
    audio_info,
    load_audio,
    read_metadata,
    resample,
    save_audio,
)

SR = 24_000
FREQ = 440.0


def sine(sr: int = SR, seconds: float = 1.0, freq: float = FREQ, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(sr * seconds))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_freq(wav: torch.Tensor | np.ndarray, sr: int = SR) -> float:
    x = np.asarray(wav, dtype=np.float64)
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * sr / len(x))


def write(path: Path, data: np.ndarray, sr: int = SR, **kw) -> Path:
    sf.write(str(path), data, sr, **kw)
    return path


def wav_bytes(rate: int, channels: int = 1, bits: int = 16, frames: int = 100) -> bytes:
    """A hand-made PCM WAV (44-byte header + silence) so that header fields can be set freely."""
    align = channels * bits // 8
    data = b"\x00" * (frames * align)
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * align, align, bits)
    body = (
        b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    )
    return b"RIFF" + struct.pack("<I", len(body)) + body


def truncate(path: Path, keep: float = 0.5) -> Path:
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])
    return path


def assert_one_line_error(err: AudioError, path: Path) -> None:
    msg = str(err)
    assert "\n" not in msg and "\r" not in msg
    assert path.name in msg
    assert "Traceback" not in msg and len(msg) < 200
    assert err.path == path


# ---------------------------------------------------------------- formats, rates, channels


@pytest.mark.parametrize(
    ("fmt", "subtype", "ext", "tol"),
    [
        ("WAV", "PCM_U8", "wav", 1.5 / 128),
        ("WAV", "PCM_16", "wav", 1e-4),
        ("WAV", "PCM_24", "wav", 1e-6),
        ("WAV", "PCM_32", "wav", 1e-6),
        ("WAV", "FLOAT", "wav", 0.0),
        ("WAV", "DOUBLE", "wav", 1e-7),
        ("FLAC", "PCM_16", "flac", 1e-4),
        ("FLAC", "PCM_24", "flac", 1e-6),
    ],
)
def test_lossless_formats_roundtrip(tmp_path: Path, fmt: str, subtype: str, ext: str, tol: float) -> None:
    x = sine()
    p = write(tmp_path / f"a.{ext}", x, format=fmt, subtype=subtype)
    wav = load_audio(p)
    assert wav.dtype == torch.float32 and wav.shape == (SR,)
    assert float((wav - torch.from_numpy(x)).abs().max()) <= tol


@pytest.mark.parametrize(
    ("fmt", "subtype", "ext"), [("OGG", "VORBIS", "ogg"), ("MP3", "MPEG_LAYER_III", "mp3")]
)
def test_lossy_formats_load(tmp_path: Path, fmt: str, subtype: str, ext: str) -> None:
    p = write(tmp_path / f"a.{ext}", sine(), format=fmt, subtype=subtype)
    wav = load_audio(p)
    assert wav.dtype == torch.float32 and wav.dim() == 1
    assert abs(wav.numel() - SR) <= 0.02 * SR
    assert abs(peak_freq(wav) - FREQ) < 5.0
    rms = float(wav.pow(2).mean().sqrt())
    assert abs(rms - 0.5 / np.sqrt(2)) < 0.05  # level preserved


@pytest.mark.parametrize("sr", [8_000, 22_050, 44_100, 48_000, 96_000])
def test_any_rate_is_resampled(tmp_path: Path, sr: int) -> None:
    p = write(tmp_path / f"r{sr}.wav", sine(sr), sr, subtype="FLOAT")
    wav = load_audio(p)
    assert abs(wav.numel() - SR) <= 1
    assert abs(peak_freq(wav) - FREQ) < 2.0
    mid = wav[SR // 10 : -SR // 10]  # away from the filter edges
    assert float(mid.abs().max()) == pytest.approx(0.5, abs=0.01)


def test_load_at_other_target_rate(tmp_path: Path) -> None:
    p = write(tmp_path / "a.wav", sine(), subtype="FLOAT")
    wav = load_audio(p, sample_rate=16_000)
    assert abs(wav.numel() - 16_000) <= 1
    assert abs(peak_freq(wav, 16_000) - FREQ) < 2.0


def test_six_channels_are_averaged(tmp_path: Path) -> None:
    x = sine()
    gains = np.arange(1, 7, dtype=np.float32) / 10.0  # channel c carries (c + 1) / 10 * x
    data = x[:, None] * gains[None, :]  # (T, 6)
    p = write(tmp_path / "six.wav", data, subtype="FLOAT")
    assert audio_info(p).channels == 6
    wav = load_audio(p)
    np.testing.assert_allclose(wav.numpy(), x * gains.mean(), atol=1e-6)


def test_stereo_opposite_phase_downmixes_to_silence(tmp_path: Path) -> None:
    x = sine()
    p = write(tmp_path / "st.flac", np.stack([x, -x], axis=1), format="FLAC")
    assert float(load_audio(p).abs().max()) < 1e-4


def test_six_channel_96k_flac_info_and_load(tmp_path: Path) -> None:
    data = np.repeat(sine(96_000, 0.5)[:, None], 6, axis=1)
    p = write(tmp_path / "surround.flac", data, 96_000, format="FLAC", subtype="PCM_24")
    info = audio_info(p)
    assert info == AudioInfo(
        duration_s=0.5, sample_rate=96_000, channels=6, frames=48_000, format="FLAC", subtype="PCM_24"
    )
    assert abs(load_audio(p).numel() - SR // 2) <= 1


def test_8k_unsigned_8bit(tmp_path: Path) -> None:
    p = write(tmp_path / "u8.wav", sine(8_000), 8_000, subtype="PCM_U8")
    info = audio_info(p)
    assert (info.sample_rate, info.subtype) == (8_000, "PCM_U8")
    wav = load_audio(p)
    assert abs(wav.numel() - SR) <= 1 and abs(peak_freq(wav) - FREQ) < 2.0


# ---------------------------------------------------------------- odd but valid


def test_silence_is_accepted(tmp_path: Path) -> None:
    p = write(tmp_path / "silence.wav", np.zeros(SR, np.float32))
    wav = load_audio(p)
    assert wav.shape == (SR,) and float(wav.abs().max()) == 0.0


@pytest.mark.parametrize("sr", [SR, 44_100])
def test_tiny_50ms_file(tmp_path: Path, sr: int) -> None:
    p = write(tmp_path / "tiny.wav", sine(sr, 0.05), sr)
    wav = load_audio(p)
    assert abs(wav.numel() - SR // 20) <= 1
    assert audio_info(p).duration_s == pytest.approx(0.05, abs=1e-4)


def test_float_beyond_unity_is_not_normalised(tmp_path: Path) -> None:
    x = sine(amp=3.0)
    p = write(tmp_path / "loud.wav", x, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(p).numpy(), x)  # same rate: bit exact
    p48 = write(tmp_path / "loud48.wav", sine(48_000, amp=3.0), 48_000, subtype="FLOAT")
    assert float(load_audio(p48).abs().max()) == pytest.approx(3.0, rel=0.02)


def test_streaming_wav_with_unknown_data_size_is_accepted(tmp_path: Path) -> None:
    raw = bytearray(wav_bytes(SR, frames=240))
    i = raw.find(b"data")
    raw[i + 4 : i + 8] = struct.pack("<I", 0xFFFFFFFF)  # "length unknown", as live recorders leave it
    p = tmp_path / "stream.wav"
    p.write_bytes(bytes(raw))
    assert load_audio(p).numel() == 240


# ---------------------------------------------------------------- bad input -> typed one-line errors


def _nan_wav(p: Path) -> Path:
    x = sine()
    x[100] = np.nan
    return write(p, x, subtype="FLOAT")


def _inf_wav(p: Path) -> Path:
    x = sine()
    x[5] = np.inf
    return write(p, x, subtype="DOUBLE")


def _text_wav(p: Path) -> Path:
    p.write_text("this is a shopping list, not a song\n" * 20)
    return p


def _bytes(p: Path, raw: bytes) -> Path:
    p.write_bytes(raw)
    return p


BAD_FILES = {
    "missing.wav": (lambda p: p, AudioNotFoundError),
    "folder.wav": (lambda p: (p.mkdir(), p)[1], AudioNotFoundError),
    "empty.wav": (lambda p: _bytes(p, b""), EmptyAudioError),
    "no_frames.wav": (lambda p: _bytes(p, wav_bytes(SR, frames=0)), EmptyAudioError),
    "notes.wav": (_text_wav, NotAudioError),
    "random.flac": (lambda p: _bytes(p, np.random.default_rng(0).bytes(4096)), NotAudioError),
    "rate0.wav": (lambda p: _bytes(p, wav_bytes(0)), InvalidSampleRateError),
    "chan0.wav": (lambda p: _bytes(p, wav_bytes(SR, channels=0)), CorruptAudioError),
    "cut.wav": (lambda p: truncate(write(p, sine())), CorruptAudioError),
    "cut_float.wav": (lambda p: truncate(write(p, sine(), subtype="FLOAT"), 0.3), CorruptAudioError),
    "cut.flac": (lambda p: truncate(write(p, sine(), format="FLAC")), CorruptAudioError),
    "cut.ogg": (lambda p: truncate(write(p, sine(), format="OGG"), 0.3), CorruptAudioError),
    "cut_late.ogg": (lambda p: truncate(write(p, sine(seconds=3.0), format="OGG"), 0.8), CorruptAudioError),
    "cut.mp3": (lambda p: truncate(write(p, sine(), format="MP3")), CorruptAudioError),
    "nan.wav": (_nan_wav, NonFiniteAudioError),
    "inf.wav": (_inf_wav, NonFiniteAudioError),
}


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_bad_files_raise_typed_one_line_errors(tmp_path: Path, name: str) -> None:
    make, expected = BAD_FILES[name]
    p = make(tmp_path / name)
    with pytest.raises(expected) as exc:
        load_audio(p)
    assert isinstance(exc.value, AudioError)
    assert_one_line_error(exc.value, p)


# Errors audio_info can find from the header alone (decoding finds NaN and corrupt compressed data).
HEADER_ERRORS = [n for n in BAD_FILES if n not in ("nan.wav", "inf.wav", "cut.flac", "cut.mp3")]


@pytest.mark.parametrize("name", HEADER_ERRORS)
def test_audio_info_raises_same_types(tmp_path: Path, name: str) -> None:
    make, expected = BAD_FILES[name]
    p = make(tmp_path / name)
    with pytest.raises(expected) as exc:
        audio_info(p)
    assert_one_line_error(exc.value, p)


def test_truncated_wav_is_detected_although_libsndfile_shortens_it(tmp_path: Path) -> None:
    p = truncate(write(tmp_path / "cut.wav", sine()))
    assert sf.info(str(p)).frames < SR  # libsndfile alone would just return fewer frames
    with pytest.raises(CorruptAudioError, match="truncated"):
        load_audio(p)


def test_wav_with_one_missing_pad_byte_is_fine(tmp_path: Path) -> None:
    p = write(tmp_path / "a.wav", sine())
    p.write_bytes(p.read_bytes()[:-1])  # less than one frame short: not called truncated
    assert audio_info(p).frames == SR - 1


def test_too_long_is_refused_before_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = write(tmp_path / "long.flac", sine(seconds=2.0), format="FLAC")

    def no_decode(*_args, **_kw):
        raise AssertionError("decoded a file that is too long")

    monkeypatch.setattr(audio_io, "_decode_mono", no_decode)
    with pytest.raises(AudioTooLongError) as exc:
        load_audio(p, max_seconds=1.5)
    assert_one_line_error(exc.value, p)
    assert "2.0 s" in str(exc.value)


@pytest.mark.parametrize("fmt", ["FLAC", "OGG", "MP3"])
@pytest.mark.parametrize("keep", [0.1, 0.6, 0.9])
def test_truncated_compressed_files_are_corrupt(tmp_path: Path, fmt: str, keep: float) -> None:
    p = truncate(write(tmp_path / f"cut.{fmt.lower()}", sine(seconds=3.0), format=fmt), keep)
    with pytest.raises(CorruptAudioError):
        load_audio(p)


def test_tiny_mp3_is_not_called_truncated(tmp_path: Path) -> None:
    p = write(tmp_path / "tiny.mp3", sine(seconds=0.05), format="MP3")
    assert load_audio(p).numel() > 0


def test_max_seconds_boundary(tmp_path: Path) -> None:
    p = write(tmp_path / "one.wav", sine(seconds=1.0))
    assert load_audio(p, max_seconds=1.0).numel() == SR


# ---------------------------------------------------------------- save


@pytest.mark.parametrize("ext", ["wav", "flac"])
def test_save_pcm16_roundtrip(tmp_path: Path, ext: str) -> None:
    x = torch.from_numpy(sine())
    p = save_audio(tmp_path / "deep" / "er" / f"out.{ext}", x)
    info = audio_info(p)
    assert (info.format, info.subtype, info.sample_rate, info.channels) == (ext.upper(), "PCM_16", SR, 1)
    assert float((load_audio(p) - x).abs().max()) < 1e-4
    assert sorted(f.name for f in p.parent.iterdir()) == [p.name]  # no temp file left behind


def test_save_float_keeps_levels_and_pcm_is_limited_not_clipped(tmp_path: Path) -> None:
    from melody_core.audio.levels import true_peak_dbtp

    x = torch.from_numpy(sine(amp=1.5))
    pf = save_audio(tmp_path / "f.wav", x.unsqueeze(0), subtype="FLOAT")  # (1, T) accepted
    assert audio_info(pf).subtype == "FLOAT"
    assert torch.equal(load_audio(pf), x)
    pi = save_audio(tmp_path / "i.wav", x)
    y = load_audio(pi).numpy()
    assert true_peak_dbtp(y, SR) <= audio_io.FULL_SCALE_GUARD_DBTP + 0.05  # 16-bit rounding
    full_scale = np.isclose(np.abs(y), 1.0, atol=1e-4).sum()
    assert full_scale == 0  # a hard clip at 1.0 would leave thousands of samples at full scale
    # limited, not wrapped around or silenced: the waveform still follows the input's shape
    assert np.corrcoef(y, x.numpy())[0, 1] > 0.99


def test_save_other_rate_and_pcm24_flac(tmp_path: Path) -> None:
    p = save_audio(tmp_path / "a.flac", torch.from_numpy(sine(44_100)), 44_100, subtype="PCM_24")
    info = audio_info(p)
    assert (info.sample_rate, info.subtype, info.frames) == (44_100, "PCM_24", 44_100)


@pytest.mark.parametrize(
    ("name", "kw"),
    [("a.mp3", {}), ("a.ogg", {}), ("noext", {}), ("a.flac", {"subtype": "FLOAT"})],
)
def test_save_unsupported_format(tmp_path: Path, name: str, kw: dict) -> None:
    with pytest.raises(UnsupportedFormatError) as exc:
        save_audio(tmp_path / name, torch.zeros(10), **kw)
    assert_one_line_error(exc.value, tmp_path / name)
    assert not (tmp_path / name).exists()


def test_save_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(NonFiniteAudioError):
        save_audio(tmp_path / "nan.wav", torch.tensor([0.0, float("nan")]))
    with pytest.raises(ValueError):
        save_audio(tmp_path / "stereo.wav", torch.zeros(2, 10))
    with pytest.raises(InvalidSampleRateError):
        save_audio(tmp_path / "r0.wav", torch.zeros(10), sample_rate=0)
    with pytest.raises(TypeError):
        save_audio(tmp_path / "m.wav", torch.zeros(10), metadata={"seed": 3})  # type: ignore[dict-item]
    assert list(tmp_path.iterdir()) == []


def test_save_is_atomic_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = save_audio(tmp_path / "keep.wav", torch.from_numpy(sine()))
    before = p.read_bytes()

    def broken_write(self, data):  # the disk fills up mid-write
        raise OSError("No space left on device")

    monkeypatch.setattr(sf.SoundFile, "write", broken_write)
    with pytest.raises(OSError):
        save_audio(p, torch.zeros(SR))
    assert p.read_bytes() == before
    assert [f.name for f in tmp_path.iterdir()] == ["keep.wav"]


def test_save_overwrites_existing(tmp_path: Path) -> None:
    p = save_audio(tmp_path / "a.wav", torch.zeros(100))
    save_audio(p, torch.zeros(200))
    assert audio_info(p).frames == 200


# ---------------------------------------------------------------- metadata

META = {
    "prompt": 'Été jazzy au café — 日本の夏 🎷, "quoted", line\nbreak, a=b; ½',
    "seed": "1234",
    "model": "melody-tiny",
    "empty": "",
    "ключ": "значение",
}


@pytest.mark.parametrize("ext", ["wav", "flac"])
def test_metadata_roundtrip(tmp_path: Path, ext: str) -> None:
    p = save_audio(tmp_path / f"m.{ext}", torch.from_numpy(sine(seconds=0.1)), metadata=META)
    assert read_metadata(p) == META
    assert load_audio(p).numel() == SR // 10  # the tag chunk does not confuse the header checks
    with sf.SoundFile(str(p)) as f:  # other players see the prompt as the title
        assert f.title == META["prompt"]
        assert f.comment.isascii()  # JSON escapes non-ASCII (WAV INFO is nominally ASCII)
        assert json.loads(f.comment) == META


@pytest.mark.parametrize("ext", ["wav", "flac"])
def test_metadata_empty_and_none(tmp_path: Path, ext: str) -> None:
    p = save_audio(tmp_path / f"e.{ext}", torch.zeros(100), metadata={})
    assert read_metadata(p) == {}
    q = save_audio(tmp_path / f"n.{ext}", torch.zeros(100))
    assert read_metadata(q) == {}


def test_metadata_too_long_for_wav(tmp_path: Path) -> None:
    long_meta = {"prompt": "x" * 5000}
    with pytest.raises(MetadataError) as exc:
        save_audio(tmp_path / "long.wav", torch.zeros(100), metadata=long_meta)
    assert_one_line_error(exc.value, tmp_path / "long.wav")
    assert list(tmp_path.iterdir()) == []  # nothing half-written
    p = save_audio(tmp_path / "long.flac", torch.zeros(100), metadata=long_meta)
    assert read_metadata(p) == long_meta


def test_read_metadata_of_foreign_file(tmp_path: Path) -> None:
    p = tmp_path / "foreign.flac"
    with sf.SoundFile(str(p), "w", SR, 1, format="FLAC") as f:
        f.title, f.artist, f.comment = "Song", "Someone", "not json {"
        f.write(np.zeros(100, np.float32))
    assert read_metadata(p) == {"title": "Song", "artist": "Someone", "comment": "not json {"}
    with pytest.raises(NotAudioError):
        read_metadata(_text_wav(tmp_path / "t.wav"))


# ---------------------------------------------------------------- resample


def test_resample_shapes_and_identity() -> None:
    x = torch.from_numpy(np.stack([sine(48_000), sine(48_000, freq=1000.0)]))  # (2, T)
    y = resample(x, 48_000, SR)
    assert y.shape == (2, SR) and y.dtype == torch.float32
    assert abs(peak_freq(y[0]) - FREQ) < 2.0 and abs(peak_freq(y[1]) - 1000.0) < 2.0
    mono = resample(x[1], 48_000, SR)
    torch.testing.assert_close(mono, y[1])  # batch rows are independent
    assert torch.equal(resample(x, SR, SR), x)
    assert resample(x.double(), SR, SR).dtype == torch.float32


def test_resample_rejects_bad_rates() -> None:
    with pytest.raises(ValueError):
        resample(torch.zeros(10), 0, SR)
    with pytest.raises(ValueError):
        resample(torch.zeros(1, 2, 10), SR, 16_000)
