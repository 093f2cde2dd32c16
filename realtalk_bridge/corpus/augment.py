"""Make clean synthetic speech sound like a real microphone in a real room (all at 16 kHz).

Pure functions of (audio, rng). None of them shifts the signal in time: the phone timing, and so the
teacher curves, stay valid after any chain of them.
"""
from __future__ import annotations

import numpy as np
from scipy import signal

from realtalk_bridge.audio import SAMPLE_RATE, resample

SR = SAMPLE_RATE


def mic_eq(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A cheap microphone: high-pass, a presence/boxiness bump or dip, a soft top end. Zero-phase (no delay)."""
    hp = rng.uniform(60, 350)
    lp = rng.uniform(3400, 7800)
    sos = [signal.butter(2, hp, "highpass", fs=SR, output="sos"), signal.butter(2, lp, "lowpass", fs=SR, output="sos")]
    y = x
    for s in sos:
        y = signal.sosfiltfilt(s, y)
    # a peaking band: boost or cut a random band by up to 8 dB
    f0, gain_db = rng.uniform(300, 4000), rng.uniform(-8, 8)
    band = signal.sosfiltfilt(signal.butter(2, [f0 / 1.5, min(f0 * 1.5, SR / 2 - 100)], "bandpass", fs=SR,
                                            output="sos"), y)
    y = y + (10 ** (gain_db / 20) - 1) * band
    return y.astype(np.float32)


def room_reverb(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Convolve with a synthetic room impulse response: direct path + exponentially decaying noise tail."""
    rt60 = rng.uniform(0.15, 0.8)
    n = int(rt60 * SR)
    t = np.arange(n) / SR
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
    # brighter early, darker late: walls absorb highs
    tail = signal.sosfilt(signal.butter(1, rng.uniform(2000, 6000), "lowpass", fs=SR, output="sos"), tail)
    pre = int(rng.uniform(0.002, 0.01) * SR)  # first reflections come a few ms after the direct sound
    tail[:pre] = 0.0
    rir = tail * rng.uniform(0.05, 0.3) / (np.sqrt(np.sum(tail**2)) + 1e-9)
    rir[0] = 1.0
    y = signal.fftconvolve(x, rir)[: len(x)]
    return (y / (np.max(np.abs(y)) + 1e-9) * np.max(np.abs(x))).astype(np.float32)


def _colored(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Noise with a 1/f^exponent power spectrum (0 white, 1 pink, 2 brown)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SR)
    f[0] = f[1]
    y = np.fft.irfft(spec / f ** (exponent / 2), n)
    return y / (np.std(y) + 1e-9)


def noise(n: int, rng: np.random.Generator, kind: str | None = None) -> np.ndarray:
    """Unit-RMS background noise of a random everyday kind."""
    kind = kind or rng.choice(["white", "pink", "brown", "hum", "fan", "babble_like", "clicks"])
    if kind == "white":
        y = rng.standard_normal(n)
    elif kind == "pink":
        y = _colored(n, 1.0, rng)
    elif kind == "brown":
        y = _colored(n, 2.0, rng)
    elif kind == "hum":
        f = rng.choice([50.0, 60.0])
        t = np.arange(n) / SR
        y = sum(rng.uniform(0.2, 1.0) / k * np.sin(2 * np.pi * f * k * t + rng.uniform(0, 6.3)) for k in range(1, 8))
        y = y + 0.1 * rng.standard_normal(n)
    elif kind == "fan":
        y = signal.sosfilt(signal.butter(2, rng.uniform(300, 1500), "lowpass", fs=SR, output="sos"),
                           rng.standard_normal(n))
    elif kind == "babble_like":
        # speech-shaped noise with a syllable-rate (4 Hz) envelope: the hard case for a jaw detector
        y = _colored(n, 1.0, rng)
        y = signal.sosfilt(signal.butter(2, [200, 3500], "bandpass", fs=SR, output="sos"), y)
        t = np.arange(n) / SR
        y = y * (1.2 + np.sin(2 * np.pi * rng.uniform(2, 6) * t + rng.uniform(0, 6.3)))
    else:  # clicks: keyboard/mouse-like transients
        y = 0.05 * rng.standard_normal(n)
        for pos in rng.integers(0, max(n - 200, 1), size=max(1, n // SR * 4)):
            y[pos:pos + 200] += rng.standard_normal(min(200, n - pos)) * np.exp(-np.arange(min(200, n - pos)) / 30)
    y = np.asarray(y, dtype=np.float64)
    return (y / (np.sqrt(np.mean(y**2)) + 1e-9)).astype(np.float32)


def add_noise(x: np.ndarray, rng: np.random.Generator, snr_db: float) -> np.ndarray:
    speech_rms = np.sqrt(np.mean(x[np.abs(x) > 1e-4] ** 2)) if np.any(np.abs(x) > 1e-4) else 1e-3
    return (x + noise(len(x), rng) * speech_rms * 10 ** (-snr_db / 20)).astype(np.float32)


def band_limit(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Round trip through a lower sample rate (telephone 8 kHz, old devices 11/12 kHz)."""
    low = int(rng.choice([8000, 11025, 12000]))
    return resample(resample(x, SR, low), low, SR)[: len(x)]


def gain(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Quiet to hot: peak from -35 dBFS to +6 dB over full scale (then hard clipping, like a cheap ADC)."""
    peak = np.max(np.abs(x)) + 1e-9
    target = 10 ** (rng.uniform(-35, 6) / 20)
    return np.clip(x / peak * target, -1.0, 1.0).astype(np.float32)


def speed_perturb(x: np.ndarray, factor: float) -> np.ndarray:
    """Play `factor` times faster: pitch, formants (a shorter or longer vocal tract) and tempo all scale.

    The one augmentation that moves time, by an exact factor: phone times must be divided by `factor`.
    Turns one real speaker into a family of plausible ones (vocal tract length perturbation).
    """
    return resample(np.asarray(x, np.float32), int(round(SR * factor)), SR)


def augment(x: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> tuple[np.ndarray, list[str]]:
    """A random chain; returns the audio and the names of the steps applied (for the manifest)."""
    steps = []
    y = np.asarray(x, dtype=np.float32)
    if rng.random() < 0.6 * strength:
        y, steps = mic_eq(y, rng), steps + ["mic_eq"]
    if rng.random() < 0.5 * strength:
        y, steps = room_reverb(y, rng), steps + ["reverb"]
    if rng.random() < 0.2 * strength:
        y, steps = band_limit(y, rng), steps + ["band_limit"]
    if rng.random() < 0.7 * strength:
        snr = float(rng.choice([0, 5, 10, 15, 20, 30]) + rng.uniform(-2, 2))
        y, steps = add_noise(y, rng, snr), steps + [f"noise@{snr:.0f}dB"]
    y, steps = gain(y, rng), steps + ["gain"]
    return y, steps
