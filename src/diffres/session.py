"""The one onnxruntime session factory: providers, threads and memory options in one place.

Every caller (service, parity, benchmarks, load test, comparison) builds its sessions here, so a
figure measured in-process is measured with exactly the options the service runs with.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import onnxruntime as ort

from diffres.cpu import available_cpus

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


def resolve_providers(requested: Sequence[str], available: Sequence[str]) -> list[str]:
    """Requested providers that exist, CPU always last; none requested: CUDA first when installed."""
    if requested:
        chosen = [p for p in requested if p in available]
        for missing in [p for p in requested if p not in available]:
            log.warning("execution provider %s is not available (have %s); skipped", missing, list(available))
    else:
        chosen = [p for p in (CUDA,) if p in available]
    if CPU not in chosen:
        chosen.append(CPU)
    return chosen


def uses_gpu(requested: Sequence[str]) -> bool:
    """Whether a session for these requested providers runs on a GPU here (CPU is always the fallback)."""
    return resolve_providers(requested, ort.get_available_providers())[0] != CPU


def session_options(*, intra_op_threads: int = 0, inter_op_threads: int = 1, mem_pattern: bool = True,
                    cpu_arena: bool = True, spinning: bool = True,
                    profile_prefix: str | None = None) -> ort.SessionOptions:
    """Explicit thread counts (onnxruntime's defaults follow the host, not the container's quota).

    mem_pattern / cpu_arena off lower the peak RSS of very long single calls (see BENCHMARKS.md).
    spinning off stops idle intra-op threads from busy-waiting, which leaves the CPU to the other
    work of a process (HTTP, decoding) at some cost to a single call's latency.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads or available_cpus()
    options.inter_op_num_threads = inter_op_threads
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_mem_pattern = mem_pattern
    options.enable_cpu_mem_arena = cpu_arena
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return options


def make_session(path: str | Path, *, providers: Sequence[str] = (), intra_op_threads: int = 0,
                 inter_op_threads: int = 1, mem_pattern: bool = True, cpu_arena: bool = True, spinning: bool = True,
                 profile_prefix: str | None = None) -> ort.InferenceSession:
    """An InferenceSession on `path`; 0 intra-op threads = the CPUs the cgroup quota and affinity allow."""
    options = session_options(intra_op_threads=intra_op_threads, inter_op_threads=inter_op_threads,
                              mem_pattern=mem_pattern, cpu_arena=cpu_arena, spinning=spinning,
                              profile_prefix=profile_prefix)
    chosen = resolve_providers(providers, ort.get_available_providers())
    return ort.InferenceSession(str(path), options, providers=chosen)
