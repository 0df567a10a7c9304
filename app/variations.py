"""Variations: N takes of one prompt and settings in one go, differing only in the seed, for A/B.

The batch runs its takes one after another through `Controller.variation` (one generation job at a
time, like every other job; cancel stops the batch). Seeds: with the panel's seed locked they are
seed, seed+1, ... (reproducible); otherwise N distinct random seeds. Each finished take is recorded
in the history as kind "variation" -- not in the arrangement -- until the user keeps one
(`SessionModel.append`, undoable). The last batch's take ids are a project preference, so the list
comes back after a restart.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

from PySide6.QtCore import QObject, Signal

from app.controller import SEED_RANGE, Controller
from melody_core.generation import GenerationSettings

DEFAULT_COUNT = 4
MAX_COUNT = 16
PREF_KEY = "variations.last"  # [take ids] of the last batch


def batch_seeds(count: int, seed: int | None, rng: random.Random | None = None) -> list[int]:
    """`count` distinct seeds: seed, seed+1, ... when given, else random ones."""
    if seed is not None:
        return [(seed + i) % SEED_RANGE for i in range(count)]
    rng = rng or random.Random()
    return rng.sample(range(SEED_RANGE), count)


@dataclass
class Variation:
    seed: int
    take_id: int | None = None  # None until generated
    state: str = "queued"  # queued | generating | done | failed


@dataclass
class Batch:
    settings: GenerationSettings  # the common settings (seed ignored)
    items: list[Variation] = field(default_factory=list)


class VariationBatch(QObject):
    """Runs a batch; `changed` after every state change of an item, `finished(completed)` at the end."""

    changed = Signal()
    finished = Signal(bool)  # True when every variation was generated

    def __init__(self, controller: Controller) -> None:
        super().__init__()
        self.controller = controller
        self.batch: Batch | None = None
        self.running = False
        controller.job_finished.connect(self._on_job_finished)
        controller.busy_changed.connect(self._on_busy)

    def start(self, settings: GenerationSettings, count: int = DEFAULT_COUNT) -> bool:
        """Begin a batch of `count` takes; False (with the controller's message) when it cannot."""
        if self.running:
            return False
        count = max(1, min(MAX_COUNT, count))
        seeds = batch_seeds(count, settings.seed)
        self.batch = Batch(replace(settings, seed=None), [Variation(s) for s in seeds])
        self.running = True
        self.changed.emit()
        if not self._next():
            self._end(False)
            return False
        return True

    def cancel(self) -> None:
        if self.running:
            self.controller.cancel()

    def load(self, items: list[tuple[int, int]]) -> None:
        """Show a finished batch again: (take id, seed) pairs (e.g. the last one at start-up)."""
        if not self.running and items:
            self.batch = Batch(GenerationSettings(), [Variation(seed, tid, "done") for tid, seed in items])
            self.changed.emit()

    def take_ids(self) -> list[int]:
        return [v.take_id for v in (self.batch.items if self.batch else []) if v.take_id is not None]

    def _next(self) -> bool:
        assert self.batch is not None
        item = next((v for v in self.batch.items if v.state == "queued"), None)
        if item is None:
            return False
        item.state = "generating"
        self.changed.emit()
        if not self.controller.variation(replace(self.batch.settings, seed=item.seed)):
            item.state = "failed"
            return False
        return True

    def _current(self) -> Variation | None:
        if self.batch is None:
            return None
        return next((v for v in self.batch.items if v.state == "generating"), None)

    def _on_job_finished(self, kind: str, take_id: object) -> None:
        item = self._current()
        if not self.running or kind != "variation" or item is None:
            return
        if take_id is None:  # cancelled or failed: the rest of the batch is dropped
            item.state = "failed"
            for v in self.batch.items if self.batch else []:
                if v.state == "queued":
                    v.state = "failed"
        else:
            item.take_id, item.state = int(take_id), "done"  # type: ignore[call-overload]
        self.changed.emit()

    def _on_busy(self, busy: bool, _kind: str) -> None:
        if busy or not self.running:
            return
        if not self._next():  # the job's thread has ended: the controller takes the next one
            self._end(all(v.state == "done" for v in self.batch.items) if self.batch else False)

    def _end(self, completed: bool) -> None:
        self.running = False
        self.changed.emit()
        self.finished.emit(completed)
