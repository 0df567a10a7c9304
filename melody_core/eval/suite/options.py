"""Options and section names of `melody eval all` (no torch: the CLI builds its parser from these)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class SuiteError(ValueError):
    """A user-facing problem with the evaluation inputs (one line)."""


RESULTS_FORMAT = "melody-eval-suite"
SECTIONS = (
    "reference", "reconstruction", "grid", "tempo", "instrument", "pair", "judges", "seams", "ablation",
)  # fmt: skip
SKIPPABLE = SECTIONS[1:]
Log = Callable[[str], None]


@dataclass
class SuiteOptions:
    """What `run_suite` measures (defaults: the documented `melody eval all` run)."""

    clips: int = 32  # held-out reference clips (and prompts per grid cell)
    seconds: float = 10.0  # crop of each reference clip and length of each generated clip
    seed: int = 0  # base seed: clip i of a set uses seed + i
    steps: tuple[int, ...] = (5, 10, 20)  # DPD steps of the grid (Table 2)
    schedules: tuple[str, ...] = ("linear", "uniform")  # angle schedules of the grid
    control_steps: int = 10  # steps of the prompt-control and seam generations
    tempo_bpms: tuple[float, ...] = (70, 100, 130, 160)  # tempi asked for
    tempo_templates: int = 3  # instrument families (templates) of the tempo prompts
    tempo_seeds: int = 2  # seeds per (template, bpm)
    tempo_seconds: float | None = None  # length of the tempo clips (None: `seconds`)
    family_seeds: int = 3  # seeds per instrument family
    pair_seeds: int = 12  # seeds per prompt of the piano vs quartet test (2 x 12 = 24 clips >= 20)
    judge_genres: int = 16  # genre prompts of the judges section: the first n of sets.JUDGE_PROMPTS (16)
    judge_seeds: int = 3  # seeds per genre prompt (16 x 3 = 48 clips)
    seam_clips: int = 4  # long generations for the seam metric
    seam_seconds: float = 30.0  # their length (several continuation windows)
    ablation_minutes: float = 8.0  # training budget per ablation arm
    ablation_work: str | None = None  # ablation work folder (None: user cache dir, never the repo)
    reuse_ablation: bool = False  # reuse finished ablation arms with the same settings
    skip: frozenset[str] = field(default_factory=frozenset)  # sections not run (SKIPPABLE)
    device: str = "cpu"  # device of the musicnn embedder (the pipeline is loaded by the caller)
    baseline: str | None = None  # results.json of another run: its FAD is the FAD target's baseline

    def __post_init__(self) -> None:
        if self.tempo_seconds is None:
            self.tempo_seconds = self.seconds
        unknown = sorted(set(self.skip) - set(SKIPPABLE))
        if unknown:
            raise SuiteError(f"cannot skip {', '.join(unknown)} (choose from {', '.join(SKIPPABLE)})")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {
            **d,
            "skip": sorted(self.skip),
            "steps": list(self.steps),
            "schedules": list(self.schedules),
            "tempo_bpms": list(self.tempo_bpms),
        }


def default_ablation_work() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("melody-studio")) / "eval" / "ablation-arch"
