"""What runs rows through a model: `OnnxModel` (one session call per batch) and the `Runner` the pipeline takes.

`OnnxModel.run(rows)` is the only place that pads rows into one `[batch, samples]` call with
`lengths` and splits the outputs back per row, trimming `importance` and `logmel` to each row's
frames. The service's micro-batcher, `SessionRunner` (the Python API), the benchmarks, the load
test, parity and the comparison all use it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime as ort

from diffres import contract as c
from diffres.session import make_session

# What a classification needs; `logmel` is large (frames x n_mels per row): ask for it explicitly.
DEFAULT_OUTPUTS = (c.LOGITS, c.IMPORTANCE, c.FRAMES_IN, c.FRAMES_OUT)


@dataclass(frozen=True)
class RowOutput:
    """One row's outputs, trimmed to its own frames; None for outputs that were not asked for."""

    logits: np.ndarray | None
    importance: np.ndarray | None
    frames_in: int
    frames_out: int
    logmel: np.ndarray | None = None


def check_io(session: ort.InferenceSession, name: str) -> None:
    """The graph's tensors must be the contract's, or the model is refused at load time."""
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    if inputs != list(c.INPUTS) or any(o not in outputs for o in c.OUTPUTS):
        raise c.ContractError(f"model '{name}': expected inputs {list(c.INPUTS)} and outputs {list(c.OUTPUTS)}, "
                              f"got {inputs} -> {outputs} (re-export it with `diffres export`)")


def pad_rows(rows: Sequence[np.ndarray], pad_to: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows zero-padded into [batch, max(longest, pad_to)] float32, and their lengths (int64)."""
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    waveform = np.zeros((len(rows), max(int(lengths.max()), pad_to)), dtype=np.float32)
    for i, row in enumerate(rows):
        waveform[i, :len(row)] = row
    return waveform, lengths


def split_rows(out: Mapping[str, np.ndarray], lengths: np.ndarray, backbone_hop: int) -> list[RowOutput]:
    """A padded batch's outputs per row, `importance` and `logmel` trimmed to the row's own frames (on the
    frontend's frame grid: ChangeHopSize's is coarser)."""
    frames = c.frames_in(lengths, backbone_hop)

    def row(i: int) -> RowOutput:
        def trimmed(key: str) -> np.ndarray | None:
            return out[key][i, :int(frames[i])] if key in out else None

        return RowOutput(logits=out[c.LOGITS][i] if c.LOGITS in out else None, importance=trimmed(c.IMPORTANCE),
                         frames_in=int(out[c.FRAMES_IN][i]), frames_out=int(out[c.FRAMES_OUT][i]),
                         logmel=trimmed(c.LOGMEL))

    return [row(i) for i in range(len(lengths))]


class OnnxModel:
    """A session of a contract model and its metadata; `run` pads, calls once and splits per row."""

    def __init__(self, session: ort.InferenceSession, name: str) -> None:
        check_io(session, name)
        self.session = session
        self.info = c.ModelInfo.from_metadata(name, session.get_modelmeta().custom_metadata_map)

    @classmethod
    def load(cls, path: str | Path, *, name: str | None = None, providers: Sequence[str] = (),
             intra_op_threads: int = 0, inter_op_threads: int = 1, mem_pattern: bool = True,
             cpu_arena: bool = True, spinning: bool = True) -> OnnxModel:
        """Session from the one factory; the model's name defaults to the file stem."""
        session = make_session(path, providers=providers, intra_op_threads=intra_op_threads,
                               inter_op_threads=inter_op_threads, mem_pattern=mem_pattern, cpu_arena=cpu_arena,
                               spinning=spinning)
        return cls(session, name or Path(path).stem)

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def run_padded(self, waveform: np.ndarray, lengths: np.ndarray | None = None,
                   outputs: Sequence[str] = DEFAULT_OUTPUTS,
                   on_cpu: Callable[[float], None] | None = None) -> dict[str, np.ndarray]:
        """One session call on an already padded batch; lengths absent: every row full length. `on_cpu` is
        given the session call's CPU seconds (the calling thread's: all of it with one intra-op thread)."""
        if lengths is None:
            lengths = np.full(waveform.shape[0], waveform.shape[1], dtype=np.int64)
        unknown = [o for o in outputs if o not in c.OUTPUTS]
        if unknown:
            raise ValueError(f"unknown outputs {unknown}; the contract has {list(c.OUTPUTS)}")
        cpu = time.thread_time()
        values = self.session.run(list(outputs), {c.WAVEFORM: waveform, c.LENGTHS: lengths})
        if on_cpu is not None:
            on_cpu(time.thread_time() - cpu)
        result = dict(zip(outputs, values, strict=True))
        logits = result.get(c.LOGITS)
        if logits is not None and logits.shape[1] != len(self.info.labels):
            raise c.ContractError(f"model '{self.name}' gave {logits.shape[1]} logits for "
                                  f"{len(self.info.labels)} labels")
        return result

    def run(self, rows: Sequence[np.ndarray], outputs: Sequence[str] = DEFAULT_OUTPUTS,
            pad_to: int = 0, on_cpu: Callable[[float], None] | None = None) -> list[RowOutput]:
        """Per-row outputs of one call on `rows` (1-D float32 arrays of any lengths).

        `pad_to` pads the batch to at least that many samples, so a caller can bound the set of
        shapes onnxruntime sees (it keeps memory per shape); results do not depend on it. `on_cpu`:
        as in `run_padded`.
        """
        if not rows or any(np.ndim(r) != 1 for r in rows):
            raise ValueError("run() needs at least one row, each a 1-D array of samples")
        waveform, lengths = pad_rows(rows, pad_to)
        wanted = list(dict.fromkeys([*outputs, c.FRAMES_IN, c.FRAMES_OUT]))  # frames trim the rest
        return split_rows(self.run_padded(waveform, lengths, wanted, on_cpu), lengths, self.info.backbone_hop)

    def warm_up(self, samples: int, batch_sizes: Sequence[int] = (1,)) -> None:
        """First calls allocate arenas and pick kernels: pay that before taking traffic or timing."""
        rng = np.random.default_rng(0)
        for batch in sorted(set(batch_sizes)):
            rows = list((0.01 * rng.standard_normal((batch, samples))).astype(np.float32))
            self.run(rows)


class Runner(Protocol):
    """Runs rows (1-D float32 arrays of any lengths) and returns each row's outputs, in order.

    The pipeline's only way to the model: the service passes its micro-batcher (rows of many
    requests share a call), the Python API a `SessionRunner`. `slots` is the most rows one call
    takes, so the pipeline decodes no further ahead than that.
    """

    slots: int

    def __call__(self, rows: Sequence[np.ndarray], outputs: Sequence[str]) -> list[RowOutput]: ...


class SessionRunner:
    """The plain runner: each call is one padded session call on the rows it is given."""

    def __init__(self, model: OnnxModel, slots: int = 16) -> None:
        self.model = model
        self.slots = slots

    def __call__(self, rows: Sequence[np.ndarray], outputs: Sequence[str]) -> list[RowOutput]:
        return self.model.run(rows, outputs)
