"""Stable import path of the generation API's data types (the app imports them from here); they
live in `melody_core.generation.types`."""

from melody_core.generation.types import (
    AudioChunk,
    GenerationCancelled,
    GenerationResult,
    GenerationSettings,
    PipelineError,
    Progress,
    StreamControl,
    StreamFinished,
)

__all__ = ["AudioChunk", "GenerationCancelled", "GenerationResult", "GenerationSettings", "PipelineError",
           "Progress", "StreamControl", "StreamFinished"]
