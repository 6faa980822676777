"""Service building blocks without a model: CPU quota, settings, providers, audio streaming, batcher."""

from __future__ import annotations

import asyncio
import io
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from pydantic import ValidationError

from diffres.cpu import available_cpus, cgroup_cpu_limit
from diffres.decode import AudioStream, open_audio
from diffres.errors import AudioTooLong, NonFiniteAudio, Overloaded, TruncatedAudio
from diffres.runner import RowOutput
from diffres.server.batch_policy import BatchPolicy, LengthGrid
from diffres.server.batching import MicroBatcher
from diffres.server.config import Settings
from diffres.session import CPU, CUDA, resolve_providers
from diffres.windows import ClipReader, WindowCutter, WindowPlan
from tests.conftest import encode, tone

# ---------------------------------------------------------------- CPU quota


def fake_cgroup(tmp_path: Path, proc: str, files: dict[str, str]) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    proc_file = tmp_path / "proc_cgroup"
    proc_file.write_text(proc)
    return root, proc_file


def test_cgroup_v2_quota(tmp_path: Path) -> None:
    root, proc = fake_cgroup(tmp_path, "0::/\n", {"cpu.max": "150000 100000\n"})
    assert cgroup_cpu_limit(root, proc) == 1.5
    assert available_cpus(root, proc) == min(2, len(__import__("os").sched_getaffinity(0)))


def test_cgroup_v2_unlimited_and_nested_parent_limit(tmp_path: Path) -> None:
    root, proc = fake_cgroup(tmp_path, "0::/kubepods/pod1\n", {
        "cpu.max": "max 100000", "kubepods/cpu.max": "100000 100000", "kubepods/pod1/cpu.max": "max 100000"})
    assert cgroup_cpu_limit(root, proc) == 1.0  # the parent's limit binds the child
    assert available_cpus(root, proc) == 1
    root2, proc2 = fake_cgroup(tmp_path / "b", "0::/\n", {"cpu.max": "max 100000"})
    assert cgroup_cpu_limit(root2, proc2) is None


def test_cgroup_v1_cfs_quota(tmp_path: Path) -> None:
    root, proc = fake_cgroup(tmp_path, "4:cpu,cpuacct:/docker/abc\n", {
        "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "50000", "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000"})
    assert cgroup_cpu_limit(root, proc) == 0.5
    assert available_cpus(root, proc) == 1  # rounded up, never 0
    root2, proc2 = fake_cgroup(tmp_path / "b", "4:cpu:/\n",
                               {"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"})
    assert cgroup_cpu_limit(root2, proc2) is None


def test_no_cgroup_falls_back_to_affinity(tmp_path: Path) -> None:
    import os
    assert available_cpus(tmp_path / "none", tmp_path / "none") == len(os.sched_getaffinity(0))


# ---------------------------------------------------------------- settings and providers


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFFRES_PORT", "9123")
    monkeypatch.setenv("DIFFRES_PROVIDERS", "CUDAExecutionProvider, CPUExecutionProvider")
    monkeypatch.setenv("DIFFRES_BATCH_WAIT_MS", "2.5")
    monkeypatch.setenv("DIFFRES_MODEL_DIR", "/srv/models")
    s = Settings()
    assert (s.port, s.batch_wait_ms, str(s.model_dir)) == (9123, 2.5, "/srv/models")
    assert s.providers == [CUDA, CPU]
    assert Settings.model_fields["host"].default == "127.0.0.1"


def test_settings_reject_nonsense(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFFRES_BATCH_SIZE", "0")
    with pytest.raises(ValidationError):
        Settings()
    monkeypatch.delenv("DIFFRES_BATCH_SIZE")
    with pytest.raises(ValidationError, match="window_hop_s"):
        Settings(window_s=1.0, window_hop_s=2.0)


def test_providers_cuda_first_when_installed() -> None:
    assert resolve_providers([], [CUDA, CPU]) == [CUDA, CPU]
    assert resolve_providers([], ["AzureExecutionProvider", CPU]) == [CPU]
    assert resolve_providers(["TensorrtExecutionProvider", CUDA], [CUDA, CPU]) == [CUDA, CPU]


# ---------------------------------------------------------------- audio


def test_window_cutter_covers_everything_and_aligns_the_last_window() -> None:
    cutter = WindowCutter(window=100, hop=40)
    x = np.arange(1234, dtype=np.float32)
    out = []
    for i in range(0, len(x), 77):  # blocks unrelated to window or hop
        out += cutter.push(x[i:i + 77])
    out += cutter.finish()
    starts = [s for s, _ in out]
    assert starts[:3] == [0, 40, 80] and starts[-1] == 1234 - 100
    assert all(len(w) == 100 for _, w in out)
    assert all(np.array_equal(w, x[s:s + 100]) for s, w in out)
    assert len(cutter._buf) <= 100 + 77  # never more than a window plus a block
    covered = np.zeros(len(x), bool)
    for s, w in out:
        covered[s:s + len(w)] = True
    assert covered.all()


def test_window_cutter_exact_fit_has_no_extra_window() -> None:
    cutter = WindowCutter(window=100, hop=50)
    out = cutter.push(np.zeros(200, np.float32)) + cutter.finish()
    assert [s for s, _ in out] == [0, 50, 100]


def open_bytes(data: bytes, max_s: float = 3600) -> tuple[sf.SoundFile, object]:
    return open_audio(io.BytesIO(data), max_s)


def test_clip_reader_short_clip_is_whole_and_resampled() -> None:
    snd, info = open_bytes(encode(tone(1.0, 44100, channels=2), 44100))
    plan = WindowPlan(window=1600, hop=800, long_threshold=16000 * 3, frame_hop=160, min_duration_s=0.025)
    reader = ClipReader(AudioStream(snd, info, 16000, 3600), plan)
    [(start, samples)] = reader.next(4)
    assert start == 0 and abs(len(samples) - 16000) <= 2 and not reader.windowed
    assert reader.next(4) == []


def test_clip_reader_long_clip_streams_windows_in_bounded_memory(tmp_path: Path) -> None:
    """Ten minutes at 16 kHz (38 MB as float32) must stream through in a few MB."""
    path = tmp_path / "long.wav"
    with sf.SoundFile(path, "w", 16000, 1, "PCM_16") as f:
        for _ in range(60):
            f.write(tone(10.0, 16000))
    with open(path, "rb") as fh:
        snd, info = open_audio(fh, 3600)
        plan = WindowPlan(window=24800, hop=12400, long_threshold=74400, frame_hop=80, min_duration_s=0.025)
        reader = ClipReader(AudioStream(snd, info, 8000, 3600), plan)
        tracemalloc.start()
        windows = 0
        try:
            while cuts := reader.next(16):
                assert reader.windowed and len(cuts) <= 16
                windows += len(cuts)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert windows == (600 * 8000 - 24800) // 12400 + 1 + 1  # full hops plus the end-aligned one
    assert peak < 8 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"


def test_open_audio_rejects_truncated_and_lying_headers() -> None:
    data = encode(tone(2.0, 16000), 16000)
    with pytest.raises(TruncatedAudio, match="truncated"):
        open_bytes(data[: len(data) // 2])
    with pytest.raises(AudioTooLong, match="limit"):
        open_bytes(data, max_s=1.0)


def test_stream_rejects_non_finite_samples() -> None:
    x = tone(0.5, 16000)
    x[100] = np.inf
    snd, info = open_bytes(encode(x, 16000, subtype="FLOAT"))
    stream = AudioStream(snd, info, 16000, 3600)
    with pytest.raises(NonFiniteAudio, match="NaN or Inf"):
        while stream.read() is not None:
            pass


# ---------------------------------------------------------------- batcher


def policy(max_batch: int = 4, max_padding: float = 0.1, anchor: int = 8) -> BatchPolicy:
    return BatchPolicy(max_batch=max_batch, max_samples=max_batch * anchor * 4, max_padding=max_padding,
                       grid=LengthGrid(anchor=anchor, steps_per_octave=8))


def row_sums(rows: list[np.ndarray]) -> list[RowOutput]:
    return [RowOutput(np.array([row.sum()]), None, len(row), len(row)) for row in rows]


def make_batcher(gate: threading.Event | None = None, max_batch: int = 4,
                 **kwargs: object) -> tuple[MicroBatcher, list[int]]:
    sizes: list[int] = []

    def run(rows: list[np.ndarray], pad_to: int, outputs: object) -> list[RowOutput]:
        if gate is not None:
            assert gate.wait(10)
        sizes.append(len(rows))
        return row_sums(rows)

    options = {"max_wait_s": 0.5, "queue_limit": 16} | kwargs
    return MicroBatcher("test", run, policy(max_batch), **options), sizes  # type: ignore[arg-type]


def value(results: list[RowOutput]) -> float:
    [r] = results
    assert r.logits is not None
    return float(r.logits[0])


@pytest.mark.anyio
async def test_batcher_groups_near_lengths_and_caps_batch_size() -> None:
    batcher, sizes = make_batcher()
    batcher.start()
    leases = [batcher.lease(1) for _ in range(10)]
    inputs = [np.full(16 if i % 2 else 5, i, np.float32) for i in range(10)]  # 16 vs 5: too far apart to pad
    results = await asyncio.gather(*(lease.run([x]) for lease, x in zip(leases, inputs, strict=True)))
    assert [value(r) for r in results] == [float(x.sum()) for x in inputs]  # each caller gets its own row
    assert sorted(sizes) == [1, 1, 4, 4]  # 5 of each length, max batch 4
    for lease in leases:
        lease.release()
    await batcher.close()


def test_length_grid_is_anchored_geometric_and_bounded() -> None:
    grid = LengthGrid(anchor=49600, steps_per_octave=8, floor=6200)
    assert grid.bucket(49600) == 49600 and grid.bucket(49599) == 49600  # windows are never padded
    assert grid.bucket(1) == grid.bucket(6200) == 6200
    for n in (6201, 17000, 49601, 148800):
        b = grid.bucket(n)
        assert n <= b < n * 2 ** (1 / 8) + 1  # at most one grid step of padding
    lengths = grid.lengths_up_to(148800)
    # 3 doublings below the window, 1.58 above it (3 windows), 8 lengths a doubling
    assert lengths == sorted(set(lengths)) and len(lengths) == 24 + 1 + 13


def test_policy_bounds_padding_and_keeps_the_oldest() -> None:
    from diffres.server.batch_policy import choose

    p = BatchPolicy(max_batch=4, max_samples=10**6, max_padding=0.1, grid=LengthGrid(1000, 8))
    plan = choose([1000, 3000, 990, 1000, 980, 1001], p)
    assert plan.rows[0] == 0 and len(plan.rows) == 4 and 1 not in plan.rows  # 3000 is too long to pad to
    lengths = [1000, 3000, 990, 1000, 980, 1001]
    assert plan.padding_share(lengths) <= 0.1
    alone = choose([5000, 100], p)  # nothing near the oldest: it runs alone, padded to the grid
    assert alone.rows == [0] and alone.padded_length == p.grid.bucket(5000)
    capped = choose([1000] * 4, BatchPolicy(4, 2000, 0.1, LengthGrid(1000, 8)))
    assert len(capped.rows) == 2  # rows x padded length <= max_samples


@pytest.mark.anyio
async def test_batcher_refuses_at_once_when_full_and_drains_on_close() -> None:
    gate = threading.Event()
    batcher, sizes = make_batcher(gate, queue_limit=3, max_wait_s=0.0)
    batcher.start()
    held = [batcher.lease(1) for _ in range(3)]
    with pytest.raises(Overloaded) as err:
        batcher.lease(1)
    assert err.value.status == 503 and err.value.headers["Retry-After"]
    pending = [asyncio.ensure_future(lease.run([np.ones(4, np.float32)])) for lease in held]
    await asyncio.sleep(0)  # let the three inputs reach the queue (the first batch blocks on the gate)
    closing = asyncio.ensure_future(batcher.close())
    gate.set()
    assert [value(r) for r in await asyncio.gather(*pending)] == [4.0, 4.0, 4.0]  # queued work still ran
    await closing
    assert sum(sizes) == 3


@pytest.mark.anyio
async def test_batcher_survives_a_failing_batch() -> None:
    calls = 0

    def run(rows: list[np.ndarray], pad_to: int, outputs: object) -> list[RowOutput]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        return row_sums(rows)

    batcher = MicroBatcher("t", run, policy(2), max_wait_s=0, queue_limit=4)
    batcher.start()
    with batcher.lease(1) as lease:
        with pytest.raises(RuntimeError, match="boom"):
            await lease.run([np.zeros(3, np.float32)])
        assert value(await lease.run([np.zeros(3, np.float32)])) == 0.0
    await batcher.close()


@pytest.mark.anyio
async def test_one_poisoned_input_does_not_fail_its_batch_mates() -> None:
    def run(rows: list[np.ndarray], pad_to: int, outputs: object) -> list[RowOutput]:
        if any((x < 0).any() for x in rows):
            raise ValueError("poison")
        return row_sums(rows)

    batcher = MicroBatcher("t", run, policy(3), max_wait_s=5, queue_limit=3)
    batcher.start()
    with batcher.lease(3) as lease:
        futures = [asyncio.ensure_future(lease.run([np.full(4, v, np.float32)])) for v in (1, -1, 2)]
        results = await asyncio.gather(*futures, return_exceptions=True)
    assert value(results[0]) == 4.0 and value(results[2]) == 8.0 and isinstance(results[1], ValueError)
    await batcher.close()


@pytest.mark.anyio
async def test_cancelled_request_waits_for_its_decode_thread() -> None:
    """A disconnect cancels the request; it must not close the decoder while a thread still reads it
    (libsndfile segfaults on sf_close under sf_readf). Cancelled twice, it still waits."""
    from diffres.server.threads import run_to_completion

    started, finished = threading.Event(), threading.Event()

    def decode() -> int:
        started.set()
        time.sleep(0.4)
        finished.set()
        return 1

    task = asyncio.ensure_future(run_to_completion(decode))
    while not started.is_set():
        await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert finished.is_set()  # the CancelledError came only after the thread ended
    assert await run_to_completion(lambda: 2) == 2


def test_call_layout_one_single_threaded_call_per_cpu_by_default() -> None:
    from diffres.server.loaded import call_layout

    layout = call_layout(Settings(), on_gpu=False, cpus=4)
    assert (layout.threads, layout.calls) == (1, 4)
    explicit = call_layout(Settings(intra_op_threads=2), on_gpu=False, cpus=4)
    assert (explicit.threads, explicit.calls) == (2, 2)  # threads set: as many calls as fit
    calls = call_layout(Settings(concurrent_calls=1), on_gpu=False, cpus=4)
    assert (calls.threads, calls.calls) == (4, 1)  # one call at a time over every CPU (the old layout)
    gpu = call_layout(Settings(), on_gpu=True, cpus=4)
    assert (gpu.threads, gpu.calls) == (0, 1)


@pytest.mark.anyio
async def test_batcher_runs_concurrent_calls_at_once() -> None:
    """With concurrent_calls=2, a second batch starts while the first still runs (in its own thread)."""
    running, peak = [0], [0]
    lock = threading.Lock()

    def run(rows: list[np.ndarray], pad_to: int, outputs: object) -> list[RowOutput]:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.2)
        with lock:
            running[0] -= 1
        return row_sums(rows)

    batcher = MicroBatcher("test", run, policy(1), max_wait_s=0.0, queue_limit=64,  # type: ignore[arg-type]
                           concurrent_calls=2)
    batcher.start()
    leases = [batcher.lease(1) for _ in range(4)]
    started = time.monotonic()
    results = await asyncio.gather(*(lease.run([np.full(8, i, np.float32)]) for i, lease in enumerate(leases)))
    assert [value(r) for r in results] == [0.0, 8.0, 16.0, 24.0]
    assert peak[0] == 2 and time.monotonic() - started < 0.75  # 4 single-row batches, two at a time
    for lease in leases:
        lease.release()
    await batcher.close()
