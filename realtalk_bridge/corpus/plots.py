"""Pictures of teacher curves over the speech they came from (docs/teacher.md). matplotlib, Agg."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from realtalk_bridge.audio import SAMPLE_RATE

SHOWN = ("jawOpen", "mouthClose", "mouthFunnel", "mouthPucker", "mouthStretchLeft", "mouthSmileLeft",
         "mouthRollLower", "mouthPressLeft")


def log_spectrogram(audio: np.ndarray, n_fft: int = 512, hop: int = 160) -> np.ndarray:
    """(freq, time) dB magnitude, time step hop / 16000 s."""
    x = np.asarray(audio, dtype=np.float64)
    if len(x) < n_fft:
        x = np.pad(x, (0, n_fft - len(x)))
    n = 1 + (len(x) - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(n)[:, None]
    spec = np.abs(np.fft.rfft(x[idx] * np.hanning(n_fft)[None, :], axis=1)).T
    return 20 * np.log10(spec + 1e-6)


def plot_teacher(path: Path, audio: np.ndarray, curves: dict[str, np.ndarray], fps: int, phones=None,
                 title: str = "", extra: dict[str, np.ndarray] | None = None) -> None:
    """Spectrogram with phone labels on top, the named curves below (and optional dashed `extra` curves)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dur = len(audio) / SAMPLE_RATE
    fig, (ax0, ax1) = plt.subplots(2, 1, figsize=(12, 6), sharex=True, gridspec_kw={"height_ratios": [1, 1.3]})
    spec = log_spectrogram(audio)
    ax0.imshow(spec, origin="lower", aspect="auto", extent=[0, dur, 0, SAMPLE_RATE / 2000],
               vmin=spec.max() - 80, vmax=spec.max(), cmap="magma")
    ax0.set_ylabel("kHz")
    if phones:
        for p in phones:
            ax0.axvline(p.start, color="w", lw=0.4, alpha=0.6)
            ax0.text((p.start + p.end) / 2, 7.3, p.label, color="w", ha="center", va="top", fontsize=7)
    ax0.set_title(title)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, y) in enumerate(curves.items()):
        t = np.arange(len(y)) / fps
        ax1.plot(t, y, color=colors[i % len(colors)], lw=1.5, label=name)
        if extra and name in extra:
            ax1.plot(np.arange(len(extra[name])) / fps, extra[name], color=colors[i % len(colors)], lw=1.0, ls="--")
    ax1.set_ylim(0, 1)
    ax1.set_xlabel("s")
    ax1.legend(loc="upper right", fontsize=7, ncol=4)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
