"""`realtalk-bridge bake AUDIO --out FILE`: an audio file -> a coefficient track, faster than real time.

The same windows as the live stream (runtime.a2e.infer_offline), so a bake equals what `serve` would
have streamed for that audio at the same look-ahead. Writes .csv (`time,<names>`), .json or .npz.
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np

FORMATS = (".csv", ".json", ".npz")
BASE_FPS = 60  # rates the runtime does not produce directly are resampled from this grid


def resample_track(w: np.ndarray, fps_in: float, fps_out: float, n_out: int) -> np.ndarray:
    """(n, E) frames at fps_in -> (n_out, E) at fps_out by linear interpolation in time (frame i at i / fps)."""
    if len(w) == 0 or n_out == 0:
        return np.zeros((n_out, w.shape[1]), np.float32)
    pos = np.arange(n_out) * (fps_in / fps_out)
    i0 = np.minimum(np.floor(pos).astype(np.int64), len(w) - 1)
    i1 = np.minimum(i0 + 1, len(w) - 1)
    f = (pos - i0).clip(0, 1)[:, None].astype(np.float32)
    return ((1 - f) * w[i0] + f * w[i1]).astype(np.float32)


def bake_array(rt, audio: np.ndarray, fps: float = 30, lookahead_ms: float = 80.0, identity=None,
               history=None) -> tuple[np.ndarray, np.ndarray]:
    """16 kHz mono float32 -> (t (n,), weights (n, E)) at `fps`; frame i at t = i / fps."""
    from realtalk_bridge.runtime.a2e import OUTPUT_FPS, infer_offline

    if not (isinstance(fps, (int, float)) and 1 <= fps <= 120):
        raise ValueError(f"fps must be a number in [1, 120], got {fps}")
    if float(fps).is_integer() and int(fps) in OUTPUT_FPS:
        w = infer_offline(rt, audio, fps=int(fps), lookahead_ms=lookahead_ms, identity=identity, history=history)
    else:
        base = infer_offline(rt, audio, fps=BASE_FPS, lookahead_ms=lookahead_ms, identity=identity, history=history)
        n_out = math.ceil(len(audio) * fps / rt.sample_rate)
        w = resample_track(base, BASE_FPS, fps, n_out)
    t = np.arange(len(w), dtype=np.float64) / fps
    return t, np.ascontiguousarray(w, np.float32)


def write_track(path, t: np.ndarray, w: np.ndarray, names, fps: float, meta: dict | None = None) -> Path:
    """Write a track as .csv, .json or .npz (chosen by the suffix)."""
    path = Path(path)
    suffix = path.suffix.lower()
    names = list(names)
    if suffix not in FORMATS:
        raise ValueError(f"output must end in {', '.join(FORMATS)}, got {path.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".csv":
        with open(path, "w", newline="") as f:
            f.write("time," + ",".join(names) + "\n")
            for ti, row in zip(t, w):
                f.write(f"{ti:.6f}," + ",".join(f"{v:.6f}" for v in row) + "\n")
    elif suffix == ".json":
        doc = {"fps": float(fps), "names": names, "n_frames": int(len(w)), **(meta or {}),
               "t": [round(float(x), 6) for x in t], "weights": np.round(w.astype(np.float64), 6).tolist()}
        path.write_text(json.dumps(doc) + "\n")
    else:
        np.savez(path, t=t.astype(np.float64), weights=w.astype(np.float32), names=np.array(names, dtype=str),
                 fps=np.float64(fps))
    return path


def add_arguments(p) -> None:
    p.add_argument("audio", help="audio file (wav, flac, ogg, ...; any rate, mixed to mono)")
    p.add_argument("--out", required=True, help="output track: .csv, .json or .npz")
    p.add_argument("--fps", type=float, default=30.0, help="output frame rate (default 30; any rate 1-120)")
    p.add_argument("--lookahead-ms", type=float, default=80.0, help="A2E look-ahead (same as the live stream)")
    p.add_argument("--model", default=None, help="A2E .onnx (default: models/a2e/default.onnx)")


def run(args) -> int:
    from realtalk_bridge.audio import load_audio
    from realtalk_bridge.runtime.a2e import A2ERuntime

    if Path(args.out).suffix.lower() not in FORMATS:
        print(f"bake: --out must end in {', '.join(FORMATS)}", file=sys.stderr)
        return 2
    try:
        audio = load_audio(args.audio)
        rt = A2ERuntime(args.model)
        t0 = time.perf_counter()
        t, w = bake_array(rt, audio, fps=args.fps, lookahead_ms=args.lookahead_ms)
        dt = time.perf_counter() - t0
    except (FileNotFoundError, ValueError) as exc:
        print(f"bake: {exc}", file=sys.stderr)
        return 1
    out = write_track(args.out, t, w, rt.names, args.fps,
                      meta={"layout": rt.layout, "lookahead_ms": args.lookahead_ms, "model": str(rt.path.name),
                            "audio": Path(args.audio).name})
    secs = len(audio) / 16000
    print(f"{out}: {len(w)} frames at {args.fps:g} fps, {secs:.2f} s of audio in {dt:.2f} s "
          f"({secs / max(dt, 1e-9):.0f}x real time)")
    return 0
