"""Single-producer / single-consumer ring buffer of float32 PCM with per-sample source positions.

The producer (GUI thread) writes; the consumer (the audio callback) only copies out of
preallocated arrays: no allocation of sample buffers, no locks, no Qt. Counters grow without
wrapping (Python ints), the index is `counter % capacity`; each side writes only its own counter,
so reading the other side's counter gives a conservative (never unsafe) view.

Every sample carries the position it had in its source (-1 = none), so the player knows exactly
which source sample was played last, through loops and seeks.

`flush()` (producer) drops everything written so far: it publishes the write counter as a flush
target, and the consumer jumps its read counter there on its next read.
"""

from __future__ import annotations

import numpy as np


class RingBuffer:
    """Preallocated SPSC ring of mono float32 samples plus int64 source positions."""

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self._pcm = np.zeros(capacity, dtype=np.float32)
        self._pos = np.full(capacity, -1, dtype=np.int64)
        self._write = 0  # total samples written (producer-owned)
        self._read = 0  # total samples read (consumer-owned)
        self._flush_to = 0  # producer asks the consumer to skip up to here
        self.last_position = -1  # source position of the last sample read (consumer-owned)

    # ----------------------------------------------------------- producer side
    def available_space(self) -> int:
        return self.capacity - (self._write - self._read)

    def buffered(self) -> int:
        """Samples written and not yet read (a producer-side estimate)."""
        return self._write - max(self._read, self._flush_to)

    def write(self, pcm: np.ndarray, first_position: int) -> int:
        """Copy as much of `pcm` as fits; sample i gets source position first_position + i.
        Returns the number of samples written."""
        n = min(len(pcm), self.capacity - (self._write - self._read))
        if n <= 0:
            return 0
        start = self._write % self.capacity
        first = min(n, self.capacity - start)
        positions = np.arange(first_position, first_position + n, dtype=np.int64)
        self._pcm[start:start + first] = pcm[:first]
        self._pos[start:start + first] = positions[:first]
        if n > first:
            self._pcm[: n - first] = pcm[first:n]
            self._pos[: n - first] = positions[first:]
        self._write += n  # publish only after the data is in place
        return n

    def position(self) -> int:
        """Producer-side view of `last_position`: -1 until the consumer has read a sample written
        after the last flush (so a seek or a new source never reports the old source's position)."""
        if self._read <= self._flush_to:  # read before last_position: it is at least this recent
            return -1
        return self.last_position

    def flush(self) -> None:
        """Drop every sample written so far (takes effect at the consumer's next read)."""
        self._flush_to = self._write

    def flush_applied(self) -> bool:
        """The consumer has skipped everything flushed (so `last_position` is final)."""
        return self._read >= self._flush_to

    def reset(self) -> None:
        """Empty the ring; only when the consumer is not running."""
        self._read = self._flush_to = self._write
        self.last_position = -1

    # ----------------------------------------------------------- consumer side
    def apply_flush(self) -> None:
        """Skip flushed samples (also called by a paused consumer, so a flush never waits)."""
        flush_to = self._flush_to
        if flush_to > self._read:
            self._read = flush_to

    def read_into(self, out: np.ndarray) -> int:
        """Copy up to len(out) samples into `out` (1-D float32 view); returns how many."""
        self.apply_flush()
        n = min(self._write - self._read, len(out))
        if n <= 0:
            return 0
        start = self._read % self.capacity
        first = min(n, self.capacity - start)
        out[:first] = self._pcm[start:start + first]
        if n > first:
            out[first:n] = self._pcm[: n - first]
        self.last_position = int(self._pos[(start + n - 1) % self.capacity])
        self._read += n
        return n
