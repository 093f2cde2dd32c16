"""A2E inference with onnxruntime + numpy only (no torch): offline and streaming, same frames.

Time grid. The model runs on a 25 fps grid: model frame k is the face at time k / 25 s. It is read
from the window of W = l * 320 samples that ends `lookahead` after it, i.e. audio samples
[k*640 + la - W, k*640 + la); within that window the frame sits at position T - la / 640 (linear
interpolation between the two nearest predicted frames when la is not a multiple of 40 ms;
look-aheads under 40 ms use the window's last frame). Audio before 0 and, at the end of a stream,
after the last sample is silence (zeros). Output frame i is at time i / fps and is the linear blend
of model frames floor(i*25/fps) and the next one, with exact integer weights, so 25 and 50 fps
need no extra look-ahead on the grid points.

`infer_offline` and `A2EStream` compute the same windows with the same arithmetic, so they agree.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

META_KEY = "realtalk_a2e"
DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "models" / "a2e" / "default.onnx"
OUTPUT_FPS = (25, 30, 50, 60)
MAX_LOOKAHEAD_MS = 600.0


@dataclass
class Frame:
    index: int          # output frame number from the start of the stream
    t: float            # seconds: index / fps
    weights: np.ndarray  # (E,) float32, in the model's `names` order


class A2ERuntime:
    """One onnxruntime session on an exported A2E model (see runtime/export.py)."""

    def __init__(self, onnx_path: str | Path | None = None, providers: list[str] | None = None,
                 threads: int | None = 1):
        import onnxruntime as ort

        path = Path(onnx_path) if onnx_path is not None else DEFAULT_MODEL
        if not path.is_file():
            if onnx_path is None:
                raise FileNotFoundError(
                    f"no default A2E model at {path}. Train and export one "
                    "(`realtalk-bridge train a2e --data DIR --out RUN` then "
                    "`realtalk-bridge export a2e RUN/best.safetensors --out FILE.onnx`) and pass its path, "
                    "or install a release that ships models/a2e/default.onnx.")
            raise FileNotFoundError(f"no A2E model at {path}")
        available = ort.get_available_providers()
        if providers is None:
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        opts = ort.SessionOptions()
        # one small model step per 40 ms: a single intra-op thread has the lowest latency and
        # leaves the other core to the audio and the network
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        except Exception as exc:
            raise ValueError(f"cannot load ONNX model {path}: {exc}") from exc
        raw = self.session.get_modelmeta().custom_metadata_map.get(META_KEY)
        if raw is None:
            raise ValueError(f"{path} is not an A2E model (no {META_KEY!r} metadata); export it with `realtalk-bridge export a2e`")
        meta = json.loads(raw)
        self.path = path
        self.meta = meta
        self.dims: dict = meta["dims"]
        self.names: list[str] = list(meta["names"])
        self.layout: str = meta["layout"]
        self.provider: str = self.session.get_providers()[0]
        self.sample_rate: int = int(meta["sample_rate"])
        self.fps: int = int(meta["fps"])  # model frame rate (25)
        self.window_samples: int = int(meta["window_samples"])
        self.frame_samples: int = self.sample_rate // self.fps
        self.n_frames: int = int(self.dims["n_frames"])
        self.n_id: int = int(self.dims["n_id"])
        self.n_hist: int = int(self.dims["n_hist"])
        self.n_expr: int = len(self.names)
        self.default_identity = np.asarray(meta["default_identity"], dtype=np.float32)
        self.default_history = np.asarray(meta["default_history"], dtype=np.float32)

    def run(self, audio: np.ndarray, identity: np.ndarray, history: np.ndarray) -> np.ndarray:
        """Raw model call: audio (B, W), identity (B, n_id), history (B, N, E) -> (B, T, E) float32."""
        return self.session.run(None, {"audio": audio, "identity": identity, "history": history})[0]

    def check_identity(self, alpha) -> np.ndarray:
        if alpha is None:
            return self.default_identity
        a = np.asarray(alpha, dtype=np.float32).reshape(-1)
        if a.shape != (self.n_id,):
            raise ValueError(f"identity must have {self.n_id} coefficients, got {a.size}")
        if not np.all(np.isfinite(a)):
            raise ValueError("identity contains NaN or inf")
        return a

    def check_history(self, history) -> np.ndarray:
        """(M, E) frames of past expressions -> (N, E); M != N is resampled evenly (any length >= 1)."""
        if history is None:
            return self.default_history
        h = np.asarray(history, dtype=np.float32)
        if h.ndim != 2 or h.shape[1] != self.n_expr or h.shape[0] < 1:
            raise ValueError(f"history must be (frames, {self.n_expr}), got {h.shape}")
        if not np.all(np.isfinite(h)):
            raise ValueError("history contains NaN or inf")
        if h.shape[0] != self.n_hist:
            h = h[np.linspace(0, h.shape[0] - 1, self.n_hist).round().astype(np.int64)]
        return np.ascontiguousarray(h)


# ------------------------------------------------------------------------------------ pure helpers

def _check_fps(fps: int) -> int:
    if int(fps) != fps or int(fps) not in OUTPUT_FPS:
        raise ValueError(f"fps must be one of {OUTPUT_FPS}, got {fps}")
    return int(fps)


def lookahead_samples(lookahead_ms: float, sample_rate: int) -> int:
    if not (0.0 <= float(lookahead_ms) <= MAX_LOOKAHEAD_MS):
        raise ValueError(f"lookahead_ms must be in [0, {MAX_LOOKAHEAD_MS:.0f}], got {lookahead_ms}")
    return int(round(float(lookahead_ms) * sample_rate / 1000.0))


def _pick(rt: A2ERuntime, la: int) -> tuple[int, float]:
    """Where in a window's T predicted frames the model frame for the window's time sits."""
    pos = rt.n_frames - la / rt.frame_samples
    j0 = min(int(math.floor(pos)), rt.n_frames - 1)
    return j0, (pos - j0 if j0 < rt.n_frames - 1 else 0.0)


def _select(y: np.ndarray, j0: int, fr: float) -> np.ndarray:
    """y (B, T, E) -> (B, E): the model frame at fractional position j0 + fr."""
    if fr == 0.0:
        return y[:, j0]
    return ((1.0 - fr) * y[:, j0] + fr * y[:, j0 + 1]).astype(np.float32)


def _needed(i: int, fps: int, model_fps: int) -> tuple[int, int]:
    """Output frame i -> (k0, rem): blend model frames k0 and k0+1 with weight rem / fps."""
    return (i * model_fps) // fps, (i * model_fps) % fps


def _blend(m0: np.ndarray, m1: np.ndarray | None, rem: int, fps: int) -> np.ndarray:
    if rem == 0:
        return m0.astype(np.float32, copy=True)
    w = np.float32(rem / fps)
    return ((np.float32(1.0) - w) * m0 + w * m1).astype(np.float32)


def _n_out(n_samples: int, fps: int, sample_rate: int) -> int:
    # every output frame whose time lies inside the audio
    return -(-n_samples * fps // sample_rate)


def _as_audio(samples) -> np.ndarray:
    from realtalk_bridge.audio import to_mono_f32

    x = to_mono_f32(np.asarray(samples))
    if not np.all(np.isfinite(x)):
        raise ValueError("audio contains NaN or inf")
    return x


# --------------------------------------------------------------------------------------- offline

def infer_offline(rt: A2ERuntime, audio, fps: int = 30, lookahead_ms: float = 80, identity=None, history=None,
                  batch: int = 32) -> np.ndarray:
    """Whole 16 kHz mono signal -> (n_frames, E) float32 at `fps` (frame i at time i / fps)."""
    fps = _check_fps(fps)
    x = _as_audio(audio)
    la = lookahead_samples(lookahead_ms, rt.sample_rate)
    alpha = rt.check_identity(identity)
    hist = rt.check_history(history)
    n_out = _n_out(len(x), fps, rt.sample_rate)
    if n_out == 0:
        return np.zeros((0, rt.n_expr), np.float32)
    k_last, rem_last = _needed(n_out - 1, fps, rt.fps)
    n_model = k_last + 1 + (1 if rem_last else 0)
    # zeros before the start and after the end, as the stream sees them
    W, fs = rt.window_samples, rt.frame_samples
    pad_right = max(0, (n_model - 1) * fs + la - len(x))
    buf = np.concatenate([np.zeros(W, np.float32), x, np.zeros(pad_right, np.float32)])
    j0, fr = _pick(rt, la)
    model_frames = np.empty((n_model, rt.n_expr), np.float32)
    for s in range(0, n_model, batch):
        ks = np.arange(s, min(s + batch, n_model))
        starts = ks * fs + la  # window start in buf coordinates (buf index = sample index + W)
        wins = np.stack([buf[a:a + W] for a in starts])
        b = len(ks)
        y = rt.run(wins, np.broadcast_to(alpha, (b, rt.n_id)).copy(), np.broadcast_to(hist, (b,) + hist.shape).copy())
        model_frames[s:s + b] = _select(y, j0, fr)
    out = np.empty((n_out, rt.n_expr), np.float32)
    for i in range(n_out):
        k0, rem = _needed(i, fps, rt.fps)
        out[i] = _blend(model_frames[k0], model_frames[k0 + 1] if rem else None, rem, fps)
    return out


# ------------------------------------------------------------------------------------- streaming

class A2EStream:
    """Push 16 kHz float32 chunks (any size; 10-40 ms typical), get Frames as soon as their audio
    plus the look-ahead has arrived. One model step per 25 fps model frame, batch 1."""

    def __init__(self, rt: A2ERuntime, fps: int = 30, lookahead_ms: float = 80, identity=None, history=None):
        self.rt = rt
        self.fps = _check_fps(fps)
        self.lookahead_ms = float(lookahead_ms)
        self.la = lookahead_samples(lookahead_ms, rt.sample_rate)
        self._pick = _pick(rt, self.la)
        self.set_identity(identity, history)
        self.reset()

    # latency added by the model: audio must run this far past a frame's time before it can be emitted
    @property
    def latency_ms(self) -> float:
        return 1000.0 * self.la / self.rt.sample_rate

    def reset(self) -> None:
        """Start a new utterance: frame index 0, silence before it."""
        self._buf = np.zeros(self.rt.window_samples, np.float32)
        self._buf_start = -self.rt.window_samples  # sample index of _buf[0]
        self._n_in = 0
        self._next = 0
        self._cache: dict[int, np.ndarray] = {}
        self._ended = False

    def set_identity(self, alpha=None, history=None) -> None:
        """Change the speaker prior; takes effect from the next model step. None -> the model's defaults."""
        self._alpha = self.rt.check_identity(alpha)[None, :]
        self._hist = self.rt.check_history(history)[None, :, :]

    def push(self, samples) -> list[Frame]:
        if self._ended:
            raise RuntimeError("stream was flushed; call reset() to start a new utterance")
        x = _as_audio(samples)
        if x.size:
            self._buf = np.concatenate([self._buf, x])
            self._n_in += x.size
        return self._emit(final=False)

    def flush(self) -> list[Frame]:
        """End of audio: emit the remaining frames (silence after the end). Then reset() to reuse."""
        if self._ended:
            return []
        self._ended = True
        return self._emit(final=True)

    def _model_frame(self, k: int, final: bool) -> np.ndarray | None:
        m = self._cache.get(k)
        if m is not None:
            return m
        W, fs = self.rt.window_samples, self.rt.frame_samples
        end = k * fs + self.la
        if end > self._n_in and not final:
            return None
        a = end - W - self._buf_start
        win = self._buf[a:a + W]
        if win.size < W:  # past the end of the audio (only when final)
            win = np.concatenate([win, np.zeros(W - win.size, np.float32)])
        y = self.rt.run(win[None, :], self._alpha, self._hist)
        m = _select(y, *self._pick)[0]
        self._cache[k] = m
        return m

    def _emit(self, final: bool) -> list[Frame]:
        out: list[Frame] = []
        n_out = _n_out(self._n_in, self.fps, self.rt.sample_rate) if final else None
        while n_out is None or self._next < n_out:
            i = self._next
            k0, rem = _needed(i, self.fps, self.rt.fps)
            m0 = self._model_frame(k0, final)
            m1 = self._model_frame(k0 + 1, final) if (m0 is not None and rem) else None
            if m0 is None or (rem and m1 is None):
                break
            out.append(Frame(i, i / self.fps, _blend(m0, m1, rem, self.fps)))
            self._next += 1
        self._trim()
        return out

    def _trim(self) -> None:
        k0, _ = _needed(self._next, self.fps, self.rt.fps)
        for k in [k for k in self._cache if k < k0]:
            del self._cache[k]
        keep_from = k0 * self.rt.frame_samples + self.la - self.rt.window_samples  # oldest sample still needed
        drop = keep_from - self._buf_start
        if drop > 4 * self.rt.window_samples:  # trim in big steps: fewer copies
            self._buf = self._buf[drop:].copy()
            self._buf_start = keep_from
