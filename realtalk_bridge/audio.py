"""Audio I/O at the edges: read any file soundfile can, mono, resampled to 16 kHz.

Everything inside the package works on float32 mono at SAMPLE_RATE.
"""
from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16000  # Hz, what every audio front-end expects


def to_mono_f32(samples: np.ndarray) -> np.ndarray:
    """(n,) or (n, channels) of any dtype -> float32 (n,) in [-1, 1]."""
    x = np.asarray(samples)
    if x.ndim == 2:
        x = x.mean(axis=1)
    elif x.ndim != 1:
        raise ValueError(f"audio must be 1-D or 2-D (samples, channels), got shape {x.shape}")
    if x.dtype == np.int16:
        return (x.astype(np.float32) / 32768.0)
    if x.dtype == np.int32:
        return (x.astype(np.float32) / 2147483648.0)
    if x.dtype == np.uint8:
        return (x.astype(np.float32) - 128.0) / 128.0
    return x.astype(np.float32, copy=False)


def resample(x: np.ndarray, sr_in: int, sr_out: int = SAMPLE_RATE) -> np.ndarray:
    """High-quality resampling (soxr); a no-op when the rates match."""
    if sr_in == sr_out:
        return np.asarray(x, dtype=np.float32)
    if sr_in <= 0:
        raise ValueError(f"sample rate must be positive, got {sr_in}")
    import soxr

    return soxr.resample(np.asarray(x, dtype=np.float32), sr_in, sr_out).astype(np.float32, copy=False)


def load_audio(path, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Read an audio file as float32 mono at `sr`. Raises ValueError naming the file on failure."""
    import os

    import soundfile as sf

    # libsndfile says "System error." for these; say what is wrong
    if not os.path.exists(path):
        raise ValueError(f"cannot read audio file {path}: no such file")
    if os.path.isdir(path):
        raise ValueError(f"cannot read audio file {path}: it is a folder")
    try:
        data, file_sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises several types; the caller wants one clear message
        raise ValueError(f"cannot read audio file {path}: {exc}") from exc
    return resample(to_mono_f32(data), file_sr, sr)


def decode_audio_bytes(data: bytes, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Decode an encoded audio file (wav, flac, ogg) held in memory."""
    import io

    import soundfile as sf

    try:
        samples, file_sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as exc:
        raise ValueError(f"cannot decode audio bytes: {exc}") from exc
    return resample(to_mono_f32(samples), file_sr, sr)


def save_audio(path, samples: np.ndarray, sr: int = SAMPLE_RATE) -> None:
    import soundfile as sf

    sf.write(str(path), np.asarray(samples, dtype=np.float32), sr, subtype="PCM_16")
