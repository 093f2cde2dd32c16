"""`realtalk-bridge render --image PORTRAIT | --video CLIP --audio SPEECH --renderer MODEL --out OUT.mp4`.

A2E coefficients (onnxruntime) drive the renderer on every frame of the source (a still portrait, or a clip that
loops); each rendered face crop is pasted back into the full frame and the speech is muxed in with ffmpeg.
"""
from __future__ import annotations

import itertools
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from realtalk_bridge.audio import SAMPLE_RATE, load_audio

FPS = 25


def add_arguments(p) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", help="a portrait (any image OpenCV reads)")
    src.add_argument("--video", help="a clip of the person (loops when shorter than the speech)")
    p.add_argument("--audio", required=True, help="speech (wav/flac/ogg)")
    p.add_argument("--renderer", required=True, help="renderer .onnx (from `export renderer`) or .safetensors checkpoint")
    p.add_argument("--a2e", default=None, help="A2E .onnx (default: the shipped model)")
    p.add_argument("--coeffs", default=None, help="instead of A2E: a `bake --out X.npz` track, or an .npz with `expr` (n, 52) ARKit weights at 25 fps")
    p.add_argument("--lookahead-ms", type=float, default=80.0)
    p.add_argument("--seconds", type=float, default=None,
                   help="make the video this long: the speech repeats (with a 0.4 s pause) or is cut to fit")
    p.add_argument("--out", required=True, help="output .mp4")
    p.add_argument("--crf", type=int, default=18)
    p.add_argument("--quiet", action="store_true")


def load_runtime(path, providers=None):
    """An .onnx loads directly; a .safetensors checkpoint is exported to a temporary ONNX first (needs torch)."""
    from realtalk_bridge.runtime.renderer import RendererRuntime

    path = Path(path)
    if path.suffix == ".safetensors":
        from realtalk_bridge.nets.renderer import load_renderer
        from realtalk_bridge.runtime.export_renderer import export_model

        model, _ = load_renderer(path)
        tmp = Path(tempfile.mkdtemp(prefix="realtalk-renderer-"))
        try:
            return RendererRuntime(export_model(model, tmp / "renderer.onnx"), providers)
        finally:  # the session holds the model in memory
            shutil.rmtree(tmp, ignore_errors=True)
    return RendererRuntime(path, providers)


def load_coeffs(path) -> np.ndarray:
    """(n, 52) ARKit weights at 25 fps from an .npz: `expr` (n, 52) at 25 fps (a dataset clip), or a
    `bake --out X.npz` track (`weights`, `names`, `fps`), reordered by name and resampled to 25 fps."""
    import zipfile

    from realtalk_bridge.bake import resample_track
    from realtalk_bridge.face.arkit import ARKIT_NAMES
    from realtalk_bridge.video.driver import to_arkit

    if not Path(path).is_file():
        raise ValueError(f"--coeffs {path}: no such file")
    if not zipfile.is_zipfile(path):  # np.load would take other files for pickles and say so
        raise ValueError(f"--coeffs {path}: not an .npz file")
    with np.load(path, allow_pickle=False) as z:
        if "expr" in z.files:
            expr = np.asarray(z["expr"], np.float32)
            if expr.ndim != 2 or expr.shape[1] != len(ARKIT_NAMES):
                raise ValueError(f"{path}: 'expr' must be (n, 52), got {expr.shape}")
            return expr
        if not {"weights", "names", "fps"} <= set(z.files):
            raise ValueError(f"{path}: want an 'expr' (n, 52) array at 25 fps, or a `bake` track "
                             f"('weights', 'names', 'fps'); found {sorted(z.files)}")
        w, names, fps = np.asarray(z["weights"], np.float32), [str(n) for n in z["names"]], float(z["fps"])
    if w.ndim != 2 or w.shape[1] != len(names) or not 1 <= fps <= 240:
        raise ValueError(f"{path}: 'weights' {w.shape} does not match {len(names)} names at {fps:g} fps")
    if not set(names) & set(ARKIT_NAMES):
        raise ValueError(f"{path}: no ARKit-52 names in the track")
    w = np.stack([to_arkit(names, row) for row in w]) if len(w) else np.zeros((0, len(ARKIT_NAMES)), np.float32)
    n_out = int(round(len(w) * FPS / fps))
    return resample_track(w, fps, FPS, n_out)


def fit_length(audio: np.ndarray, seconds: float, pause: float = 0.4) -> np.ndarray:
    """The speech repeated (a short pause between repeats) or cut, to exactly `seconds`."""
    n = int(round(seconds * SAMPLE_RATE))
    if len(audio) == 0:
        return np.zeros(n, np.float32)
    one = np.concatenate([audio, np.zeros(int(pause * SAMPLE_RATE), audio.dtype)])
    return np.tile(one, n // len(one) + 1)[:n]


def expressions(args, n_audio_frames: int, audio: np.ndarray) -> np.ndarray:
    from realtalk_bridge.face.arkit import ARKIT_NAMES
    from realtalk_bridge.video.driver import to_arkit

    if args.coeffs:
        return load_coeffs(args.coeffs)
    from realtalk_bridge.runtime.a2e import A2ERuntime, infer_offline

    rt = A2ERuntime(args.a2e)
    w = infer_offline(rt, audio, fps=FPS, lookahead_ms=args.lookahead_ms)
    names = list(rt.names)
    return np.stack([to_arkit(names, row) for row in w]) if len(w) else np.zeros((0, len(ARKIT_NAMES)), np.float32)


def source_frames(args):
    """Endless (rgb) frames: the still image repeated, or the clip looped."""
    import cv2

    from realtalk_bridge.video.track import read_frames

    if args.image:
        bgr = cv2.imread(args.image, cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"cannot read image {args.image}")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        while True:
            yield rgb
    else:
        while True:
            n = 0
            for _, _, rgb in read_frames(args.video, FPS):
                n += 1
                yield rgb
            if n == 0:
                raise ValueError(f"no frames in {args.video}")


class VideoWriter:
    """RGB frames -> H.264 mp4 through an ffmpeg pipe, with the speech muxed in."""

    def __init__(self, out, width: int, height: int, audio_wav=None, crf: int = 18):
        ffmpeg = shutil.which("ffmpeg")
        if ffmpeg is None:
            raise RuntimeError("ffmpeg is needed to write video (Debian: apt-get install ffmpeg)")
        cmd = [ffmpeg, "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
               "-r", str(FPS), "-i", "-"]
        if audio_wav:
            cmd += ["-i", str(audio_wav)]
        cmd += ["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", str(crf)]
        if audio_wav:
            cmd += ["-c:a", "aac", "-b:a", "128k", "-shortest"]
        cmd.append(str(out))
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)

    def write(self, rgb: np.ndarray) -> None:
        self.proc.stdin.write(np.ascontiguousarray(rgb, np.uint8).tobytes())

    def close(self) -> None:
        self.proc.stdin.close()
        err = self.proc.stderr.read().decode(errors="replace")
        if self.proc.wait() != 0:
            raise RuntimeError(f"ffmpeg failed: {err.strip()}")


def run(args) -> int:
    # the vision extra's packages first, so a missing one is a one-line hint (cli.OPTIONAL) before any work
    import cv2  # noqa: F401
    import soundfile as sf
    from tqdm import tqdm

    from realtalk_bridge.video.driver import FaceDriver

    try:
        # the cheap checks first, so a typo fails at once and before any progress bar
        for flag, path in (("--image", args.image), ("--video", args.video)):
            if path and not Path(path).is_file():
                raise ValueError(f"{flag} {path}: no such file")
        if shutil.which("ffmpeg") is None:
            raise RuntimeError("ffmpeg is needed to write video (Debian: apt-get install ffmpeg)")
        frames = source_frames(args)
        first = next(frames)  # an unreadable image or clip fails here
        audio = load_audio(args.audio)
        if args.seconds is not None:
            if not 0 < args.seconds <= 3600:
                raise ValueError(f"--seconds must be in (0, 3600], got {args.seconds:g}")
            audio = fit_length(audio, args.seconds)
        n_frames = int(np.ceil(len(audio) / SAMPLE_RATE * FPS))
        runtime = load_runtime(args.renderer)
        expr = expressions(args, n_frames, audio)
        driver = FaceDriver(runtime)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"render: {exc}", file=sys.stderr)
        return 2
    frames = itertools.chain([first], frames)
    n = min(n_frames, len(expr))  # as long as the speech (or the given coefficients, when shorter)
    tmp = Path(tempfile.mkdtemp(prefix="realtalk-render-"))
    wav = tmp / "speech.wav"
    sf.write(str(wav), audio, SAMPLE_RATE)
    writer, last, missing = None, None, 0
    try:
        for k in tqdm(range(n), desc="render", disable=args.quiet):
            rgb = next(frames)
            src = driver.track(rgb)
            if src is None:  # no face in this source frame: show it unchanged
                missing += 1
                out = rgb
            else:
                out = driver.render(src, expr[k])
            if writer is None:
                writer = VideoWriter(args.out, out.shape[1], out.shape[0], wav, args.crf)
            writer.write(out)
            last = out
    except ValueError as exc:
        print(f"render: {exc}", file=sys.stderr)
        return 2
    finally:
        driver.close()
        if writer is not None:
            writer.close()
        shutil.rmtree(tmp, ignore_errors=True)
    if last is None:
        print("render: nothing rendered (no frames)", file=sys.stderr)
        return 1
    if missing:
        print(f"render: no face in {missing} of {n} source frames (left unchanged)", file=sys.stderr)
    print(f"render: {n} frames -> {args.out}")
    return 0
