"""The streamed Whisper front-end at run time: onnxruntime + numpy, one `EncoderState` per audio stream.

A whisper-config A2E ships as two ONNX files: the A2E itself (its input is a window of encoder features) and
the encoder step graph (nets/whisper.EncoderStep, exported by `export a2e`). This module runs the step graph:
40 ms of audio (one 2-token chunk) at a time, with each stream's two segment caches kept here in numpy
(nets/whisper.py explains the double segmentation). The same state machine serves the stream and the
offline path, so both compute the same features.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

META_KEY = "realtalk_whisper_step"
CHUNK_SAMPLES = 640


class EncoderRuntime:
    """One onnxruntime session on an exported encoder step graph, plus the state a fresh stream starts from."""

    def __init__(self, path: str | Path, providers: list[str] | None = None, threads: int | None = 1):
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no Whisper encoder step model at {path} (the A2E model's metadata names it)")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if providers is None:
            available = ort.get_available_providers()
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        except Exception as exc:
            raise ValueError(f"cannot load ONNX model {path}: {exc}") from exc
        raw = self.session.get_modelmeta().custom_metadata_map.get(META_KEY)
        if raw is None:
            raise ValueError(f"{path} is not a Whisper encoder step model (no {META_KEY!r} metadata)")
        meta = json.loads(raw)
        self.path = path
        self.meta = meta
        self.segment = int(meta["segment"])
        self.chunk = int(meta["chunk"])
        self.step_samples = int(meta["step_samples"])
        self.stem_left = int(meta["stem_left"])
        self.stem_right = int(meta["stem_right"])
        self.dim = int(meta["dim"])
        self.n_layers = int(meta["n_layers"])
        self.k_shape = tuple(meta["k_shape"])  # (2, H, dh, S) per stream and layer
        self.v_shape = tuple(meta["v_shape"])  # (2, H, S, dh)
        self._in = ["audio", "pos"] + [f"past_k_{i}" for i in range(self.n_layers)] + \
                   [f"past_v_{i}" for i in range(self.n_layers)]
        if self.chunk * 320 != CHUNK_SAMPLES:
            raise ValueError(f"{path}: chunk of {self.chunk} tokens; this runtime steps 40 ms (2 tokens)")
        self._initial = self._prefix_state()

    def step(self, audio: np.ndarray, pos: np.ndarray, past_k: list[np.ndarray], past_v: list[np.ndarray]):
        """-> feats (B, 2, 2, D), new keys per layer (B, 2, H, dh, 2), new values per layer (B, 2, H, 2, dh)."""
        out = self.session.run(None, dict(zip(self._in, [audio, pos, *past_k, *past_v])))
        L = self.n_layers
        return out[0], out[1:1 + L], out[1 + L:]

    def _prefix_state(self):
        """Run the stream's silent prefix (SEGMENT tokens) once: the caches and features every stream starts with."""
        S, c, L = self.segment, self.chunk, self.n_layers
        k = [np.zeros((1,) + self.k_shape, np.float32) for _ in range(L)]
        v = [np.zeros((1,) + self.v_shape, np.float32) for _ in range(L)]
        zeros = np.zeros((1, self.step_samples), np.float32)
        feats = []
        for j in range(S // c):
            u = c * j
            pos = np.array([[u, max(0, u - S // 2)]], np.int64)
            f, nk, nv = self.step(zeros, pos, k, v)
            for i in range(L):
                k[i][0, 0, ..., u:u + c], v[i][0, 0, :, u:u + c] = nk[i][0, 0], nv[i][0, 0]
            if u >= S // 2:  # segmentation 1 starts S/2 tokens into the prefix
                p = u - S // 2
                for i in range(L):
                    k[i][0, 1, ..., p:p + c], v[i][0, 1, :, p:p + c] = nk[i][0, 1], nv[i][0, 1]
                feats.append(f[0, 0])
        return [a[0] for a in k], [a[0] for a in v], np.concatenate(feats)

    def new_state(self) -> "EncoderState":
        return EncoderState(self)


class EncoderState:
    """One stream's encoder: feed audio, read windows of features (tokens -S/2 .. n_tokens - 1 while kept)."""

    def __init__(self, enc: EncoderRuntime):
        self.enc = enc
        k0, v0, prefix = enc._initial
        self.k = [a.copy() for a in k0]  # per layer (2, H, dh, S): both segmentations' cached keys
        self.v = [a.copy() for a in v0]  # per layer (2, H, S, dh)
        self.pos = np.array([[0, enc.segment // 2]], np.int64)
        self._feats = np.zeros((max(1024, 2 * len(prefix)), enc.dim), np.float32)
        self._feats[:len(prefix)] = prefix
        self._first = -len(prefix)         # token index of _feats[0]
        self._len = len(prefix)
        self._keep_from = self._first      # tokens before this may be dropped (trim)
        self.n_chunks = 0                  # chunks computed
        self._audio = np.zeros(enc.stem_left, np.float32)  # samples from 640 * n_chunks - stem_left on

    @property
    def n_tokens(self) -> int:
        return self.n_chunks * self.enc.chunk

    def window(self, first_token: int, n: int) -> np.ndarray:
        """(n, D) features of tokens first_token .. first_token + n - 1."""
        a = first_token - self._first
        if a < 0 or first_token + n > self.n_tokens:
            raise IndexError(f"tokens {first_token}..{first_token + n - 1} not available (have {self._first}.."
                             f"{self.n_tokens - 1})")
        return self._feats[a:a + n].copy()

    def trim(self, keep_from: int) -> None:
        """Tokens before `keep_from` will not be read again (long streams keep memory flat)."""
        self._keep_from = max(self._keep_from, keep_from)

    def feed(self, x: np.ndarray, final: bool = False, until_tokens: int | None = None) -> None:
        """Append audio and run every chunk whose audio is complete. final: the audio has ended; pad with silence
        until `until_tokens` tokens exist."""
        e = self.enc
        if x.size:
            self._audio = np.concatenate([self._audio, x.astype(np.float32, copy=False)])
        need = e.step_samples
        while True:
            if len(self._audio) < need:
                if not (final and until_tokens is not None and self.n_tokens < until_tokens):
                    break
                self._audio = np.concatenate([self._audio, np.zeros(need - len(self._audio), np.float32)])
            self._step(self._audio[:need])
            self._audio = self._audio[CHUNK_SAMPLES:]

    def _append(self, f: np.ndarray) -> None:
        if self._len + len(f) > len(self._feats):
            drop = self._keep_from - self._first
            if drop >= len(self._feats) // 2:  # compact in place
                self._feats[:self._len - drop] = self._feats[drop:self._len]
                self._first += drop
                self._len -= drop
            else:
                self._feats = np.concatenate([self._feats, np.zeros_like(self._feats)])
        self._feats[self._len:self._len + len(f)] = f
        self._len += len(f)

    def _step(self, audio: np.ndarray) -> None:
        e = self.enc
        S, c = e.segment, e.chunk
        self.pos[self.pos == S] = 0  # a segment is full: the next one starts at position 0
        f, nk, nv = e.step(audio[None], self.pos, [a[None] for a in self.k], [a[None] for a in self.v])
        for b in range(2):
            p = int(self.pos[0, b])
            for i in range(e.n_layers):
                self.k[i][b, ..., p:p + c] = nk[i][0, b]
                self.v[i][b, :, p:p + c] = nv[i][0, b]
        emit = 0 if self.pos[0, 0] >= S // 2 else 1
        self._append(f[0, emit])
        self.pos += c
        self.n_chunks += 1
