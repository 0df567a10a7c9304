"""A minimal Standard MIDI File (format 1) writer for rendered scores.

*(our choice)* The builder writes MIDI itself instead of using music21's exporter: music21 shares a
channel between parts with the same instrument and keeps zero-length grace notes, which leaves
voices stuck on in FluidSynth (it then renders forever). Here every track has its own channel,
notes are strictly positive in length, and overlapping notes of one pitch on one channel are cut
so that every note-on has exactly one note-off.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

TICKS_PER_QUARTER = 480
DRUM_CHANNEL = 9  # General MIDI percussion channel (0-based); never used for pitched parts
NUM_CHANNELS = 16
MICROSECONDS_PER_MINUTE = 60_000_000
CC_VOLUME = 7
CC_PAN = 10
CC_REVERB = 91
CC_CHORUS = 93
CC_ALL_SOUND_OFF = 120
NOTE_ON = 0x90
NOTE_OFF = 0x80
CONTROL_CHANGE = 0xB0
PROGRAM_CHANGE = 0xC0
META_TEMPO = 0x51
META_TRACK_NAME = 0x03
META_END_OF_TRACK = 0x2F


@dataclass(frozen=True)
class Note:
    """A note in quarter lengths (ql) from the start of the piece."""

    start: float  # onset, ql
    duration: float  # length, ql (> 0)
    pitch: int  # MIDI pitch 0..127
    velocity: int  # 1..127


@dataclass
class Track:
    """One part: a channel, a General MIDI program and its notes."""

    channel: int  # 0..15, not DRUM_CHANNEL for pitched parts
    program: int  # General MIDI program 0..127
    notes: list[Note] = field(default_factory=list)
    name: str = ""
    volume: int = 100  # CC 7
    reverb: int = 40  # CC 91 send
    chorus: int = 0  # CC 93 send
    pan: int = 64  # CC 10 (0 left .. 64 centre .. 127 right)


def _vlq(value: int) -> bytes:
    """MIDI variable-length quantity."""
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    return bytes(reversed(out))


def _chunk(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack(">I", len(body)) + body


def _events_to_bytes(events: list[tuple[int, int, bytes]]) -> bytes:
    """(tick, order, message) -> delta-timed track body; `order` breaks ties (offs before ons)."""
    body = bytearray()
    last = 0
    for tick, _order, msg in sorted(events, key=lambda e: (e[0], e[1])):
        body += _vlq(tick - last) + msg
        last = tick
    return bytes(body)


def note_ticks(notes: list[Note]) -> list[tuple[int, int, int, int]]:
    """Notes -> (on_tick, off_tick, pitch, velocity) with same-pitch overlaps cut and empty notes
    dropped, so that note-ons and note-offs pair up on one channel."""
    by_pitch: dict[int, list[tuple[int, int, int]]] = {}
    for n in notes:
        on = round(n.start * TICKS_PER_QUARTER)
        off = round((n.start + n.duration) * TICKS_PER_QUARTER)
        if off > on and 0 <= n.pitch <= 127:
            by_pitch.setdefault(n.pitch, []).append((on, off, min(127, max(1, n.velocity))))
    out = []
    for pitch, items in by_pitch.items():
        items.sort()
        for i, (on, off, vel) in enumerate(items):
            if i + 1 < len(items):
                off = min(off, items[i + 1][0])  # the next attack of this pitch ends this one
            if off > on:
                out.append((on, off, pitch, vel))
    out.sort()
    return out


def _track_bytes(track: Track, stop_tick: int | None) -> bytes:
    ch = track.channel
    events: list[tuple[int, int, bytes]] = []
    if track.name:
        name = track.name.encode("ascii", "replace")[:64]
        events.append((0, 0, bytes([0xFF, META_TRACK_NAME]) + _vlq(len(name)) + name))
    events.append((0, 1, bytes([PROGRAM_CHANGE | ch, track.program & 0x7F])))
    ccs = (CC_VOLUME, track.volume), (CC_PAN, track.pan), (CC_REVERB, track.reverb), (CC_CHORUS, track.chorus)
    for cc, value in ccs:
        events.append((0, 2, bytes([CONTROL_CHANGE | ch, cc, max(0, min(127, value))])))
    end = 0
    for on, off, pitch, vel in note_ticks(track.notes):
        events.append((on, 4, bytes([NOTE_ON | ch, pitch, vel])))
        events.append((off, 3, bytes([NOTE_OFF | ch, pitch, 0])))  # order 3: offs before ons at a tick
        end = max(end, off)
    if stop_tick is not None:  # silence every voice (long releases would make the render run on)
        end = max(end, stop_tick)
        events.append((end, 8, bytes([CONTROL_CHANGE | ch, CC_ALL_SOUND_OFF, 0])))
    events.append((end, 9, bytes([0xFF, META_END_OF_TRACK, 0])))
    return _chunk(b"MTrk", _events_to_bytes(events))


def midi_bytes(tracks: list[Track], qpm: float, stop_after_s: float | None = None) -> bytes:
    """A format-1 SMF: a tempo track at `qpm` quarter notes per minute, then one track per part.
    With `stop_after_s`, every channel gets "all sound off" that long after the last note-off."""
    if qpm <= 0:
        raise ValueError(f"tempo must be positive, got {qpm}")
    channels = [t.channel for t in tracks]
    if any(not 0 <= c < NUM_CHANNELS for c in channels):
        raise ValueError(f"MIDI channels must be in 0..15, got {channels}")
    usec = round(MICROSECONDS_PER_MINUTE / qpm)
    tempo = bytes([0xFF, META_TEMPO, 3]) + usec.to_bytes(3, "big")
    end = bytes([0xFF, META_END_OF_TRACK, 0])
    conductor = _chunk(b"MTrk", _events_to_bytes([(0, 0, tempo), (0, 9, end)]))
    header = _chunk(b"MThd", struct.pack(">HHH", 1, len(tracks) + 1, TICKS_PER_QUARTER))
    stop = None
    if stop_after_s is not None:
        stop = round((end_seconds(tracks, qpm) + stop_after_s) * qpm / 60.0 * TICKS_PER_QUARTER)
    return header + conductor + b"".join(_track_bytes(t, stop) for t in tracks)


def write_midi(path: str | Path, tracks: list[Track], qpm: float, stop_after_s: float | None = None) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(midi_bytes(tracks, qpm, stop_after_s))
    return p


def end_seconds(tracks: list[Track], qpm: float) -> float:
    """Time of the last note-off, in seconds at `qpm`."""
    end_ql = max((n.start + n.duration for t in tracks for n in t.notes), default=0.0)
    return end_ql * 60.0 / qpm
