"""Which queued inputs share one onnxruntime call, and how long that call's rows are padded to.

Why this policy:
- Compute grows with padded samples (rows x padded length), so padding is pure waste: a call is
  only worth merging while its padding share stays small (`max_padding`, default 10 %; batching
  gains ~25-30 % over batch 1 on CPU, so more padding than that would cost what batching saves).
- The padded length is rounded up to a geometric grid anchored at the model's window length
  (`steps_per_octave` points per doubling). Windows of long audio (all exactly one window long)
  are never padded, and onnxruntime sees a bounded set of lengths: its memory grows with every
  new input shape, so an unbounded set of lengths means unbounded growth until a plateau.
- Rows are picked nearest in length to the oldest queued input first (the oldest always goes:
  no starvation), capped by `max_batch` rows and `max_samples` padded samples per call, which
  bounds one call's memory and latency.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class LengthGrid:
    """Padded lengths anchor * 2**(k / steps_per_octave) for integer k, never below `floor`."""

    anchor: int
    steps_per_octave: int
    floor: int = 1

    def bucket(self, n: int) -> int:
        """The smallest grid length >= n (and >= floor)."""
        n = max(n, self.floor, 1)
        k = math.ceil(self.steps_per_octave * math.log2(n / self.anchor) - 1e-9)
        length = round(self.anchor * 2 ** (k / self.steps_per_octave))
        while length < n:  # rounding of the power may land one sample short
            k += 1
            length = round(self.anchor * 2 ** (k / self.steps_per_octave))
        return length

    def lengths_up_to(self, n: int) -> list[int]:
        """Every distinct padded length of inputs up to n samples (the shapes onnxruntime can see)."""
        out, length = [], self.bucket(1)
        while True:
            out.append(length)
            if length >= n:
                return out
            length = self.bucket(length + 1)


@dataclass(frozen=True)
class BatchPolicy:
    """Limits of one call: rows, padded samples, padding share; plus the length grid."""

    max_batch: int
    max_samples: int
    max_padding: float
    grid: LengthGrid


@dataclass(frozen=True)
class Plan:
    """Chosen rows (indices into the candidates) and the length they are padded to."""

    rows: list[int]
    padded_length: int

    def padding_share(self, lengths: Sequence[int]) -> float:
        total = len(self.rows) * self.padded_length
        return 1.0 - sum(lengths[i] for i in self.rows) / total


def choose(lengths: Sequence[int], policy: BatchPolicy) -> Plan:
    """Rows for the next call; lengths[0] is the oldest input and is always chosen."""
    head = max(lengths[0], 1)
    order = sorted(range(1, len(lengths)), key=lambda i: (abs(math.log(max(lengths[i], 1) / head)), i))
    rows, longest, useful = [0], lengths[0], lengths[0]
    padded = policy.grid.bucket(longest)
    for i in order:
        if len(rows) >= policy.max_batch:
            break
        new_padded = policy.grid.bucket(max(longest, lengths[i]))
        n = len(rows) + 1
        share = 1.0 - (useful + lengths[i]) / (n * new_padded)
        current = 1.0 - useful / (len(rows) * padded)
        if n * new_padded > policy.max_samples or share > max(policy.max_padding, current):
            continue
        rows.append(i)
        longest, useful, padded = max(longest, lengths[i]), useful + lengths[i], new_padded
    return Plan(rows, padded)
