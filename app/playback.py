"""Transport logic on top of the Player: what is playing, where that is in the arrangement, looping,
live streams and A/B comparison of two takes. The GUI polls `position()` with a QTimer.

Looping a selection plays its seamless loop (`melody_core.audio.loops.seamless_loop`, the same loop
"Export loop…" writes) three times end to end and loops over the middle copy: the player levels the
whole buffer, so the limiter sees the loop as a periodic signal and its gain has no step at the wrap."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QObject, Signal

from app.audio.player import Player, State
from app.session import SessionModel
from melody_core.audio.loops import fade_samples, seamless_loop


@dataclass
class _Source:
    kind: str  # "arrangement" | "segment" | "live" | "take"
    origin: int  # arrangement sample of source sample 0 (-1: not in the arrangement)
    take_id: int | None = None


class Playback(QObject):
    state_changed = Signal(str)
    source_changed = Signal(str)  # "arrangement" | "segment" | "live" | "take" | ""
    underrun = Signal(int)  # the player's: live playback waited for audio (count so far)
    device_error = Signal(str)  # the player's: the output device failed (one line)

    def __init__(self, player: Player, session: SessionModel) -> None:
        super().__init__()
        self.player = player
        self.session = session
        self._source: _Source | None = None
        self._loop: tuple[int, int] | None = None  # arrangement samples
        self._loop_enabled = False
        self._ab: tuple[int, int] | None = None  # take ids
        self._ab_current = 0
        self.loop_audio: np.ndarray | None = None  # one pass of the loop being played (None: not looping)
        player.state_changed.connect(self._on_state)
        player.underrun.connect(self.underrun)
        player.device_error.connect(self.device_error)
        session.arrangement_changed.connect(self._on_arrangement_changed)

    # ------------------------------------------------------------------ state
    @property
    def state(self) -> State:
        return self.player.state

    @property
    def sample_rate(self) -> int:
        return self.player.sample_rate

    @property
    def available(self) -> bool:
        """An output device is open (False: playback is simulated, nothing is heard)."""
        return self.player.available

    @property
    def first_sound_time(self) -> float:
        """perf_counter time the current live stream was first heard (0: not yet)."""
        return self.player.first_sound_time

    @property
    def source_kind(self) -> str:
        return self._source.kind if self._source else ""

    def _on_state(self, state: str) -> None:
        if state == State.STOPPED.value and not self.player.is_live:
            self._source = None
        self.state_changed.emit(state)

    def _on_arrangement_changed(self) -> None:
        """Stop when the audio under the playhead may have moved: any edit while the arrangement
        plays, or removal of the segment being played."""
        src = self._source
        if src is None or self.state is State.STOPPED:
            return
        if src.kind == "arrangement" or (src.kind == "segment" and src.take_id not in self.session.take_ids):
            self.stop()
        elif src.kind == "segment":
            seg = next(s for s in self.session.segments() if s.take.id == src.take_id)
            src.origin = seg.start  # the same take, maybe at another place

    def position(self) -> int:
        """Playhead in arrangement samples (-1 when the source is outside the arrangement/stopped)."""
        pos = self.player.position()
        if pos < 0 or self._source is None or self._source.origin < 0:
            return -1
        return self._source.origin + pos

    def source_position(self) -> int:
        return self.player.position()

    # ------------------------------------------------------------------ clips
    def play_arrangement(self, start: int = 0) -> None:
        audio = self.session.arrangement_audio()
        if len(audio) == 0:
            return
        if self.looping:
            self._play_loop(audio, start)
        else:
            self.loop_audio = None
            self._source = _Source("arrangement", 0)
            start = start if 0 <= start < len(audio) else 0
            self.player.play(audio, start=start)
        self.source_changed.emit("arrangement")

    @property
    def looping(self) -> bool:
        """A selection is set and Loop is on."""
        return self._loop_enabled and self._loop is not None

    def _play_loop(self, audio: np.ndarray, start: int) -> None:
        assert self._loop is not None
        a, b = max(0, self._loop[0]), min(self._loop[1], len(audio))
        if b - a < 2:
            a, b = 0, len(audio)
        loop = seamless_loop(audio, a, b, fade_samples(self.sample_rate))
        n = len(loop)
        self.loop_audio = loop
        offset = start - a if a <= start < a + n else 0
        self._source = _Source("arrangement", a - n)  # the middle copy starts at arrangement sample a
        self.player.play(np.concatenate([loop, loop, loop]), start=n + offset, loop=(n, 2 * n))

    def play_segment(self, index: int) -> None:
        segs = self.session.segments()
        if not 0 <= index < len(segs):
            return
        seg = segs[index]
        self._source = _Source("segment", seg.start, seg.take.id)
        self.player.play(self.session.audio(seg.take.id))
        self.source_changed.emit("segment")

    def play_take(self, take_id: int, start: int = 0) -> None:
        """A take from the history (maybe not in the arrangement)."""
        self._source = _Source("take", -1, take_id)
        self.player.play(self.session.audio(take_id), start=start)
        self.source_changed.emit("take")

    def toggle(self) -> None:
        """Space: pause/resume, or start the arrangement from the top (or the loop start)."""
        if self.state is State.STOPPED:
            self.play_arrangement(self._loop[0] if self._loop_enabled and self._loop else 0)
        else:
            self.player.toggle_pause()

    def stop(self) -> None:
        self.player.stop()
        self._source = None
        self.source_changed.emit("")

    def seek(self, arrangement_sample: int) -> None:
        if self._source is not None and self._source.kind == "arrangement" and not self.looping:
            self.player.seek(arrangement_sample)
        else:
            self.play_arrangement(arrangement_sample)

    # ------------------------------------------------------------------ looping
    def set_loop(self, loop: tuple[int, int] | None, enabled: bool) -> None:
        """Loop `loop` (arrangement samples) when `enabled`; the arrangement, if playing, goes on
        from where it is (into the loop, or out of it)."""
        before = (self._loop, self.looping)
        self._loop = loop
        self._loop_enabled = enabled and loop is not None
        src = self._source
        if (self._loop, self.looping) == before or src is None or src.kind != "arrangement":
            return
        if self.state is State.STOPPED:
            return
        paused = self.state is State.PAUSED
        self.play_arrangement(max(self.position(), 0))
        if paused:
            self.player.toggle_pause()

    # ------------------------------------------------------------------ live
    def start_live(self, origin: int) -> None:
        self._source = _Source("live", origin)
        self.player.start_live()
        self.source_changed.emit("live")

    def append_live(self, pcm: np.ndarray) -> None:
        self.player.append_live(pcm)

    def end_live(self, origin: int | None = None) -> None:
        if self._source is not None and self._source.kind == "live" and origin is not None:
            self._source.origin = origin
        self.player.end_live()

    def stop_live(self) -> None:
        if self._source is not None and self._source.kind == "live":
            self.stop()

    def stop_live_heard(self) -> int | None:
        """Stop the live stream; the number of its samples that reached the device (None when the
        live stream is not what is playing, or there is no device: then nothing can be called heard)."""
        if self._source is None or self._source.kind != "live" or not self.player.available:
            return None
        heard = self.player.stop_live_heard()
        self.stop()
        return heard

    # ------------------------------------------------------------------ A/B
    def set_ab(self, take_a: int, take_b: int) -> None:
        self._ab = (take_a, take_b)
        self._ab_current = 0
        self.play_take(take_a)

    @property
    def ab_current(self) -> int | None:
        """Take id now heard in an A/B comparison (None when not comparing)."""
        if self._ab is None or self._source is None or self._source.kind != "take":
            return None
        return self._ab[self._ab_current]

    def switch_ab(self) -> int | None:
        """Jump to the other take at the same position; returns the take now playing."""
        if self._ab is None:
            return None
        pos = max(self.player.position(), 0)
        self._ab_current = 1 - self._ab_current
        take_id = self._ab[self._ab_current]
        n = len(self.session.audio(take_id))
        self.play_take(take_id, start=pos if pos < n else 0)
        return take_id
