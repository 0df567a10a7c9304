"""Loop playback through the real PortAudio path into the ALSA `type file` capture device
(tests/asound_capture.conf), in a subprocess: what reaches the device is the selection's seamless
loop, levelled, repeated with period exactly the loop's length (no restart at the wrap), and no
sample goes above the ceiling although the take overshoots full scale."""

from __future__ import annotations

import numpy as np
from app_fixtures import run_capture

from melody_core.audio.levels import LIVE_MARGIN_DB, LevelSettings

SR = 24000

BODY = """
studio.window.arrangement.set_selection((1.0, 2.0))
studio.window.transport.loop.setChecked(True)
studio.playback.toggle()  # plays the loop
end = time.monotonic() + 90
check = 0.0
while time.monotonic() < end:  # the null device takes audio as fast as it can: stop after 6 loops sounded
    app.processEvents()
    if time.monotonic() > check and os.path.exists({capture!r}):
        check = time.monotonic() + 0.25
        if np.count_nonzero(np.fromfile({capture!r}, dtype=np.float32)) > 6 * {sr}:
            break
studio.playback.stop()
np.save({loop!r}, studio.playback.loop_audio)
studio.player.shutdown()
studio.close()
"""


def test_loop_playback_at_the_alsa_device_is_periodic_and_under_the_ceiling(tmp_path):
    capture = run_capture(tmp_path, "loop me", 3.0, BODY, timeout=180, loop=str(tmp_path / "loop.npy"))
    loop = np.load(tmp_path / "loop.npy")
    n = len(loop)
    assert n == SR  # a one-second selection inside the take: the loop keeps its length
    assert np.abs(loop).max() > 1.2  # the raw loop overshoots full scale
    played = np.fromfile(capture, dtype=np.float32)
    # the null device takes audio faster than real time, so the player underruns between its feeds
    # and PortAudio sends silence there: compare the sounding samples. Levelling is a gain, so the
    # loop's exact zeros (the tone's zero crossings on the sample grid) stay zeros: m sounding samples.
    sounding = loop[loop != 0]
    m = len(sounding)
    assert m > 0.99 * n
    body = played[played != 0]
    assert len(body) >= 4 * m
    np.testing.assert_array_equal(body[m:3 * m], body[2 * m:4 * m])  # periodic: the loop, again and again
    levelled = body[m:2 * m]
    shift = int(np.argmax([np.dot(np.roll(levelled, -k)[:2000], sounding[:2000]) for k in range(m)]))
    assert np.corrcoef(np.roll(levelled, -shift), sounding)[0, 1] > 0.99  # it is the loop, levelled
    ceiling = 10 ** ((LevelSettings().ceiling_dbtp - LIVE_MARGIN_DB) / 20)
    assert np.abs(played).max() <= ceiling + 1e-6
