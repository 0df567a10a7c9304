"""Latent -> PCM for the pipeline: whole-range decoding and incremental (streamed) decoding that
matches it, plus the inpainting crossfade.

Both paths decode frames [a, b) of a timeline whose end is `end` with `AudioVAE.decode_chunk`,
giving it up to `context` = `AudioVAE.context_frames` frames of latent context per side (fewer only
at the true ends 0 and `end`), so every piece equals the matching slice of one `decode` of frames
[0, end) to float precision (DESIGN §3). A range longer than `DECODE_BLOCK_FRAMES` is decoded in
blocks (bounded memory for long clips), a shorter one in one call. Latents are in DPD space and are
divided by the latent scale before the VAE (`melody_core.train.dpd`).

Streaming: the player runs behind the sampler: once frames [0, f) are final, frames [0, f − context)
can be decoded (their right context is final); when f reaches `end`, everything can. The first piece
is short (`FIRST_PIECE_FRAMES`) for a low time to first sound, later pieces are at most
`PIECE_FRAMES` long.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from melody_core.models.vae_gan import AudioVAE

DECODE_BLOCK_FRAMES = 7500  # 30 s: longer ranges are decoded block by block
FIRST_PIECE_FRAMES = 250  # 1 s: first streamed piece
PIECE_FRAMES = 630  # later streamed pieces (one continuation hop)


def decode_range(vae: AudioVAE, z: Tensor, a: int, b: int, end: int, scale: float,
                 block: int = DECODE_BLOCK_FRAMES) -> Tensor:
    """Frames [a, b) of z (1, >= end, D) (timeline end `end`) -> (1, (b - a) * hop) samples."""
    if not 0 <= a <= b <= end <= z.shape[1]:
        raise ValueError(f"bad decode range [{a}, {b}) of {end} frames")
    if a == 0 and b == end and end <= block:
        with torch.inference_mode():
            return vae.decode(z[:, :end] / scale)
    parts = [_decode_piece(vae, z, s, min(b, s + block), end, scale) for s in range(a, b, block)]
    return torch.cat(parts, dim=1) if parts else z.new_zeros(1, 0)


def _decode_piece(vae: AudioVAE, z: Tensor, a: int, b: int, end: int, scale: float,
                  base: int = 0) -> Tensor:
    """Frames [a, b) (absolute) of z, whose first column is frame `base` (a trimmed timeline)."""
    c = vae.context_frames
    lo, hi = max(0, a - c), min(end, b + c)
    assert lo >= base, f"decode context frame {lo} was trimmed (base {base})"
    with torch.inference_mode():
        left = z[:, lo - base : a - base] / scale if a > 0 else None  # a = 0: the true start
        right = z[:, b - base : hi - base] / scale if b < end else None  # b = end: the true end
        return vae.decode_chunk(z[:, a - base : b - base] / scale, left, right)  # (1, (b - a) * hop)


class StreamDecoder:
    """Decodes final frames of a growing timeline piece by piece (see the module docstring).

    `first`: first frame to decode (earlier frames are context only); `end`: timeline end in frames
    (None = open-ended: the end is only known at `finish`).
    """

    def __init__(self, vae: AudioVAE, scale: float, first: int = 0, end: int | None = None) -> None:
        self.vae, self.scale, self.end = vae, scale, end
        self.done = first  # frames decoded so far
        self.context = vae.context_frames
        self.pieces = 0

    def ready(self, z: Tensor, final: int, base: int = 0) -> Iterator[tuple[int, np.ndarray]]:
        """Pieces decodable now that frames [0, final) are final: yields (first frame, pcm).
        `base`: the frame z's first column holds (`Timeline.base`)."""
        limit = self.end if self.end is not None and final >= self.end else final - self.context
        yield from self._pieces(z, limit, base)

    def finish(self, z: Tensor, end: int, base: int = 0) -> Iterator[tuple[int, np.ndarray]]:
        """The rest up to the timeline end (`end`, unless one was given at construction)."""
        if self.end is None:
            self.end = end
        yield from self._pieces(z, self.end, base)

    def _pieces(self, z: Tensor, limit: int, base: int) -> Iterator[tuple[int, np.ndarray]]:
        while self.done < limit:
            size = FIRST_PIECE_FRAMES if self.pieces == 0 else PIECE_FRAMES
            b = min(limit, self.done + size)
            # open end: a right context of `context` final frames is all a full decode would see
            end = self.end if self.end is not None else b + self.context
            pcm = _decode_piece(self.vae, z, self.done, b, end, self.scale, base)
            start, self.done = self.done, b
            self.pieces += 1
            yield start, pcm[0].float().cpu().numpy()


class AudioSpool:
    """The streamed pieces of one job, for its final result. `spill=False`: kept in memory (a job
    of known length); `spill=True`: written to an anonymous temporary file as they come, so an
    endless stream ("Keep playing") holds no audio in RAM while it runs (issue 18: RSS stayed
    growing ~0.1 MB per second of audio with the pieces in a list) and reads it back once at the end.
    """

    def __init__(self, spill: bool) -> None:
        self._parts: list[np.ndarray] = []
        self._file = tempfile.TemporaryFile(prefix="melody-stream-") if spill else None
        self.count = 0  # pieces appended
        self.samples = 0  # samples appended
        self.held = 0  # samples held in memory (0 when spilling)

    def append(self, pcm: np.ndarray) -> None:
        pcm = np.ascontiguousarray(pcm, dtype=np.float32).reshape(-1)  # (n,)
        if self._file is not None:
            self._file.write(pcm.tobytes())
        else:
            self._parts.append(pcm)
            self.held += len(pcm)
        self.count += 1
        self.samples += len(pcm)

    def read(self) -> np.ndarray:
        """All samples appended, (samples,) float32; closes the temporary file."""
        if self._file is None:
            return np.concatenate(self._parts) if self._parts else np.zeros(0, np.float32)
        self._file.seek(0)
        audio = np.fromfile(self._file, dtype=np.float32, count=self.samples)
        self._file.close()
        return audio


def crossfade_ramp(n: int) -> np.ndarray:
    """Raised-cosine weights 0 -> 1 over n samples (n,) float32 (the two weights sum to 1)."""
    if n <= 0:
        return np.zeros(0, np.float32)
    t = (np.arange(n, dtype=np.float64) + 0.5) / n
    return (0.5 - 0.5 * np.cos(math.pi * t)).astype(np.float32)
