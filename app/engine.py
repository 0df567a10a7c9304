"""The app's only door to the model: `melody_core.generation.pipeline.MelodyPipeline` behind a small protocol.

Everything else in `app/` talks to an `Engine`; `load_engine` builds one from a factory (the real
pipeline by default; tests and `--engine module:attr` pass another with the same API) and turns
every load failure into an `EngineError` with a one-line message for the window.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from melody_core.generation import (
    AudioChunk,
    GenerationSettings,
    Progress,
    StreamControl,
    StreamFinished,
)

log = logging.getLogger(__name__)

Event = Progress | AudioChunk | StreamFinished


class Engine(Protocol):
    """What the app needs from a loaded pipeline (PCM is float32 mono at `sample_rate`)."""

    model_hash: str
    device: str
    sample_rate: int
    controls: tuple[str, ...]  # the LM's explicit controls ("bpm", "key"); () = none (BPM / key go
    # into the prompt text)
    bundle_path: Path | None  # the loaded bundle's folder (None: the engine has none)

    def stream(self, settings: GenerationSettings, control: StreamControl | None = None,
               endless: bool = False, continue_from: np.ndarray | None = None) -> Iterator[Event]: ...

    def stream_inpaint(self, audio: np.ndarray, start_s: float, end_s: float, settings: GenerationSettings,
                       control: StreamControl | None = None) -> Iterator[Event]:
        """Progress events, then one StreamFinished with the whole clip, region regenerated."""
        ...


EngineFactory = Callable[[str | None, str, int | None], Engine]


class EngineError(Exception):
    """The model could not be loaded; `str()` is one line for the window."""


def real_pipeline(bundle: str | None, device: str, threads: int | None) -> Engine:
    """The real MeLoDy pipeline (the one line to change to swap engines)."""
    from melody_core.generation.pipeline import MelodyPipeline

    return MelodyPipeline.load(bundle, device=device, threads=threads)


def factory_from_spec(spec: str) -> EngineFactory:
    """'package.module:Name' -> factory; Name is a class with a `load` classmethod or a callable."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise EngineError(f"engine spec {spec!r} must look like 'module:attribute'")
    try:
        obj: Any = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise EngineError(f"cannot import engine {spec!r}: {exc}") from None
    loader = getattr(obj, "load", obj)

    def factory(bundle: str | None, device: str, threads: int | None) -> Engine:
        return loader(bundle, device=device, threads=threads)

    return factory


def one_line(exc: BaseException) -> str:
    """A readable single line for any exception (its first line, class name if it is empty)."""
    text = " ".join(str(exc).split())
    return text if text else type(exc).__name__


def load_engine(factory: EngineFactory, bundle: str | Path | None, device: str,
                threads: int | None) -> Engine:
    """Load through `factory`; every failure becomes `EngineError` (never a crash)."""
    where = "the bundled model" if bundle is None else str(bundle)
    try:
        return factory(None if bundle is None else str(bundle), device, threads)
    except ImportError as exc:
        log.exception("pipeline import failed")
        raise EngineError(f"the generation pipeline is not available: {one_line(exc)}") from None
    except (ValueError, OSError, RuntimeError) as exc:  # PipelineError/BundleError are ValueErrors
        raise EngineError(f"cannot load {where}: {one_line(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - a broken bundle must not take the app down
        log.exception("engine load failed")
        raise EngineError(f"cannot load {where}: {type(exc).__name__}: {one_line(exc)}") from None
