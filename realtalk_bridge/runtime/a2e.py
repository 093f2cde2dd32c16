"""A2E inference with onnxruntime + numpy only (no torch): offline and streaming, same frames.

Time grid. The model runs once per 25 fps model frame k (time k / 25 s) on the window of
W = l * 320 samples that ends `lookahead` (la) after it: audio samples [k*640 + la - W, k*640 + la).
Within that window's T predicted frames, time k/25 sits at position T - la/640. Output frame i
(time i / fps) is read from the latest window whose model frame is not after it, k = floor(i*25/fps),
at position T - la/640 + (i*25 mod fps)/fps, linearly interpolated between the two nearest predicted
frames (positions past the window's last frame use its last frame). So a frame is ready as soon as
the audio has run `lookahead` past the model frame before it: the added latency never exceeds the
look-ahead, at any output rate, and there is one model call per 40 ms of audio. Audio before 0 and,
at the end of a stream, after the last sample is silence (zeros).

`infer_offline` and `A2EStream` compute the same windows with the same arithmetic, so they agree.
`step_streams` runs the windows of many A2EStreams in one batched call (the sidecar's engine tick);
each stream still gets exactly the frames `push` would have given it.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from realtalk_bridge.assets import MODELS_ENV, model_path

META_KEY = "realtalk_a2e"
# resolved once at import: $REALTALK_MODELS, the wheel's copy, or the source tree (realtalk_bridge/assets.py)
DEFAULT_MODEL = model_path("a2e", "default.onnx")
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
                 threads: int | None = 1, parallel: int = 1):
        """threads: onnxruntime's intra-op threads per call. parallel: step_streams splits a batch into up to
        this many slices run at once from as many Python threads, each call single-threaded (onnxruntime
        releases the GIL): ~2x the windows per second on 2 cores, without the spinning thread pool that a
        second intra-op thread brings (it takes the core the sidecar's io loop needs)."""
        import onnxruntime as ort

        path = Path(onnx_path) if onnx_path is not None else DEFAULT_MODEL
        if not path.is_file():
            if onnx_path is None:
                raise FileNotFoundError(
                    f"no default A2E model at {path}. Train and export one "
                    "(`realtalk-bridge train a2e --data DIR --out RUN` then "
                    "`realtalk-bridge export a2e RUN/best.safetensors --out FILE.onnx`) and pass its path, "
                    f"or set {MODELS_ENV} to a folder holding a2e/default.onnx.")
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
        self.precision: str = meta.get("precision", "float32")  # or "int8" (export a2e --int8)
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
        # blendshape weights are 0..1 for every rig; the network's linear decoder can overshoot slightly.
        # 3DMM coefficients (a user BFM) are unbounded and pass through.
        self.value_range: tuple[float, float] | None = (0.0, 1.0) if self.layout == "arkit52" else None
        # front-end 'whisper': the graph reads encoder features ("tokens") that a second graph streams
        self.input: str = meta.get("input", "audio")
        self.encoder = None
        if meta.get("encoder"):
            from realtalk_bridge.runtime.whisper import EncoderRuntime

            self.encoder = EncoderRuntime(path.parent / meta["encoder"], providers=providers, threads=threads)
        if int(parallel) < 1:
            raise ValueError(f"parallel must be >= 1, got {parallel}")
        self.parallel = int(parallel) if self.provider == "CPUExecutionProvider" else 1
        self._pool = None
        if self.parallel > 1:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(self.parallel - 1, thread_name_prefix="a2e-run")

    def run(self, audio: np.ndarray, identity: np.ndarray, history: np.ndarray,
            timing: dict | None = None, slices: int = 1) -> np.ndarray:
        """Raw model call: audio (B, W) [or encoder features (B, l, D)], identity (B, n_id), history (B, N, E)
        -> (B, T, E) float32. slices > 1 (at most `parallel`): the batch runs as that many slices at once
        (step_streams does, for the live engine; bakes keep one call, so their int8 numbers do not depend on
        the machine's cores). timing: a dict to add the calling thread's own slice to ('wall', 'cpu'
        seconds): how much slower than its CPU time the model ran, without the wait for the other slices."""
        feed = {self.input: audio, "identity": identity, "history": history}
        n = min(slices, self.parallel, len(audio))
        if n < 2:
            parts, futures = [feed], []
        else:
            cuts = [len(audio) * i // n for i in range(n + 1)]
            parts = [{k: v[a:b] for k, v in feed.items()} for a, b in zip(cuts[:-1], cuts[1:])]
            futures = [self._pool.submit(self.session.run, None, f) for f in parts[1:]]
        t0, c0 = time.monotonic(), time.thread_time()
        first = self.session.run(None, parts[0])[0]  # one slice on the calling thread
        if timing is not None:
            timing["wall"] = timing.get("wall", 0.0) + time.monotonic() - t0
            timing["cpu"] = timing.get("cpu", 0.0) + time.thread_time() - c0
        return np.concatenate([first] + [f.result()[0] for f in futures]) if futures else first

    @property
    def extra_latency_samples(self) -> int:
        """Audio a window needs beyond its end: the encoder stem's right context (whisper models), else 0."""
        return self.encoder.stem_right if self.encoder is not None else 0

    def check_lookahead(self, la: int) -> int:
        if self.encoder is not None and la % 320:
            raise ValueError("with a Whisper front-end the look-ahead must be a multiple of 20 ms (one token), "
                             f"got {1000 * la / self.sample_rate:g} ms")
        return la

    def clamp(self, w: np.ndarray) -> np.ndarray:
        """Limit an output frame to the layout's range, in place."""
        if self.value_range is not None:
            np.clip(w, *self.value_range, out=w)
        return w

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


def _needed(i: int, fps: int, model_fps: int) -> tuple[int, int]:
    """Output frame i -> (k, rem): its time is model frame k plus rem / fps of a model frame."""
    return (i * model_fps) // fps, (i * model_fps) % fps


def _position(rt: A2ERuntime, la: int, rem: int, fps: int, back: int = 0) -> tuple[int, float]:
    """Where in window k's T predicted frames the time k/25 + rem/(fps) lies -> (j0, fraction).

    Window k ends `la` samples after model frame k, so that frame sits at T - la/640; later times
    inside the same window (rem > 0) sit further right. Past the window's last frame: its last frame.
    `back` > 0 reads model frame k - back from window k instead (offline stride: more future context).
    """
    pos = rt.n_frames - la / rt.frame_samples + rem / fps
    if back:  # only then: back == 0 keeps the stream's arithmetic bit for bit
        pos -= back
    j0 = min(int(math.floor(pos)), rt.n_frames - 1)
    return j0, (pos - j0 if j0 < rt.n_frames - 1 else 0.0)


def _read(y: np.ndarray, j0: int, fr: float) -> np.ndarray:
    """y (T, E) -> (E,) float32 at fractional frame position j0 + fr (linear)."""
    if fr == 0.0:
        return y[j0].astype(np.float32, copy=True)
    w = np.float32(fr)
    return ((np.float32(1.0) - w) * y[j0] + w * y[j0 + 1]).astype(np.float32)


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

def max_stride(rt: A2ERuntime, lookahead_ms: float = 80) -> int:
    """The largest offline stride whose earliest read frame still lies inside its window."""
    la = lookahead_samples(lookahead_ms, rt.sample_rate)
    return max(1, int(math.floor(rt.n_frames - la / rt.frame_samples)) + 1)


def check_stride(rt: A2ERuntime, stride, lookahead_ms: float = 80) -> int:
    top = max_stride(rt, lookahead_ms)
    if isinstance(stride, bool) or int(stride) != stride or not 1 <= int(stride) <= top:
        raise ValueError(f"stride must be an integer in [1, {top}] for this model and a {lookahead_ms:g} ms "
                         f"look-ahead, got {stride}")
    return int(stride)


def infer_offline(rt: A2ERuntime, audio, fps: int = 30, lookahead_ms: float = 80, identity=None, history=None,
                  batch: int = 32, stride: int = 1) -> np.ndarray:
    """Whole 16 kHz mono signal -> (n_frames, E) float32 at `fps` (frame i at time i / fps).

    stride=1: one window per model frame, read where the stream reads it (equal to A2EStream).
    stride=S: one window per S model frames, at the last of them (p = k // S * S + S - 1, or the last
    model frame of the audio), and model frames p-S+1 .. p are all read from it: S times fewer model
    calls, and every frame has at least `lookahead_ms` of future audio (earlier ones more).
    """
    fps = _check_fps(fps)
    x = _as_audio(audio)
    la = rt.check_lookahead(lookahead_samples(lookahead_ms, rt.sample_rate))
    stride = check_stride(rt, stride, lookahead_ms)
    alpha = rt.check_identity(identity)
    hist = rt.check_history(history)
    n_out = _n_out(len(x), fps, rt.sample_rate)
    if n_out == 0:
        return np.zeros((0, rt.n_expr), np.float32)
    n_model = _needed(n_out - 1, fps, rt.fps)[0] + 1
    # the model frame each window is run at: one per block of `stride` frames (stride 1: every frame)
    at = np.minimum(np.arange(0, n_model, stride) + stride - 1, n_model - 1)
    # zeros before the start and after the end, as the stream sees them
    W, fs = rt.window_samples, rt.frame_samples
    pad_right = max(0, (n_model - 1) * fs + la - len(x))
    enc = None
    if rt.encoder is not None:  # the stream's encoder over the whole signal, then windows of its features
        enc = rt.encoder.new_state()
        enc.feed(x, final=True, until_tokens=((n_model - 1) * fs + la) // 320)
    else:
        buf = np.concatenate([np.zeros(W, np.float32), x, np.zeros(pad_right, np.float32)])
    out = np.empty((n_out, rt.n_expr), np.float32)
    i = 0
    for s in range(0, len(at), batch):  # batches of windows; memory stays flat for hour-long files
        ks = at[s:s + batch]
        starts = ks * fs + la  # window start in buf coordinates (buf index = sample index + W)
        if enc is not None:
            wins = np.stack([enc.window((a - W) // 320, rt.n_frames * 2) for a in starts])
        else:
            wins = np.stack([buf[a:a + W] for a in starts])
        b = len(ks)
        y = rt.run(wins, np.broadcast_to(alpha, (b, rt.n_id)).copy(), np.broadcast_to(hist, (b,) + hist.shape).copy())
        while i < n_out:
            k, rem = _needed(i, fps, rt.fps)
            w = k // stride  # the window (block) this model frame is read from
            if w >= s + b:
                break
            out[i] = rt.clamp(_read(y[w - s], *_position(rt, la, rem, fps, back=int(at[w]) - k)))
            i += 1
    if not np.all(np.isfinite(out)):  # a bake must never report NaN/inf as a result (SPEC section 1)
        raise ValueError("the model produced NaN or inf for this audio (samples far outside [-1, 1]?)")
    return out


# ------------------------------------------------------------------------------------- streaming

class A2EStream:
    """Push 16 kHz float32 chunks (any size; 10-40 ms typical), get Frames as soon as their audio
    plus the look-ahead has arrived. One model step per 25 fps model frame, batch 1."""

    def __init__(self, rt: A2ERuntime, fps: int = 30, lookahead_ms: float = 80, identity=None, history=None):
        self.rt = rt
        self.fps = _check_fps(fps)
        self.lookahead_ms = float(lookahead_ms)
        self.la = rt.check_lookahead(lookahead_samples(lookahead_ms, rt.sample_rate))
        self.set_identity(identity, history)
        self.reset()

    # latency added by the model: audio must run this far past a frame's time before it can be emitted
    @property
    def latency_ms(self) -> float:
        return 1000.0 * (self.la + self.rt.extra_latency_samples) / self.rt.sample_rate

    def reset(self) -> None:
        """Start a new utterance: frame index 0, silence before it."""
        # audio from _buf_start on in _buf[:_buf_len]; _buf has room to grow (a feed appends in place)
        self._buf = np.zeros(8 * self.rt.window_samples, np.float32)
        self._buf_len = self.rt.window_samples  # one window of silence before the stream
        self._buf_start = -self.rt.window_samples  # sample index of _buf[0]
        self._n_in = 0
        self._next = 0
        self._cache: dict[int, np.ndarray] = {}
        self._ended = False
        self._enc = self.rt.encoder.new_state() if self.rt.encoder is not None else None

    def set_identity(self, alpha=None, history=None) -> None:
        """Change the speaker prior; takes effect from the next model step. None -> the model's defaults."""
        self._alpha = self.rt.check_identity(alpha)[None, :]
        self._hist = self.rt.check_history(history)[None, :, :]

    def push(self, samples) -> list[Frame]:
        self.feed(samples)
        return self._emit(final=False)

    # --- batched stepping (step_streams): feed audio, list the windows, run them together, emit ---------

    def feed(self, samples) -> None:
        """Append audio without running the model (step_streams runs many streams' windows at once)."""
        if self._ended:
            raise RuntimeError("stream was flushed; call reset() to start a new utterance")
        x = _as_audio(samples)
        if x.size:
            self._n_in += x.size
            if self._enc is not None:
                self._enc.feed(x)  # the encoder keeps its own audio; windows are its features
            else:
                end = self._buf_len + x.size
                if end > len(self._buf):  # (windows handed out are views of the old array: a new one)
                    grown = np.zeros(max(2 * len(self._buf), end), np.float32)
                    grown[:self._buf_len] = self._buf[:self._buf_len]
                    self._buf = grown
                self._buf[self._buf_len:end] = x
                self._buf_len = end

    def _window_input(self, k: int, final: bool) -> np.ndarray | None:
        """Window k's model input (audio, or encoder features), or None if its audio is not all here yet."""
        W, fs = self.rt.window_samples, self.rt.frame_samples
        end = k * fs + self.la
        if self._enc is not None:
            last = end // 320  # tokens before `last` are needed
            if last > self._enc.n_tokens:
                if not final:
                    return None
                self._enc.feed(np.zeros(0, np.float32), final=True, until_tokens=last)
            return self._enc.window(last - W // 320, W // 320)
        if end > self._n_in and not final:
            return None
        a = end - W - self._buf_start
        win = self._buf[a:min(a + W, self._buf_len)]
        if win.size < W:  # past the end of the audio (only when final)
            win = np.concatenate([win, np.zeros(W - win.size, np.float32)])
        return win

    def pending_windows(self, limit: int | None = None, final: bool = False) -> list[tuple[int, np.ndarray]]:
        """(k, window) for the model steps the audio so far allows and that have not run yet, oldest
        first, at most `limit`. Run them (any batch) and hand the results to `supply`. final: the audio
        has ended (windows past its end see silence, as at `flush`)."""
        n_out = _n_out(self._n_in, self.fps, self.rt.sample_rate)
        out: list[tuple[int, np.ndarray]] = []
        if self._next >= n_out:
            return out
        W, fs = self.rt.window_samples, self.rt.frame_samples
        k_first = _needed(self._next, self.fps, self.rt.fps)[0]
        k_last = _needed(n_out - 1, self.fps, self.rt.fps)[0]
        for k in range(k_first, k_last + 1):
            if limit is not None and len(out) >= limit:
                break
            if k in self._cache:
                continue
            win = self._window_input(k, final)
            if win is None:
                break
            out.append((k, win))
        return out

    def supply(self, k: int, y: np.ndarray) -> None:
        """The model's (T, E) output for window k (from a batched run)."""
        self._cache[k] = y

    def emit(self) -> list[Frame]:
        """The frames whose windows have run (supplied), in order; runs no model step itself."""
        if self._ended:
            return []
        return self._emit(final=False, run=False)

    def flush(self) -> list[Frame]:
        """End of audio: emit the remaining frames (silence after the end). Then reset() to reuse."""
        if self._ended:
            return []
        self._ended = True
        return self._emit(final=True)

    def _window(self, k: int, final: bool, run: bool = True) -> np.ndarray | None:
        """The model's T frames for window k (ends la after model frame k), or None if its audio is not here yet
        (or, with run=False, if it has not been supplied)."""
        y = self._cache.get(k)
        if y is not None or not run:
            return y
        win = self._window_input(k, final)
        if win is None:
            return None
        y = self.rt.run(win[None], self._alpha, self._hist)[0]
        self._cache[k] = y
        return y

    def _emit(self, final: bool, run: bool = True) -> list[Frame]:
        out: list[Frame] = []
        # only frames whose time lies inside the audio so far (what infer_offline returns for it)
        n_out = _n_out(self._n_in, self.fps, self.rt.sample_rate)
        while self._next < n_out:
            i = self._next
            k, rem = _needed(i, self.fps, self.rt.fps)
            y = self._window(k, final, run)
            if y is None:
                break
            out.append(Frame(i, i / self.fps, self.rt.clamp(_read(y, *_position(self.rt, self.la, rem, self.fps)))))
            self._next += 1
        self._trim()
        return out

    def _trim(self) -> None:
        k0, _ = _needed(self._next, self.fps, self.rt.fps)
        for k in [k for k in self._cache if k < k0]:
            del self._cache[k]
        if self._enc is not None:
            self._enc.trim((k0 * self.rt.frame_samples + self.la - self.rt.window_samples) // 320)
            return
        keep_from = k0 * self.rt.frame_samples + self.la - self.rt.window_samples  # oldest sample still needed
        drop = keep_from - self._buf_start
        if drop > 4 * self.rt.window_samples:  # trim in big steps: fewer copies
            n = self._buf_len - drop
            kept = np.zeros(max(8 * self.rt.window_samples, 2 * n), np.float32)
            kept[:n] = self._buf[drop:self._buf_len]
            self._buf, self._buf_len, self._buf_start = kept, n, keep_from


def step_streams(rt: A2ERuntime, streams: list[A2EStream], max_windows=None,
                 max_batch: int = 64, timing: dict | None = None) -> list[list[Frame]]:
    """One tick for many streams: every stream's pending model windows (at most `max_windows` each, an
    int or one per stream, so one busy stream cannot make the tick long) run in ONE batched ONNX call
    (chunks of `max_batch`), each row with its own stream's identity and history. Returns each stream's
    new frames, exactly what `push` would have returned for the same audio."""
    limits = max_windows if isinstance(max_windows, (list, tuple)) else [max_windows] * len(streams)
    rows: list[tuple[int, int, np.ndarray]] = []  # (stream index, k, window)
    for si, (s, lim) in enumerate(zip(streams, limits)):
        rows.extend((si, k, win) for k, win in s.pending_windows(lim))
    for a in range(0, len(rows), max_batch):
        part = rows[a:a + max_batch]
        audio = np.stack([win for _, _, win in part])
        alpha = np.concatenate([streams[si]._alpha for si, _, _ in part])
        hist = np.concatenate([streams[si]._hist for si, _, _ in part])
        y = rt.run(audio, alpha, hist, timing=timing, slices=rt.parallel)
        for (si, k, _), yk in zip(part, y):
            streams[si].supply(k, yk)
    return [s.emit() for s in streams]
