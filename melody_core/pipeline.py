"""Stable import path of the generation API: `from melody_core.pipeline import MelodyPipeline`.
The code lives in `melody_core.generation` (see its package docstring)."""

from melody_core.generation.pipeline import DEFAULT_BUNDLE, REQUIRED, MelodyPipeline, default_bundle_path

__all__ = ["DEFAULT_BUNDLE", "REQUIRED", "MelodyPipeline", "default_bundle_path"]
