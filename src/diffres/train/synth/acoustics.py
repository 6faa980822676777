"""Rooms and noise for any waveform: the generator's, and real keyword clips at training time.

Pure numpy + pyroomacoustics (no torch), every random choice from the caller's
numpy Generator, so the same generator state gives the same samples. Both transforms keep the
waveform's length and alignment (a keyword stays where it was): the room's impulse response is cut
so that its direct path lands on sample 0, and the reverberant result is scaled back to the dry
signal's RMS, so the caller keeps control of the level.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np

SPEED_OF_SOUND = 343.0
RT60_RANGE = (0.1, 0.8)  # seconds: a car or a furnished booth up to a bare kitchen or hall
MAX_ORDER = 80  # image-source order cap: bounds the worst case (~0.5 s an impulse response) for long RT60
NOISE_COLORS = {"white": 0.0, "pink": 1.0, "brown": 2.0}  # power spectrum ~ 1/f^exponent
MAX_PEAK = 0.99


def colored_noise(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Noise with power spectrum ~ 1/f^exponent (0 white, 1 pink, 2 brown), unit RMS. The same recipe as
    diffres.train.background.colored_noise, here without importing torch."""
    if n <= 0:
        return np.zeros(0, np.float32)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n)
    f[0] = f[1] if n > 2 else 1.0
    x = np.fft.irfft(spectrum / f ** (exponent / 2), n)
    return (x / max(float(np.sqrt(np.mean(x ** 2))), 1e-12)).astype(np.float32)


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if len(samples) else 0.0


def measured_snr_db(signal: np.ndarray, noise: np.ndarray) -> float:
    """10 log10 of the power ratio, over the whole clips (as mix_noise sets it)."""
    return 20.0 * float(np.log10(max(rms(signal), 1e-20) / max(rms(noise), 1e-20)))


def mix_noise(samples: np.ndarray, snr_db: float, rng: np.random.Generator, color: str | float | None = None
              ) -> np.ndarray:
    """samples + coloured noise at `snr_db` dB below the samples' power (over the whole clip), same length.

    color: "white" | "pink" | "brown", an exponent, or None for a random one of the three. Silence
    stays silence (no signal power, no noise). No clipping is applied: scale the result as needed.
    """
    x = np.asarray(samples, np.float32)
    exponent = NOISE_COLORS[str(rng.choice(list(NOISE_COLORS)))] if color is None else \
        NOISE_COLORS[color] if isinstance(color, str) else float(color)
    noise = colored_noise(len(x), exponent, rng)
    return (x + noise * np.float32(rms(x) * 10 ** (-snr_db / 20))).astype(np.float32)


@dataclass(frozen=True)
class Room:
    """A shoebox room: size and positions in metres, the wanted RT60 (s), the wall energy absorption
    that gives it (Sabine, pyroomacoustics.inverse_sabine) and the image-source order used."""

    size: tuple[float, float, float]
    source: tuple[float, float, float]
    mic: tuple[float, float, float]
    rt60: float
    absorption: float
    max_order: int

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @staticmethod
    def from_dict(data: dict[str, object]) -> Room:
        return Room(tuple(data["size"]), tuple(data["source"]), tuple(data["mic"]),  # type: ignore[arg-type]
                    float(data["rt60"]), float(data["absorption"]), int(data["max_order"]))  # type: ignore[arg-type]


def _pyroomacoustics() -> Any:
    """Imported on first use (a second or so), with an error that says what to install."""
    try:
        import pyroomacoustics
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError("simulated rooms need pyroomacoustics (pip install 'diffres[train]' or "
                                  "pip install pyroomacoustics), or generate with --no-rooms", name=exc.name) from None
    return pyroomacoustics


def _r(x: float) -> float:
    return round(float(x), 3)


def random_room(rng: np.random.Generator, rt60_range: tuple[float, float] = RT60_RANGE) -> Room:
    """A random shoebox (3-10 x 2.5-8 x 2.4-3.5 m) with a random RT60, talker and microphone.

    A short RT60 needs absorption that a big room cannot have (Sabine: a = 0.161 V / (S RT60) <= 1),
    so such rooms are shrunk until it fits: a 0.1 s room is a booth or a car, as in life.
    """
    pra = _pyroomacoustics()
    rt60 = _r(rng.uniform(*rt60_range))
    size = np.array([rng.uniform(3.0, 10.0), rng.uniform(2.5, 8.0), rng.uniform(2.4, 3.5)])
    volume, surface = float(np.prod(size)), 2.0 * float(size[0] * size[1] + size[0] * size[2] + size[1] * size[2])
    needed = 0.161 * volume / (surface * rt60)
    if needed > 0.85:
        size = np.maximum(size * 0.85 / needed, 1.2)
    size = np.round(size, 3)
    absorption, order = pra.inverse_sabine(rt60, size)
    margin = np.minimum(0.3, size / 4)
    source = np.round([rng.uniform(margin[0], size[0] - margin[0]), rng.uniform(margin[1], size[1] - margin[1]),
                       rng.uniform(min(1.0, size[2] - margin[2]), min(1.9, size[2] - margin[2]))], 3)
    mic = np.round([rng.uniform(m, s - m) for m, s in zip(margin, size)], 3)
    return Room(tuple(map(_r, size)), tuple(map(_r, source)), tuple(map(_r, mic)), rt60, _r(absorption),
                int(min(order, MAX_ORDER)))


@lru_cache(maxsize=512)  # ~100 kB each: a generator's whole room pool fits
def room_impulse_response(room: Room, sample_rate: int) -> np.ndarray:
    """The room's impulse response from source to mic (image-source method), cut to start at its direct
    path (the strongest early tap), peak-normalised. Cached: a room is simulated once per process."""
    pra = _pyroomacoustics()
    sim = pra.ShoeBox(list(room.size), fs=sample_rate, materials=pra.Material(room.absorption),
                      max_order=room.max_order, air_absorption=False)
    sim.add_source(list(room.source))
    sim.add_microphone(list(room.mic))
    sim.compute_rir()
    h = np.asarray(sim.rir[0][0], np.float64)
    distance = float(np.linalg.norm(np.subtract(room.source, room.mic)))
    early = int(distance / SPEED_OF_SOUND * sample_rate) + 100  # the direct path plus the delay filter's half
    start = int(np.argmax(np.abs(h[:early])))
    h = h[start:]
    return (h / max(float(np.max(np.abs(h))), 1e-12)).astype(np.float32)


def apply_impulse_response(samples: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve, keep the first len(samples) samples (aligned: rir[0] is the direct path) and the dry RMS."""
    x = np.asarray(samples, np.float32)
    if not len(x):
        return x.copy()
    n = 1 << (len(x) + len(rir) - 2).bit_length()  # FFT size >= the full convolution: no wrap-around
    wet = np.fft.irfft(np.fft.rfft(x.astype(np.float64), n) * np.fft.rfft(rir.astype(np.float64), n), n)[: len(x)]
    gain = rms(x) / max(rms(wet), 1e-12)
    return (wet * gain).astype(np.float32)


def reverberate(samples: np.ndarray, sample_rate: int, rng: np.random.Generator, room: Room | None = None
                ) -> np.ndarray:
    """samples as heard from a random (or the given) room: same length, same alignment, same RMS."""
    room = room or random_room(rng)
    return apply_impulse_response(samples, room_impulse_response(room, int(sample_rate)))


class RirBank:
    """A fixed set of random rooms' impulse responses, simulated once: at training time reverberation
    then costs only a convolution (simulating a long-RT60 room takes up to half a second)."""

    def __init__(self, count: int, sample_rate: int, seed: int = 0, rt60_range: tuple[float, float] = RT60_RANGE
                 ) -> None:
        rng = np.random.default_rng(seed)
        self.rooms = [random_room(rng, rt60_range) for _ in range(count)]
        self.sample_rate = int(sample_rate)
        self.rirs = [room_impulse_response(r, self.sample_rate) for r in self.rooms]

    def reverberate(self, samples: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return apply_impulse_response(samples, self.rirs[int(rng.integers(len(self.rirs)))])


def augment(samples: np.ndarray, sample_rate: int, rng: np.random.Generator, room_probability: float = 0.7,
            noise_probability: float = 0.7, snr_range: tuple[float, float] = (0.0, 30.0),
            rirs: RirBank | None = None) -> np.ndarray:
    """Training-time augmentation: maybe a room (from `rirs` when given: fast), maybe noise at a random
    SNR; same length, peak kept under full scale."""
    x = np.asarray(samples, np.float32)
    if rng.random() < room_probability:
        x = rirs.reverberate(x, rng) if rirs is not None else reverberate(x, sample_rate, rng)
    if rng.random() < noise_probability:
        x = mix_noise(x, float(rng.uniform(*snr_range)), rng)
    return limit_peak(x)


def limit_peak(samples: np.ndarray, peak: float = MAX_PEAK) -> np.ndarray:
    """Scaled down (never up) so that no sample exceeds `peak`."""
    top = float(np.max(np.abs(samples))) if len(samples) else 0.0
    return (samples * np.float32(peak / top)).astype(np.float32) if top > peak else samples.astype(np.float32)
