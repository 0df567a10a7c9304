"""`melody data info`: facts of a built corpus or of any folder of audio."""

from __future__ import annotations

import json
from pathlib import Path

from melody_core.audio import AudioError, audio_info
from melody_core.data.corpus import read_corpus

SECONDS_PER_HOUR = 3600.0


def corpus_summary(folder: str | Path) -> dict:
    """Clip count, hours, splits, captioned clips and per-source licences (CorpusError if the folder
    holds no clips). Durations missing from the index are read from the file headers."""
    root = Path(folder)
    records = read_corpus(root)
    sources: dict[str, dict] = {}
    splits: dict[str, int] = {}
    total, unreadable, captioned = 0.0, 0, 0
    for rec in records:
        seconds = rec.seconds
        if seconds <= 0:
            try:
                seconds = audio_info(root / rec.path).duration_s
            except AudioError:
                unreadable += 1
                seconds = 0.0
        total += seconds
        captioned += bool(rec.captions)
        splits[rec.split] = splits.get(rec.split, 0) + 1
        src = sources.setdefault(rec.source, {"clips": 0, "hours": 0.0, "licenses": []})
        src["clips"] += 1
        src["hours"] += seconds / SECONDS_PER_HOUR
        if rec.license not in src["licenses"]:
            src["licenses"].append(rec.license)
    manifest = {}
    if (root / "manifest.json").is_file():
        try:
            manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            manifest = {}
    kind = (
        "built corpus" if manifest else "captions.jsonl" if (root / "captions.jsonl").is_file() else "folder"
    )
    return {
        "folder": str(root),
        "kind": kind,
        "clips": len(records),
        "hours": round(total / SECONDS_PER_HOUR, 6),
        "captioned": captioned,
        "unreadable": unreadable,
        "splits": dict(sorted(splits.items())),
        "sources": {k: dict(v, hours=round(v["hours"], 6)) for k, v in sorted(sources.items())},
        "seed": manifest.get("seed"),
        "created": manifest.get("created"),
    }


def format_summary(s: dict) -> str:
    lines = [
        f"{s['folder']} ({s['kind']}): {s['clips']} clips, {s['hours']:.2f} h, "
        f"{s['captioned']} with captions",
        "splits: " + ", ".join(f"{k} {v}" for k, v in s["splits"].items()),
    ]
    if s["unreadable"]:
        lines.append(f"{s['unreadable']} clip(s) could not be read")
    if s["seed"] is not None:
        lines.append(f"built {s['created']} with seed {s['seed']}")
    lines.append("sources:")
    for name, src in s["sources"].items():
        lines.append(
            f"  {name}: {src['clips']} clips, {src['hours']:.2f} h; licence: {'; '.join(src['licenses'])}"
        )
    return "\n".join(lines)
