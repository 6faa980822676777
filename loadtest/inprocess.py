"""In-process baseline: the same clips through onnxruntime directly, with no HTTP in between.

Uses the service's own pieces (settings, session options, decoder, window plan, ClipReader), so
the only differences from the service are HTTP, the micro-batcher and concurrency: a short clip
is one call of batch 1, a long clip's windows go in batches of DIFFRES_BATCH_SIZE. Clips run one
after another in this thread; onnxruntime uses its intra-op threads as in the service.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from app.audio import AudioStream, ClipReader, Whole, Windows, open_audio
from app.config import Settings
from app.models import INPUT, OUTPUTS, ModelInfo, WindowPlan, make_session
from loadtest.clips import Clip, Mix


class Baseline:
    """One session and window plan, as the service would build them from the same settings."""

    def __init__(self, model_path: Path, settings: Settings) -> None:
        self.settings = settings
        self.session = make_session(model_path, settings)
        meta = self.session.get_modelmeta().custom_metadata_map
        self.info = ModelInfo.from_metadata(model_path.stem, model_path, meta)
        self.plan = WindowPlan.for_model(self.info, settings)
        self.infer_s = 0.0
        rng = np.random.default_rng(0)
        for rows in sorted({1, settings.batch_size}):  # warm-up, as the service does before readiness
            self._run((0.01 * rng.standard_normal((rows, self.plan.window))).astype(np.float32))
        self.infer_s = 0.0

    def _run(self, batch: np.ndarray) -> None:
        t = time.perf_counter()
        self.session.run(list(OUTPUTS), {INPUT: batch})
        self.infer_s += time.perf_counter() - t

    def classify(self, data: bytes) -> float:
        """Decode, resample, window and infer one clip; its duration in seconds."""
        s = self.settings
        snd, info = open_audio(io.BytesIO(data), s.max_duration_s)
        try:
            stream = AudioStream(snd, info, self.info.sample_rate, s.max_duration_s)
            reader = ClipReader(stream, self.plan.window, self.plan.hop, self.plan.long_threshold)
            chunk = reader.next(s.batch_size)
            if isinstance(chunk, Whole):
                self._run(chunk.samples[None, :])
            while isinstance(chunk, Windows):
                if chunk.windows:
                    self._run(np.stack(chunk.windows))
                chunk = reader.next(s.batch_size)
            return stream.frames_read / info.sample_rate
        finally:
            snd.close()


def measure(baseline: Baseline, clip_dir: Path, clips: list[Clip], long_fraction: float,
            budget_s: float, seed: int = 0) -> dict[str, Any]:
    """Clips of the load test's mix, one after another, for about `budget_s` seconds."""
    data = {c.name: (clip_dir / c.file).read_bytes() for c in clips}
    mix = Mix(clips, long_fraction, seed, exact=True)
    baseline.infer_s = 0.0
    counts = {"short": 0, "long": 0}
    audio = 0.0
    cpu = time.process_time()
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < budget_s or not any(counts.values()):
        clip = mix.next()
        audio += baseline.classify(data[clip.name])
        counts[clip.kind] = counts.get(clip.kind, 0) + 1
    cpu = time.process_time() - cpu
    n = sum(counts.values())
    return {"clips": n, "by_kind": counts, "seconds": round(elapsed, 2), "audio_seconds": round(audio, 1),
            "clips_per_s": round(n / elapsed, 2), "audio_s_per_s": round(audio / elapsed, 2),
            "cpu_seconds": round(cpu, 2), "audio_s_per_cpu_s": round(audio / cpu, 2) if cpu else None,
            "inference_share": round(baseline.infer_s / elapsed, 3),
            "intra_op_threads": baseline.settings.intra_op_threads or "auto",
            "onnxruntime": ort.__version__}
