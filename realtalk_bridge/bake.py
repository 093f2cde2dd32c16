"""`realtalk-bridge bake AUDIO --out FILE`: an audio file -> a coefficient track, faster than real time.

The same windows as the live stream (runtime.a2e.infer_offline), so a bake equals what `serve` would
have streamed for that audio at the same look-ahead. `--stride S` (offline only) runs one window per S
model frames and reads S frames from each: S times fewer model calls, every frame with at least the
look-ahead, no longer equal to the stream (docs/bake.md has what it costs in lip-sync). Writes .csv (`time,<names>`), .json, .npz or
.msgpack (the protocol's `bake` reply map, which the Unity and Blender clients decode).

`bake FOLDER_OR_GLOB --out DIR` bakes a whole library in parallel (realtalk_bridge/bake_batch.py).
Output files are written to a temporary file beside the target and renamed, so an interrupted or
failed write never leaves a truncated track under the final name.
"""
from __future__ import annotations

import io
import json
import math
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FORMATS = (".csv", ".json", ".npz", ".msgpack")
BASE_FPS = 60  # rates the runtime does not produce directly are resampled from this grid
DEFAULT_MAX_SECONDS = 1800.0  # 30 min: longer files are refused from their header, before decoding
MIN_SAMPLE_RATE = 4000  # Hz; below this a file is not speech (and resampling it up would explode its size)
SILENCE_PEAK = 1e-3  # -60 dBFS: a file whose loudest sample is below this is reported as silent


class BakeInputError(ValueError):
    """An input file that cannot be baked; the message names the file and the reason."""


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
               history=None, stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """16 kHz mono float32 -> (t (n,), weights (n, E)) at `fps`; frame i at t = i / fps."""
    from realtalk_bridge.runtime.a2e import OUTPUT_FPS, infer_offline

    if not (isinstance(fps, (int, float)) and 1 <= fps <= 120):
        raise ValueError(f"fps must be a number in [1, 120], got {fps}")
    if float(fps).is_integer() and int(fps) in OUTPUT_FPS:
        w = infer_offline(rt, audio, fps=int(fps), lookahead_ms=lookahead_ms, identity=identity, history=history,
                          stride=stride)
    else:
        base = infer_offline(rt, audio, fps=BASE_FPS, lookahead_ms=lookahead_ms, identity=identity, history=history,
                             stride=stride)
        n_out = math.ceil(len(audio) * fps / rt.sample_rate)
        w = resample_track(base, BASE_FPS, fps, n_out)
    t = np.arange(len(w), dtype=np.float64) / fps
    return t, np.ascontiguousarray(w, np.float32)


# ------------------------------------------------------------------------------------- input checks

@dataclass
class AudioFile:
    """A decoded input: 16 kHz mono samples plus what the checks found."""
    audio: np.ndarray
    seconds: float                      # duration of the samples actually in the file
    warnings: list[str] = field(default_factory=list)


_DATA_CHUNK = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)


def _truncation(info) -> float | None:
    """Seconds the header promises when the file is shorter than its header says (WAV/AIFF), else None.

    libsndfile reads what is there and notes the mismatch in its log ("data : 64000 (should be 31978)")."""
    m = _DATA_CHUNK.search(getattr(info, "extra_info", "") or "")
    if not m:
        return None
    promised, present = int(m.group(1)), int(m.group(2))
    if promised <= present or present <= 0:
        return None
    return info.duration * promised / present


def read_checked(source, name: str | None = None, max_seconds: float | None = DEFAULT_MAX_SECONDS,
                 allow_silent: bool = False) -> AudioFile:
    """Read and check one input (a path, or the bytes of a file) -> AudioFile; BakeInputError if unusable.

    The duration limit is checked on the header, before anything is decoded, so a 2 h file (or one whose
    header says 1 Hz) costs nothing. Truncated files are baked with a warning; empty and silent ones are errors.
    """
    import soundfile as sf

    from realtalk_bridge.audio import SAMPLE_RATE, resample, to_mono_f32

    label = name or str(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        opener = lambda: io.BytesIO(bytes(source))  # noqa: E731
    else:
        if not os.path.exists(source):
            raise BakeInputError(f"{label}: no such file")
        if os.path.isdir(source):
            raise BakeInputError(f"{label}: is a folder")
        opener = lambda: str(source)  # noqa: E731
    try:
        info = sf.info(opener())
    except Exception as exc:  # soundfile raises several types; one clear message
        raise BakeInputError(f"{label}: not a readable audio file ({_short(exc)})") from None
    if info.frames <= 0:
        raise BakeInputError(f"{label}: no audio (0 samples)")
    if max_seconds and info.duration > max_seconds:
        raise BakeInputError(f"{label}: the header says {info.duration:.0f} s of audio, over the limit of "
                             f"{max_seconds:.0f} s (--max-seconds; 0 = no limit)")
    if info.samplerate < MIN_SAMPLE_RATE:
        raise BakeInputError(f"{label}: sample rate {info.samplerate} Hz is below {MIN_SAMPLE_RATE} Hz; "
                             "not speech audio")
    warnings = []
    promised = _truncation(info)
    if promised is not None:
        warnings.append(f"truncated: the header says {promised:.2f} s, the file holds {info.duration:.2f} s "
                        "(baked what is there)")
    try:
        data, sr = sf.read(opener(), dtype="float32", always_2d=True)
    except Exception as exc:
        raise BakeInputError(f"{label}: cannot decode audio ({_short(exc)}); truncated or corrupt?") from None
    if len(data) == 0:
        raise BakeInputError(f"{label}: no audio (0 samples)")
    if len(data) < info.frames and promised is None:
        warnings.append(f"truncated: the header says {info.duration:.2f} s, decoded {len(data) / sr:.2f} s")
    x = to_mono_f32(data)
    if not np.all(np.isfinite(x)):
        raise BakeInputError(f"{label}: audio contains NaN or inf samples")
    peak = float(np.max(np.abs(x)))
    if peak > 1e3:  # float files far outside [-1, 1]: the model would overflow
        raise BakeInputError(f"{label}: samples up to {peak:.3g}, far outside [-1, 1]; not normalised audio")
    if peak < SILENCE_PEAK and not allow_silent:
        db = 20 * math.log10(peak) if peak > 0 else float("-inf")
        raise BakeInputError(f"{label}: silent (peak {db:.0f} dBFS); nothing to animate (--allow-silent bakes it)")
    audio = resample(x, sr, SAMPLE_RATE)
    return AudioFile(audio, len(data) / sr, warnings)


def _short(exc: Exception, limit: int = 200) -> str:
    text = " ".join(str(exc).split())
    text = re.sub(r"<_io\.BytesIO object at 0x[0-9a-f]+>", "the file", text)  # bytes sent by --ray
    return text if len(text) <= limit else text[:limit] + "..."


# ------------------------------------------------------------------------------------------ output

def encode_track(suffix: str, t: np.ndarray, w: np.ndarray, names, fps: float, meta: dict | None = None) -> bytes:
    """A track as the bytes of a .csv, .json, .npz or .msgpack file."""
    suffix = suffix.lower()
    names = list(names)
    if suffix not in FORMATS:
        raise ValueError(f"output must end in {', '.join(FORMATS)}, got {suffix!r}")
    if suffix == ".csv":
        lines = ["time," + ",".join(names)]
        lines += [f"{ti:.6f}," + ",".join(f"{v:.6f}" for v in row) for ti, row in zip(t, w)]
        return ("\n".join(lines) + "\n").encode()
    if suffix == ".json":
        doc = {"fps": float(fps), "names": names, "n_frames": int(len(w)), **(meta or {}),
               "t": [round(float(x), 6) for x in t], "weights": np.round(w.astype(np.float64), 6).tolist()}
        return (json.dumps(doc) + "\n").encode()
    if suffix == ".msgpack":
        # the fields of a protocol `bake` reply (protocol/SPEC.md): Unity's Protocol.TryDecodeBake and the
        # Blender add-on's core.protocol.parse_bake decode this map as is
        import msgpack

        doc = {"fps": float(fps), "layout": (meta or {}).get("layout", ""), "names": names, "n_frames": int(len(w)),
               "t0": float(t[0]) if len(t) else 0.0, "w": np.ascontiguousarray(w, "<f4").tobytes(),
               **{k: v for k, v in (meta or {}).items() if k != "layout"}}
        return msgpack.packb(doc, use_bin_type=True)
    buf = io.BytesIO()
    np.savez(buf, t=t.astype(np.float64), weights=w.astype(np.float32), names=np.array(names, dtype=str),
             fps=np.float64(fps))
    return buf.getvalue()


def track_meta(rt, lookahead_ms: float, audio_name: str, stride: int = 1) -> dict:
    """The extra fields of a .json / .msgpack track; `stride` only when it is not the stream's 1."""
    meta = {"layout": rt.layout, "lookahead_ms": lookahead_ms, "model": str(rt.path.name), "audio": audio_name}
    if stride != 1:
        meta["stride"] = int(stride)
    return meta


def write_atomic(path, data: bytes) -> Path:
    """Write `data` to a temporary file beside `path`, flush it to disk, then rename it over `path`.

    A crash, Ctrl-C or full disk leaves either the old file or the new one, never a truncated one.
    The folder must exist (FileNotFoundError otherwise)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_track(path, t: np.ndarray, w: np.ndarray, names, fps: float, meta: dict | None = None) -> Path:
    """Write a track as .csv, .json, .npz or .msgpack (chosen by the suffix), atomically."""
    path = Path(path)
    return write_atomic(path, encode_track(path.suffix, t, w, names, fps, meta))


# ------------------------------------------------------------------------------------- the command

def add_arguments(p) -> None:
    p.add_argument("audio", help="audio file (wav, flac, ogg, mp3; any rate, mixed to mono), or a folder or glob "
                                 "pattern (quote it) for a batch bake")
    p.add_argument("--out", required=True, help="output track (.csv, .json, .npz, .msgpack); for a folder or "
                                                "pattern: the output folder, mirroring the input tree")
    p.add_argument("--fps", type=float, default=30.0, help="output frame rate (default 30; any rate 1-120)")
    p.add_argument("--lookahead-ms", type=float, default=80.0, help="A2E look-ahead (same as the live stream)")
    p.add_argument("--stride", type=int, default=1,
                   help="offline speed-up: one model window per STRIDE model frames (40 ms each), STRIDE frames "
                        "read from it, each with at least the look-ahead. 1 (default) = exactly what the live "
                        "stream gives; see docs/bake.md for the measured lip-sync of larger strides")
    p.add_argument("--model", default=None, help="A2E .onnx (default: models/a2e/default.onnx)")
    p.add_argument("--max-seconds", type=float, default=DEFAULT_MAX_SECONDS,
                   help="refuse files longer than this, from their header "
                        f"(default {DEFAULT_MAX_SECONDS:.0f}; 0 = no limit)")
    p.add_argument("--allow-silent", action="store_true", help="bake silent files instead of reporting them")
    from realtalk_bridge import bake_batch

    bake_batch.add_arguments(p)


def _is_batch(src: str) -> bool:
    import glob

    return os.path.isdir(src) or glob.has_magic(src)


def run(args) -> int:
    if args.max_seconds < 0:
        print("bake: --max-seconds must be >= 0", file=sys.stderr)
        return 2
    if args.stride < 1:
        print(f"bake: --stride must be >= 1, got {args.stride}", file=sys.stderr)
        return 2
    if _is_batch(args.audio):
        from realtalk_bridge import bake_batch

        return bake_batch.run(args)
    return run_single(args)


def run_single(args) -> int:
    from realtalk_bridge.runtime.a2e import A2ERuntime

    out = Path(args.out)
    if out.suffix.lower() not in FORMATS:
        print(f"bake: --out must end in {', '.join(FORMATS)}", file=sys.stderr)
        return 2
    if not out.parent.exists():  # say so instead of creating a tree of folders from a typo
        print(f"bake: the folder {out.parent} does not exist; create it first", file=sys.stderr)
        return 2
    try:
        src = read_checked(args.audio, max_seconds=args.max_seconds, allow_silent=args.allow_silent)
        rt = A2ERuntime(args.model)
        t0 = time.perf_counter()
        t, w = bake_array(rt, src.audio, fps=args.fps, lookahead_ms=args.lookahead_ms, stride=args.stride)
        dt = time.perf_counter() - t0
    except (FileNotFoundError, ValueError) as exc:
        print(f"bake: {exc}", file=sys.stderr)
        return 1
    for warning in src.warnings:
        print(f"bake: warning: {args.audio}: {warning}", file=sys.stderr)
    out = write_track(out, t, w, rt.names, args.fps,
                      meta=track_meta(rt, args.lookahead_ms, Path(args.audio).name, args.stride))
    secs = len(src.audio) / 16000
    print(f"{out}: {len(w)} frames at {args.fps:g} fps, {secs:.2f} s of audio in {dt:.2f} s "
          f"({secs / max(dt, 1e-9):.0f}x real time)")
    return 0
