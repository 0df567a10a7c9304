"""Stable import path of the generation API: `from melody_core.pipeline import MelodyPipeline`.
The code lives in `melody_core.generation` (see its package docstring); file tags in
`melody_core.audio.tags`."""

from melody_core.audio.tags import file_metadata, parse_file_metadata
from melody_core.generation.pipeline import DEFAULT_BUNDLE, REQUIRED, MelodyPipeline, default_bundle_path
from melody_core.generation.validation import validate_settings

__all__ = ["DEFAULT_BUNDLE", "REQUIRED", "MelodyPipeline", "default_bundle_path", "file_metadata",
           "parse_file_metadata", "validate_settings"]
