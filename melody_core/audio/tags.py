"""File tags of generated audio: the generation metadata as flat strings for `audio.save_audio`
(WAV/FLAC/MP3 tags), and back."""

from __future__ import annotations

import json
from typing import Any

from melody_core import __version__

STRING_TAGS = ("prompt", "model_hash", "mode", "device", "software")  # file tags stored as plain text
TAG_KEYS = ("prompt", "seed", "mode", "model_hash", "device", "nfe", "settings", "seconds",
            "region_s", "crossfade_s", "continued_from_s", "prompt_changes",
            "controls")  # metadata keys written (controls: the LM's BPM / key tokens, when it has them)


def file_metadata(metadata: dict[str, Any]) -> dict[str, str]:
    """Flat string tags for an audio file (`audio.save_audio`): prompt, seed, mode, model hash,
    device, NFE, the settings as JSON (without the prompt, which is its own tag), and the
    continue/inpaint facts; `parse_file_metadata` inverts it for every key it writes."""
    tags = {"software": f"MeLoDy Studio {__version__}"}
    for k in TAG_KEYS:
        if k in metadata and metadata[k] not in (None, []):
            v = metadata[k]
            if k == "settings" and isinstance(v, dict):  # the prompt has its own tag (WAV tags are ~2 KB)
                v = {name: x for name, x in v.items() if name != "prompt"}
            tags[k] = v if k in STRING_TAGS and isinstance(v, str) else json.dumps(v, sort_keys=True)
    return tags


def parse_file_metadata(tags: dict[str, str]) -> dict[str, Any]:
    """Inverse of `file_metadata` (JSON values decoded, text tags kept)."""
    return {k: v if k in STRING_TAGS else json.loads(v) for k, v in tags.items()}
