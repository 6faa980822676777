"""How many CPUs this process may really use: a container's quota, not the host's core count.

os.cpu_count() reports the host; onnxruntime sized to it in a 2-CPU container oversubscribes badly.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _ancestors(root: Path, rel: str) -> list[Path]:
    """The cgroup folder and its parents up to the mount root: a parent's limit binds too."""
    parts = [p for p in rel.strip("/").split("/") if p]
    return [root.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]


def _cgroup_paths(proc_cgroup: Path) -> tuple[str | None, str | None]:
    """(v2 path, v1 cpu-controller path) from /proc/self/cgroup."""
    text = _read(proc_cgroup) or ""
    v2 = v1 = None
    for line in text.splitlines():
        hid, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hid == "0" and controllers == "":
            v2 = path
        elif "cpu" in controllers.split(","):
            v1 = path
    return v2, v1


def _v2_limit(root: Path, rel: str) -> float | None:
    limits = []
    for folder in _ancestors(root, rel):
        text = _read(folder / "cpu.max")
        if not text:
            continue
        quota, _, period = text.partition(" ")
        if quota != "max" and period:
            limits.append(int(quota) / int(period))
    return min(limits) if limits else None


def _v1_limit(root: Path, rel: str) -> float | None:
    limits = []
    for mount in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        for folder in _ancestors(root / mount, rel):
            quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
            if quota and period and int(quota) > 0 and int(period) > 0:
                limits.append(int(quota) / int(period))
    return min(limits) if limits else None


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """CPU quota in CPUs from cgroup v2 cpu.max or v1 cfs_quota/period; None when unlimited."""
    v2, v1 = _cgroup_paths(proc_cgroup)
    limit = _v2_limit(root, v2 or "/")
    if limit is None:
        limit = _v1_limit(root, v1 or "/")
    return limit


def available_cpus(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int:
    """min(CPUs in our affinity mask, ceil(cgroup quota)), at least 1."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    limit = cgroup_cpu_limit(root, proc_cgroup)
    if limit is not None:
        count = min(count, math.ceil(limit))
    return max(1, count)
