"""Audio front-ends: raw 16 kHz waveform -> 50 Hz feature tokens.

Both front-ends share one interface: `forward(audio (B, S)) -> (B, S // hop, out_dim)` with
hop = 320 samples (20 ms), so a window of l * 320 samples gives exactly l tokens.

- `LogMelFrontend`: STFT as a conv1d with fixed DFT kernels and the mel matrix as a buffer, so the
  whole thing exports to plain ONNX (Conv, MatMul, Log) and the runtime needs only onnxruntime.
- `HubertFrontend`: transformers' HubertModel (weights from a local folder when the user has them,
  otherwise a small config trained from scratch together with the A2E).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SAMPLE_RATE = 16000
HOP = 320  # 20 ms -> 50 Hz audio tokens


def hann_window(n: int) -> np.ndarray:
    # periodic Hann, as torch.stft / librosa use
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float64)


def dft_kernels(n_fft: int) -> np.ndarray:
    """(2 * (n_fft // 2 + 1), 1, n_fft) windowed cos / -sin kernels: conv1d with them is an STFT."""
    n_bins = n_fft // 2 + 1
    k = np.arange(n_bins)[:, None]
    n = np.arange(n_fft)[None, :]
    ang = 2 * np.pi * k * n / n_fft
    w = hann_window(n_fft)[None, :]
    kern = np.concatenate([np.cos(ang) * w, -np.sin(ang) * w], axis=0)
    return kern[:, None, :].astype(np.float32)


def mel_filterbank(n_mels: int, n_fft: int, sr: int = SAMPLE_RATE, fmin: float = 20.0, fmax: float | None = None) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular HTK-mel filters with Slaney-style area normalisation."""
    fmax = fmax or sr / 2
    hz_to_mel = lambda f: 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)  # noqa: E731
    mel_to_hz = lambda m: 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)  # noqa: E731
    mels = np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2)
    hz = mel_to_hz(mels)
    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    fb = np.zeros((n_mels, len(freqs)))
    for m in range(n_mels):
        lo, c, hi = hz[m], hz[m + 1], hz[m + 2]
        up = (freqs - lo) / (c - lo)
        down = (hi - freqs) / (hi - c)
        fb[m] = np.maximum(0, np.minimum(up, down)) * (2.0 / (hi - lo))
    return fb.astype(np.float32)


class LogMelFrontend(nn.Module):
    """Log-mel spectrogram at 50 Hz plus a small conv stack for local context.

    Zero padding of (n_fft - hop) / 2 on each side makes S samples give S // hop frames, each frame
    centred on its 20 ms hop, so the token grid is the same as HuBERT's.
    """

    def __init__(self, n_mels: int = 40, n_fft: int = 400, out_dim: int = 128):
        super().__init__()
        assert n_fft >= HOP and (n_fft - HOP) % 2 == 0
        self.n_fft, self.n_mels, self.out_dim = n_fft, n_mels, out_dim
        self.pad = (n_fft - HOP) // 2
        self.register_buffer("dft", torch.from_numpy(dft_kernels(n_fft)), persistent=False)
        self.register_buffer("mel", torch.from_numpy(mel_filterbank(n_mels, n_fft)), persistent=False)
        self.n_bins = n_fft // 2 + 1
        # 2 convs (kernel 3) give each token +-40 ms of context before the transformer
        self.conv1 = nn.Conv1d(n_mels, out_dim, 3, padding=1)
        self.conv2 = nn.Conv1d(out_dim, out_dim, 3, padding=1)

    def logmel(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, S) -> (B, n_mels, S // hop)"""
        x = F.pad(audio[:, None, :], (self.pad, self.pad))
        spec = F.conv1d(x, self.dft, stride=HOP)  # (B, 2*bins, frames)
        re, im = spec[:, : self.n_bins], spec[:, self.n_bins:]
        power = re * re + im * im
        mel = torch.matmul(self.mel, power)
        # fixed scaling (no per-utterance statistics) keeps windows independent of each other
        return (torch.log(mel + 1e-6) + 4.0) / 4.0

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        x = self.logmel(audio)
        x = F.gelu(self.conv1(x))
        x = F.gelu(self.conv2(x))
        return x.transpose(1, 2)  # (B, frames, out_dim)


class HubertFrontend(nn.Module):
    """HuBERT features at 50 Hz. `path`: a local folder with a transformers HuBERT checkpoint.

    HuBERT's conv stack has a 400-sample receptive field at 320 hop, so we pad 40 samples on each side
    to get S // 320 frames like the log-mel front-end.
    """

    def __init__(self, out_dim: int = 128, path: str | None = None, config: dict | None = None,
                 hidden_size: int = 96, num_layers: int = 2, num_heads: int = 4, intermediate_size: int = 256):
        super().__init__()
        from transformers import HubertConfig, HubertModel

        if path:
            self.hubert = HubertModel.from_pretrained(path, local_files_only=True)
        elif config is not None:
            # rebuilding a trained model: the checkpoint carries the config, its state dict the weights
            self.hubert = HubertModel(HubertConfig(**config))
        else:
            cfg = HubertConfig(
                hidden_size=hidden_size, num_hidden_layers=num_layers, num_attention_heads=num_heads,
                intermediate_size=intermediate_size, conv_dim=(64,) * 7, num_conv_pos_embeddings=32,
                num_conv_pos_embedding_groups=4, do_stable_layer_norm=True, feat_extract_norm="layer",
                mask_time_prob=0.0,
            )
            self.hubert = HubertModel(cfg)
        self.proj = nn.Linear(self.hubert.config.hidden_size, out_dim)
        self.out_dim = out_dim

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        x = F.pad(audio, (40, 40))
        h = self.hubert(x).last_hidden_state
        return self.proj(h)


class TokenFrontend(nn.Module):
    """Precomputed encoder features (B, l, in_dim) -> (B, l, out_dim): the A2E side of the Whisper front-end.

    The Whisper encoder itself runs outside the A2E graph (nets/whisper.py: it streams with cached state,
    which a window-at-a-time graph cannot hold), so the A2E's "audio" input is its features."""

    def __init__(self, out_dim: int = 128, in_dim: int = 384):
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        self.proj = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, out_dim), nn.GELU())

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.proj(tokens)


def make_frontend(kind: str, out_dim: int, n_mels: int = 40, n_fft: int = 400, hubert_path: str | None = None,
                  hubert_config: dict | None = None) -> nn.Module:
    if kind == "mel":
        return LogMelFrontend(n_mels=n_mels, n_fft=n_fft, out_dim=out_dim)
    if kind == "hubert":
        return HubertFrontend(out_dim=out_dim, path=hubert_path, config=hubert_config)
    if kind == "whisper":
        return TokenFrontend(out_dim=out_dim)
    raise ValueError(f"unknown audio front-end {kind!r} (choose 'mel', 'hubert' or 'whisper')")


def n_tokens(n_samples: int) -> int:
    return n_samples // HOP

