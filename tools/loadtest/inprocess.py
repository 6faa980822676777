"""In-process reference: the same model file, session options, threads and concurrent calls as the
service (server.loaded.call_layout), no HTTP.

Two figures, timed by the one clock (diffres.clock) in one interleaved loop: the batched ceiling
(batch 16 of 3 s clips in every concurrent call: what the hardware gives when every call is full
and nothing is padded) and batch 1 (one 3 s clip per call: what a server that never batches could
reach at best).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from diffres.clock import interleaved, rates
from diffres.runner import OnnxModel

CLIP_SECONDS = 3.0
CEILING_BATCH = 16


class Reference:
    """One OnnxModel built as the service builds it, with the clips it times."""

    def __init__(self, model_path: Path, *, providers: list[str], intra_op_threads: int, inter_op_threads: int,
                 calls: int = 1, batch: int = CEILING_BATCH, clip_seconds: float = CLIP_SECONDS) -> None:
        self.model = OnnxModel.load(model_path, providers=providers, intra_op_threads=intra_op_threads,
                                    inter_op_threads=inter_op_threads)
        self.calls = calls
        self._pool = ThreadPoolExecutor(max_workers=calls, thread_name_prefix="reference")
        self.info = self.model.info
        self.batch, self.clip_seconds = batch, clip_seconds
        n = round(clip_seconds * self.info.sample_rate)
        rng = np.random.default_rng(0)  # content does not change the cost of a call
        self.clips = (0.1 * rng.standard_normal((batch, n))).astype(np.float32)
        self.threads = intra_op_threads

    def measure(self, budget_s: float, sample_s: float = 0.5) -> dict[str, Any]:
        """Audio-seconds per second at batch 1 and at the ceiling batch, interleaved for about `budget_s`."""
        one, full = self.clips[:1], self.clips
        fns = {"batch_1": lambda: self._concurrently(one), f"batch_{self.batch}": lambda: self._concurrently(full)}
        repeats = max(2, round(budget_s / (len(fns) * sample_s)))
        times = interleaved(fns, repeats, warmup=2, sample_s=sample_s)
        audio = {"batch_1": self.calls * self.clip_seconds, f"batch_{self.batch}": self.calls * self.batch * self.clip_seconds}
        return {"clip_seconds": self.clip_seconds, "repeats": repeats, "sample_s": sample_s,
                "audio_s_per_s": rates(times, audio), "intra_op_threads": self.threads or "auto",
                "concurrent_calls": self.calls, "onnxruntime": ort.__version__}

    def _concurrently(self, x: np.ndarray) -> None:
        """`calls` session calls on x at once, as the service's batcher runs them."""
        list(self._pool.map(lambda _: self.model.run_padded(x), range(self.calls)))
