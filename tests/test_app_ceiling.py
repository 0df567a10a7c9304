"""No sample above the ceiling in anything the studio plays or writes: the arrangement played through
the player's output stream, and exports in every format, depth, rate and channel count, made from
takes the (fake) model generated above full scale, as real decoders do."""

from __future__ import annotations

import itertools

import numpy as np
import soundfile as sf
from app_fake_audio import FakeBackend
from app_fake_pipeline import FakePipeline
from app_fixtures import WAIT_MS, fake_factory, generate, make_studio  # noqa: F401

from app.audio.player import State
from melody_core.audio.levels import LIVE_MARGIN_DB, LevelSettings, sample_peak_db, true_peak_dbtp

SR = 24000
CEILING = LevelSettings().ceiling_dbtp


class Overshoot(FakePipeline):
    def _tone(self, freq: float, start: int, n: int) -> np.ndarray:
        return super()._tone(freq, start, n) * np.float32(1.3 / 0.3)  # peaks at 1.3


def test_played_and_exported_audio_stays_under_the_ceiling(qtbot, make_studio, tmp_path):  # noqa: F811
    backend = FakeBackend(speed=8.0)
    studio = make_studio(backend=backend, factory=fake_factory(Overshoot))
    generate(qtbot, studio, "loud one", 1.5)
    generate(qtbot, studio, "loud two", 1.5)
    w = studio.window
    qtbot.waitUntil(lambda: studio.player.state is State.STOPPED, timeout=WAIT_MS)
    backend.played.clear()
    studio.playback.play_arrangement()
    qtbot.waitUntil(lambda: studio.player.state is State.STOPPED, timeout=WAIT_MS)
    played = backend.captured()
    assert np.count_nonzero(played) > 2.5 * SR  # the whole arrangement went out
    assert np.abs(played).max() <= 10 ** ((CEILING - LIVE_MARGIN_DB) / 20) + 1e-6
    combos = itertools.product(("wav", "flac"), (16, 24), (24_000, 44_100, 48_000), (1, 2))
    for fmt, bits, rate, channels in combos:
        for key, value in (("format", fmt), ("bits", bits), ("rate", rate), ("channels", channels)):
            w._set_format(key, value)  # noqa: SLF001 - what the Settings menu does
        out = w.export_to(str(tmp_path / f"a-{fmt}-{bits}-{rate}-{channels}"))
        assert out is not None, w.messages.text()
        audio, got_rate = sf.read(str(out), dtype="float32", always_2d=True)
        assert (got_rate, audio.shape[1]) == (rate, channels)
        assert sample_peak_db(audio.T) < CEILING + 0.01, (out.name, sample_peak_db(audio.T))
        assert true_peak_dbtp(audio.T, rate) <= CEILING + 0.05, (out.name, true_peak_dbtp(audio.T, rate))
