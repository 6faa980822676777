"""onnxruntime sessions as the benchmark runs them. No torch here: the memory probe imports this."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort


MEMORY_MODES = ("default", "no-mem-pattern", "no-arena")


def session_options(threads: int, profile_prefix: str | None = None, memory: str = "default") -> ort.SessionOptions:
    """Thread counts set explicitly: onnxruntime's defaults follow the machine, not the benchmark.

    memory: "default" (arena + memory pattern), "no-mem-pattern" (no pre-planned block for all
    intermediates of a shape), "no-arena" (plain malloc/free) - peak RSS differs a lot on long inputs.
    """
    if memory not in MEMORY_MODES:
        raise ValueError(f"memory must be one of {MEMORY_MODES}")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.enable_mem_pattern = memory != "no-mem-pattern"
    opts.enable_cpu_mem_arena = memory != "no-arena"
    if profile_prefix:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    return opts


def session(path: str | Path, threads: int, profile_prefix: str | None = None,
            memory: str = "default") -> ort.InferenceSession:
    return ort.InferenceSession(str(path), session_options(threads, profile_prefix, memory),
                                providers=["CPUExecutionProvider"])
