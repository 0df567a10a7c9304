"""Presets: a named prompt + generation settings (+ BPM / key), built in or saved by the user.

User presets are stored per user (`app.user_config`, presets.json), so every project sees them.
The built-ins are made from the genre table of the training corpus (`melody_core.data.genres`, the
genres corpus v2 is arranged from): the genre's caption phrase and first descriptive word as the
prompt, the middle of its tempo range as BPM -- prompts the model has seen in training captions
("chill lo-fi hip hop ..."), so they are sensible starting points rather than invented ones.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from app.user_config import JsonFile
from melody_core.data.genres import GENRES

PRESETS_FILE = "presets.json"
BUILTIN_GENRES = ("lofi", "house", "techno", "trap", "dnb", "ambient", "cinematic", "jazz_ballad",
                  "synthwave", "funk")  # a spread of tempi and moods of the corpus
BUILTIN_STEPS = 10  # the panel's default
BUILTIN_GUIDANCE = 2.5  # ρ of the paper (§5.1)
BUILTIN_SECONDS = 10.0


@dataclass(frozen=True)
class Preset:
    """Everything the prompt panel needs to reproduce a sound (the seed is not part of it)."""

    name: str  # shown in the Presets menu
    prompt: str  # the text, without the BPM/key words (the panel adds those)
    steps: int = BUILTIN_STEPS  # diffusion steps
    guidance: float = BUILTIN_GUIDANCE  # diffusion CFG ρ
    lm_guidance: float | None = None  # semantic LM guidance (None: the model's default)
    seconds: float = BUILTIN_SECONDS  # length of a take
    style_weight: float = 0.5  # weight of a style audio prompt, when one is dropped
    bpm: float | None = None  # tempo field (None: off)
    key: str | None = None  # key field, e.g. "A minor" (None: off)
    builtin: bool = False  # shipped with the app (cannot be deleted or overwritten)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("builtin")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preset:
        known = {f.name for f in fields(cls)} - {"builtin"}
        if not isinstance(d.get("name"), str) or not isinstance(d.get("prompt"), str):
            raise ValueError("a preset needs a name and a prompt")
        return cls(**{k: v for k, v in d.items() if k in known})


def builtin_presets() -> list[Preset]:
    by_name = {g.name: g for g in GENRES}
    out = []
    for name in BUILTIN_GENRES:
        g = by_name[name]
        bpm = float(round(sum(g.bpm) / 2))
        out.append(Preset(name=g.label.capitalize(), prompt=f"{g.words[0]} {g.label}", bpm=bpm, builtin=True))
    return out


class PresetStore:
    """The user's presets (a JSON list) plus the built-ins; names are unique, case-insensitively."""

    def __init__(self, config_dir: Path | None = None) -> None:
        self._file = JsonFile(PRESETS_FILE, config_dir)

    def user(self) -> list[Preset]:
        raw = self._file.load([])
        out = []
        for d in raw if isinstance(raw, list) else []:
            try:
                out.append(Preset.from_dict(d))
            except (TypeError, ValueError):  # a hand-edited entry that makes no sense: skipped
                continue
        return out

    def all(self) -> list[Preset]:
        return [*builtin_presets(), *self.user()]

    def get(self, name: str) -> Preset | None:
        return next((p for p in self.all() if p.name.casefold() == name.casefold()), None)

    def save(self, preset: Preset) -> None:
        """Add or overwrite a user preset. Raises ValueError for an empty or built-in name, OSError
        when the file cannot be written."""
        name = preset.name.strip()
        if not name:
            raise ValueError("a preset needs a name")
        if any(p.name.casefold() == name.casefold() for p in builtin_presets()):
            raise ValueError(f"{name!r} is a built-in preset: choose another name")
        rest = [p for p in self.user() if p.name.casefold() != name.casefold()]
        if not self._file.save([p.to_dict() for p in [*rest, Preset(**{**preset.to_dict(), "name": name})]]):
            raise OSError(f"cannot write {self._file.path}")

    def delete(self, name: str) -> bool:
        rest = [p for p in self.user() if p.name.casefold() != name.casefold()]
        if len(rest) == len(self.user()):
            return False
        return self._file.save([p.to_dict() for p in rest])
