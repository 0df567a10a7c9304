"""In-process FluidSynth: render MIDI bytes with libfluidsynth inside the worker process, loading
each soundfont once per process instead of once per render.

*(our choice, measured: benchmarks/corpus_build_speed.py)* One `fluidsynth -F` process per render
spent 0.15-1.1 CPU-s per call loading its soundfont (MuseScore General's converted .sf2: 1.1 s
whole, 0.27 s with dynamic sample loading; FluidR3: 0.34 s / 0.15 s) plus a WAV file written and
read back, against ~1.3 CPU-s of synthesis for a 40 s arrangement. Here every soundfont is loaded
whole, once per process, into a holder synthesizer, and each render gets a FRESH synthesizer (a few
ms) that borrows the loaded font (`fluid_synth_add_sfont`): a render's audio depends on its MIDI,
font and settings only, never on what the process rendered before (a reused synthesizer keeps
reverb / chorus state and voices between renders: measured, up to 0.6 of full scale apart).

The audio is the fluidsynth command line's (same settings and player timing, the MIDI fed from
memory) as float32 without its 16-bit quantisation, with two measured departures that leave every
note's time and pitch, so every label, as it was: (1) renders ask for `BLOCK_FRAMES` at a time
where `fluidsynth -F` asks for 64 (its audio.period-size): 22 % less synthesis CPU (ctypes calls and
per-call overhead); events are still timed per 64-frame block inside FluidSynth, but voices are
mixed in longer runs, which moves samples by at most 0.01 (correlation 0.999999 with 64-frame
renders, 6 arrangements); (2) fonts are loaded whole: the old arrangement renders used dynamic
sample loading, which by itself changes FluidR3 renders by up to 386 / 32768. Same MIDI + font +
settings give the same samples on every run and in every process.

Bindings: pyfluidsynth (ctypes over the system libfluidsynth, `apt install fluidsynth`); the few
calls it does not wrap (float output, player from memory, font sharing) are declared with its own
`cfunc` helper. Without the library `available()` is False and the builder runs the command line.
"""

from __future__ import annotations

import ctypes
import functools
import threading
from dataclasses import dataclass

import numpy as np

BLOCK_FRAMES = 1024  # frames per synthesis call; the player is checked between calls (see below)
LOG_LEVELS_SILENCED = (2, 3, 4)  # FLUID_WARN / INFO / DBG (e.g. "No preset found" before the font is added)
FLUID_OK = 0
FLUID_PLAYER_PLAYING = 1
FLUID_NUM_TYPE, FLUID_INT_TYPE, FLUID_STR_TYPE = 0, 1, 2


class SynthError(RuntimeError):
    """The library failed to load a soundfont or to play a MIDI file (one-line message)."""


@dataclass
class _Api:
    fs: object  # the pyfluidsynth module
    write_float: object
    player_add_mem: object
    get_sfont_by_id: object
    add_sfont: object
    remove_sfont: object
    settings_get_type: object
    version: str


@functools.lru_cache(maxsize=1)
def _api() -> _Api | None:
    """The bindings, or None when pyfluidsynth or libfluidsynth (>= 2) is missing."""
    try:
        import fluidsynth as fs
    except (ImportError, OSError):
        return None
    v, i, p = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p
    frames = ("synth", v, 1), ("len", i, 1)
    out = ("lout", v, 1), ("loff", i, 1), ("lincr", i, 1), ("rout", v, 1), ("roff", i, 1), ("rincr", i, 1)
    try:
        api = _Api(
            fs=fs,
            write_float=fs.cfunc("fluid_synth_write_float", i, *frames, *out),
            player_add_mem=fs.cfunc(
                "fluid_player_add_mem", i, ("player", v, 1), ("buf", v, 1), ("len", ctypes.c_size_t, 1)
            ),  # fmt: skip
            get_sfont_by_id=fs.cfunc("fluid_synth_get_sfont_by_id", v, ("synth", v, 1), ("id", i, 1)),
            add_sfont=fs.cfunc("fluid_synth_add_sfont", i, ("synth", v, 1), ("sfont", v, 1)),
            remove_sfont=fs.cfunc("fluid_synth_remove_sfont", i, ("synth", v, 1), ("sfont", v, 1)),
            settings_get_type=fs.cfunc("fluid_settings_get_type", i, ("settings", v, 1), ("name", p, 1)),
            version=ctypes.string_at(fs.cfunc("fluid_version_str", ctypes.c_void_p)()).decode(),
        )
    except (AttributeError, TypeError):
        return None
    needed = (api.write_float, api.player_add_mem, api.get_sfont_by_id, api.add_sfont, api.remove_sfont,
              api.settings_get_type, fs.new_fluid_player, fs.fluid_player_play)  # fmt: skip
    if any(f is None for f in needed):
        return None
    set_log = fs.cfunc("fluid_set_log_function", v, ("level", i, 1), ("fun", v, 1), ("data", v, 1))
    if set_log is not None:
        for level in LOG_LEVELS_SILENCED:
            set_log(level, None, None)
    return api


def available() -> bool:
    """Whether renders can run in this process (pyfluidsynth + libfluidsynth 2.x)."""
    return _api() is not None


def library_version() -> str:
    api = _api()
    return api.version if api is not None else ""


def _set(api: _Api, settings, key: str, value: str) -> None:
    """Set a FluidSynth setting from its command-line text `value` by the setting's type."""
    fs, name = api.fs, key.encode()
    kind = api.settings_get_type(settings, name)
    if kind == FLUID_NUM_TYPE:
        ok = fs.fluid_settings_setnum(settings, name, float(value))
    elif kind == FLUID_INT_TYPE:
        ok = fs.fluid_settings_setint(settings, name, int(float(value)))
    elif kind == FLUID_STR_TYPE:
        ok = fs.fluid_settings_setstr(settings, name, value.encode())
    else:
        raise SynthError(f"unknown FluidSynth setting {key}")
    if ok != FLUID_OK:
        raise SynthError(f"invalid FluidSynth setting {key}={value}")


class _Font:
    """A soundfont loaded whole by a holder synthesizer that lives as long as the process."""

    def __init__(self, api: _Api, path: str, sample_rate: int):
        fs = api.fs
        self.settings = fs.new_fluid_settings()
        _set(api, self.settings, "synth.sample-rate", str(sample_rate))
        _set(api, self.settings, "synth.dynamic-sample-loading", "0")
        self.holder = fs.new_fluid_synth(self.settings)
        sfid = fs.fluid_synth_sfload(self.holder, path.encode(), 0)
        if sfid < 0:
            fs.delete_fluid_synth(self.holder)
            fs.delete_fluid_settings(self.settings)
            raise SynthError(f"{path}: FluidSynth cannot load the soundfont")
        self.sfont = api.get_sfont_by_id(self.holder, sfid)


_FONTS: dict[tuple[str, int], _Font] = {}
_LOCK = threading.Lock()  # renders in one process run one at a time (the fonts are shared)


def _load_soundfont(api: _Api, path: str, sample_rate: int) -> _Font:
    """The process's loaded copy of `path` (loaded on first use)."""
    key = (path, sample_rate)
    if key not in _FONTS:
        _FONTS[key] = _Font(api, path, sample_rate)
    return _FONTS[key]


def _render_blocks(api: _Api, synth, player, max_frames: int) -> tuple[np.ndarray, bool]:
    """Run `player` on `synth` block by block -> ((frames, 2) float32, finished) where finished is
    False when the player was still playing after `max_frames`."""
    fs = api.fs
    n_blocks = -(-max_frames // BLOCK_FRAMES)
    out = np.zeros((n_blocks * BLOCK_FRAMES, 2), dtype=np.float32)  # (frames, L/R) interleaved
    base = out.ctypes.data
    step = BLOCK_FRAMES * 2 * out.itemsize
    done = 0
    while fs.fluid_player_get_status(player) == FLUID_PLAYER_PLAYING:
        if done == n_blocks:
            return out, False
        ptr = base + done * step
        if api.write_float(synth, BLOCK_FRAMES, ptr, 0, 2, ptr, 1, 2) != FLUID_OK:
            raise SynthError("FluidSynth failed while rendering")
        done += 1
    return out[: done * BLOCK_FRAMES], True


def render(midi: bytes, soundfont: str, sample_rate: int, gain: float, options: tuple[str, ...],
           max_seconds: float) -> tuple[np.ndarray, bool]:  # fmt: skip
    """Render a Standard MIDI File (bytes) like `fluidsynth -F` with `-g gain -r sample_rate` and
    `-o` options -> (mono float32 (T,) = mean of the stereo output, finished). `finished` is False
    when the MIDI still played after `max_seconds` (the render is cut there)."""
    api = _api()
    if api is None:
        raise SynthError("libfluidsynth is not available in this process")
    fs = api.fs
    with _LOCK:
        font = _load_soundfont(api, soundfont, sample_rate)
        settings = fs.new_fluid_settings()
        synth = player = None
        try:
            for key, value in (("synth.gain", f"{gain:g}"), ("synth.sample-rate", str(sample_rate)),
                               ("player.timing-source", "sample"), ("synth.lock-memory", "0")):  # fmt: skip
                _set(api, settings, key, value)  # what `fluidsynth -F` sets
            for opt in options:
                key, _, value = opt.partition("=")
                _set(api, settings, key.strip(), value.strip())
            synth = fs.new_fluid_synth(settings)
            if api.add_sfont(synth, font.sfont) < 0:
                raise SynthError(f"{soundfont}: cannot add the soundfont to a synthesizer")
            fs.fluid_synth_program_reset(synth)
            player = fs.new_fluid_player(synth)
            buf = ctypes.create_string_buffer(midi, len(midi))
            if api.player_add_mem(player, buf, len(midi)) != FLUID_OK:
                raise SynthError("FluidSynth cannot read the MIDI data")
            if fs.fluid_player_play(player) != FLUID_OK:
                raise SynthError("FluidSynth cannot play the MIDI data")
            stereo, finished = _render_blocks(api, synth, player, int(max_seconds * sample_rate))
        finally:
            if player is not None:
                fs.fluid_player_stop(player)
                fs.fluid_player_join(player)
                fs.delete_fluid_player(player)
            if synth is not None:
                api.remove_sfont(synth, font.sfont)  # the holder keeps it
                fs.delete_fluid_synth(synth)
            fs.delete_fluid_settings(settings)
    return stereo.mean(axis=1, dtype=np.float32), finished
