"""Bounded lead for live streams: the generator waits so that it stays a set lead ahead of the playhead.

`LeadGate.wrap(events, control)` wraps a pipeline event stream (run in the worker thread). After each
`AudioChunk` it blocks -- before asking the pipeline for anything more, so the pipeline itself is
paused -- until the audio not yet heard (`produced - heard`) is at most `allowance` samples, where
`allowance` is the longest generation time of the last `RECENT_CHUNKS` chunks, times `SAFETY`, plus
`MIN_ALLOWANCE_S`. (The last chunk alone was not enough: in a 30-minute soak on the loaded 2-core
machine the model ran at 0.51x real time yet playback ran dry 40 times, because one chunk's time
varied by more than 1.5x from the one before it.)
Generation of the next chunk then starts, so the lead when it arrives is at most one chunk (a
window hop) plus the allowance: `bound`. The GUI thread reports the playhead with `set_heard()`.
A cancel, a stop request or `release()` ends every wait at once.

Prompt changes (`note_prompt`) become markers at the first sample generated after the change:
the pipeline reads its `StreamControl` updates when it starts a chunk, which is when the gate
resumes it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from melody_core.generation import AudioChunk, StreamControl

SAFETY = 1.5  # allowance = this x the slowest recent chunk's generation time (in samples of playback)
RECENT_CHUNKS = 8  # chunks whose generation times the allowance looks back over
MIN_ALLOWANCE_S = 0.25  # and at least this much audio stays queued (device and GUI latency)
WAIT_SLICE_S = 0.05  # a waiting generator re-checks cancel/stop at least this often


@dataclass(frozen=True)
class Marker:
    """A prompt change in a live stream."""

    sample: int  # first stream sample generated with the new prompt
    prompt: str


class LeadGate:
    """Thread-safe: the worker thread calls `wrap`'s generator, the GUI thread `set_heard`/`release`.

    `clock` (seconds) times the chunks; a test whose fake device plays k times faster than real time
    gives a clock running k times faster, so that the allowance is in the device's time."""

    clock = staticmethod(time.perf_counter)

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self._cond = threading.Condition()
        self.produced = 0  # samples generated so far
        self.heard = 0  # samples the device has played (from the GUI thread)
        self.allowance = int(MIN_ALLOWANCE_S * sample_rate)  # current resume threshold (samples)
        self.max_chunk = 0  # longest chunk so far (samples)
        self.max_allowance = self.allowance
        self.leads: list[tuple[int, int]] = []  # (lead when each chunk arrived, the bound then)
        self.waits = 0  # times the generator had to wait
        self.markers: list[Marker] = []
        self._recent_s: list[float] = []  # generation times of the last RECENT_CHUNKS chunks (clock s)
        self._pending_prompt: str | None = None
        self._released = False

    @property
    def bound(self) -> int:
        """The most the lead can be: one chunk plus the largest allowance used."""
        return self.max_chunk + self.max_allowance

    def set_heard(self, heard: int) -> None:
        with self._cond:
            if heard > self.heard:
                self.heard = heard
                self._cond.notify_all()

    def release(self) -> None:
        """End all waiting (stop, cancel, no playback)."""
        with self._cond:
            self._released = True
            self._cond.notify_all()

    def note_prompt(self, prompt: str) -> None:
        with self._cond:
            self._pending_prompt = prompt

    def _wait(self, control: StreamControl) -> None:
        with self._cond:
            while (self.produced - self.heard > self.allowance and not self._released
                   and not control.cancelled and not control.stop_requested):
                self.waits += 1
                self._cond.wait(WAIT_SLICE_S)
            if self._pending_prompt is not None:  # the pipeline picks it up when it starts the next chunk
                self.markers.append(Marker(self.produced, self._pending_prompt))
                self._pending_prompt = None

    def wrap(self, events: Iterable, control: StreamControl) -> Iterator:
        """`events` with a wait after each chunk (the generator is not resumed while waiting)."""
        started = self.clock()
        for event in events:
            if isinstance(event, AudioChunk):
                gen_s = self.clock() - started
                n = len(event.pcm)
                with self._cond:
                    self.produced += n
                    self.max_chunk = max(self.max_chunk, n)
                    self.leads.append((self.produced - self.heard, self.max_chunk + self.allowance))
                    self._recent_s = [*self._recent_s[-(RECENT_CHUNKS - 1):], gen_s]
                    slowest = max(self._recent_s)
                    self.allowance = int((SAFETY * slowest + MIN_ALLOWANCE_S) * self.sample_rate)
                    self.max_allowance = max(self.max_allowance, self.allowance)
                yield event
                self._wait(control)
                started = self.clock()
            else:
                yield event
