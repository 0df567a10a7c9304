"""Honest model info for the model picker: the bundle's name, its size on disk and one line of its
MODEL_CARD.md saying what it can and cannot do (the card's first bold sentence, which the cards use
for exactly that; else its first paragraph's first sentence)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

CARD = "MODEL_CARD.md"
MAX_LINE_CHARS = 220  # the card line shown under the picker (the tooltip has the first paragraph)


@dataclass(frozen=True)
class ModelInfo:
    name: str  # the bundle folder's name
    size_mb: float  # weights and config on disk
    card_line: str  # what it can and cannot do ("" when there is no card)
    card_paragraph: str  # the card's first paragraph (tooltip)


def _paragraphs(text: str) -> list[str]:
    body = [line for line in text.splitlines() if not line.startswith("#")]
    return [" ".join(p.split()) for p in "\n".join(body).split("\n\n") if p.strip()]


def model_info(bundle: str | Path) -> ModelInfo:
    path = Path(bundle)
    size = sum(f.stat().st_size for f in path.glob("*") if f.is_file() and f.name != CARD)
    card = path / CARD
    line = paragraph = ""
    if card.is_file():
        text = card.read_text(encoding="utf-8", errors="replace")
        paragraphs = _paragraphs(text)
        paragraph = paragraphs[0] if paragraphs else ""
        bold = re.search(r"\*\*(.+?)\*\*", " ".join(text.split()))
        if bold:
            line = bold.group(1).strip()
        elif paragraph:
            line = re.split(r"(?<=[.!?])\s", paragraph, maxsplit=1)[0]
    if len(line) > MAX_LINE_CHARS:
        line = line[: MAX_LINE_CHARS - 1].rstrip() + "…"
    return ModelInfo(path.name, size / 1e6, line, paragraph)

