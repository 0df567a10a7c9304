"""Training data: corpus clips, an LRU store of decoded audio, and a resumable crop sampler.

`CropSampler` is the only source of data randomness. An epoch is a permutation of "items": a clip
of length l (in units: samples, latent frames or tokens) contributes max(1, l // crop) items, so
long clips are sampled in proportion to their length. Each global batch takes the next B x world
items; every item gets a random crop offset (a multiple of `align`) and a uniform number `u` for
stage-specific choices (e.g. which caption). All of it is drawn from the sampler's own
`torch.Generator`, identically on every rank; rank r keeps items [r B, (r + 1) B) — a deterministic,
DistributedSampler-like sharding. `state_dict()` (epoch, position, permutation, generator state)
restores the exact stream after a restart.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import soundfile as sf
import torch

from melody_core import SAMPLE_RATE
from melody_core.audio import audio_info, load_audio
from melody_core.data.corpus import ClipRecord, read_corpus

DEFAULT_AUDIO_CACHE_MB = 1024  # decoded audio kept in memory per process
VALID_SEED_OFFSET = 7919  # seed of the fixed validation crops, offset from the run seed


@dataclass
class ClipSet:
    """Clips of one split with their lengths in samples at 24 kHz."""

    root: Path
    records: list[ClipRecord]
    lengths: list[int]

    def __len__(self) -> int:
        return len(self.records)

    @property
    def hours(self) -> float:
        return sum(self.lengths) / SAMPLE_RATE / 3600

    def path(self, i: int) -> Path:
        return self.root / self.records[i].path


def load_clips(folder: str | Path, split: str) -> ClipSet:
    """Clips of `split` ("train" / "valid") with lengths read from the file headers."""
    root = Path(folder)
    records = read_corpus(root, split)
    lengths = []
    for rec in records:
        info = audio_info(root / rec.path)
        lengths.append(int(info.frames * SAMPLE_RATE // info.sample_rate))
    return ClipSet(root, records, lengths)


def corpus_summary(train: ClipSet, valid: ClipSet) -> dict[str, Any]:
    """What a bundle's meta records about the data a stage saw."""
    summary: dict[str, Any] = {
        "folder": str(train.root),
        "train_clips": len(train),
        "valid_clips": len(valid),
        "train_hours": round(train.hours, 4),
        "valid_hours": round(valid.hours, 4),
        "sources": sorted({r.source for r in train.records}),
        "licenses": sorted({r.license for r in train.records}),
    }
    manifest = train.root / "manifest.json"
    if manifest.is_file():
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
            summary["manifest"] = {k: data[k] for k in ("sources", "total_hours", "version") if k in data}
        except (OSError, ValueError):
            summary["manifest"] = "unreadable"
    return summary


class AudioStore:
    """Decoded 24 kHz mono clips in a byte-bounded LRU cache; crops are zero-padded past the end."""

    def __init__(self, clips: ClipSet, max_mb: float = DEFAULT_AUDIO_CACHE_MB) -> None:
        self.clips = clips
        self.max_bytes = int(max_mb * 2**20)
        self._cache: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._bytes = 0

    def clip(self, i: int) -> torch.Tensor:
        """(T,) float32 waveform of clip i."""
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        wav = load_audio(self.clips.path(i))
        self._cache[i] = wav
        self._bytes += wav.numel() * wav.element_size()
        while self._bytes > self.max_bytes and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._bytes -= old.numel() * old.element_size()
        return wav

    def crop(self, i: int, start: int, length: int) -> torch.Tensor:
        wav = self.clip(i)[start : start + length]
        if len(wav) < length:
            wav = torch.nn.functional.pad(wav, (0, length - len(wav)))
        return wav

    def batch(self, items: Sequence[Item], length: int, unit: int = 1) -> torch.Tensor:
        """(B, length) crops; item offsets are in `unit` samples."""
        return torch.stack([self.crop(it.clip, it.offset * unit, length) for it in items])


class Item(NamedTuple):
    clip: int  # index into the ClipSet
    offset: int  # crop start, in sampler units
    u: float  # uniform [0, 1) for stage-specific choices


class CropSampler:
    """Resumable, rank-sharded sampler of (clip, offset, u) crops; see the module docstring."""

    def __init__(
        self,
        lengths: Sequence[int],
        crop: int,
        batch: int,
        world: int = 1,
        rank: int = 0,
        seed: int = 0,
        align: int = 1,
    ) -> None:
        if crop <= 0 or batch <= 0:
            raise ValueError("crop and batch must be positive")
        self.lengths, self.crop, self.batch = list(lengths), crop, batch
        self.world, self.rank, self.align = world, rank, align
        self.eligible = [i for i, n in enumerate(self.lengths) if n >= crop]
        if not self.eligible:
            raise ValueError(f"no clip is at least {crop} units long")
        per_clip = [max(1, self.lengths[i] // crop) for i in self.eligible]
        self.items = torch.tensor(self.eligible).repeat_interleave(torch.tensor(per_clip))  # (n_items,)
        self.gen = torch.Generator().manual_seed(seed)
        self.epoch, self.pos = 0, 0
        self.perm = torch.randperm(len(self.items), generator=self.gen)

    def next(self) -> list[Item]:
        """This rank's share of the next global batch."""
        need = self.batch * self.world
        clips: list[int] = []
        while len(clips) < need:
            if self.pos >= len(self.perm):
                self.epoch += 1
                self.pos = 0
                self.perm = torch.randperm(len(self.items), generator=self.gen)
            take = self.perm[self.pos : self.pos + need - len(clips)]
            self.pos += len(take)
            clips += self.items[take].tolist()
        spans = torch.tensor([(self.lengths[c] - self.crop) // self.align + 1 for c in clips])
        offsets = (torch.rand(need, generator=self.gen, dtype=torch.float64) * spans).long() * self.align
        us = torch.rand(need, generator=self.gen, dtype=torch.float64).tolist()
        lo = self.rank * self.batch
        return [Item(c, int(o), u) for c, o, u in zip(clips, offsets.tolist(), us)][lo : lo + self.batch]

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "pos": self.pos, "perm": self.perm.clone(), "gen": self.gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self.perm = state["perm"].clone()
        self.gen.set_state(state["gen"])


def fixed_items(lengths: Sequence[int], crop: int, count: int, seed: int, align: int = 1) -> list[Item]:
    """Deterministic crops for validation: `count` items cycling over the eligible clips."""
    eligible = [i for i, n in enumerate(lengths) if n >= crop]
    gen = torch.Generator().manual_seed(seed + VALID_SEED_OFFSET)
    out = []
    for k in range(min(count, 4 * len(eligible)) if eligible else 0):
        c = eligible[k % len(eligible)]
        span = (lengths[c] - crop) // align + 1
        out.append(Item(c, int(torch.randint(span, (1,), generator=gen)) * align, k / max(count, 1)))
    return out


def batches(items: Sequence[Item], size: int) -> list[list[Item]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


# ------------------------------------------------------------------------------------ synthetic data
def write_synthetic_corpus(
    folder: str | Path, n_train: int = 6, n_valid: int = 2, seconds: float = 2.0, seed: int = 0
) -> Path:
    """A small corpus of generated tones and noise (24 kHz WAV + captions.jsonl) for tests/smoke runs.

    Each clip: a few harmonic notes of a random pitch sequence plus filtered noise bursts; its
    captions name the timbre and register so MuLan has something to learn.
    """
    root = Path(folder)
    (root / "clips").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    lines = []
    for k in range(n_train + n_valid):
        bright = k % 2 == 0
        low = (k // 2) % 2 == 0
        base = 110.0 if low else 440.0
        notes = base * 2 ** (rng.integers(0, 12, size=4) / 12)
        seg = n // len(notes)
        wav = np.zeros(n)
        harmonics = 6 if bright else 2
        for j, f in enumerate(notes):
            sl = slice(j * seg, (j + 1) * seg if j < len(notes) - 1 else n)
            env = np.exp(-3.0 * (t[sl] - t[sl][0]))
            wav[sl] = sum(np.sin(2 * math.pi * f * h * t[sl]) / h for h in range(1, harmonics + 1)) * env
        noise = rng.standard_normal(n) * (0.05 if bright else 0.01)
        wav = 0.3 * wav / max(np.abs(wav).max(), 1e-6) + noise
        name = f"clips/clip{k:03d}.wav"
        sf.write(root / name, wav.astype(np.float32), SAMPLE_RATE, subtype="FLOAT")
        timbre = "bright buzzy synth" if bright else "soft mellow flute"
        register = "low bass notes" if low else "high treble notes"
        rec = ClipRecord(
            id=f"synth-{k:03d}",
            path=name,
            seconds=seconds,
            captions=[f"{timbre} playing {register}", f"{register}, {timbre}"],
            source="synthetic",
            license="CC0-1.0",
            split="valid" if k >= n_train else "train",
        )
        lines.append(rec.to_json())
    (root / "captions.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root
