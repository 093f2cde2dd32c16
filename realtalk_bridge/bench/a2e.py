"""`realtalk-bridge bench a2e --out FILE.json`: A2E step latency and real-time factor (onnxruntime).

One "step" is one model call on one window (batch 1), which the stream makes once per 25 fps model
frame (every 40 ms of audio). The real-time factor streams synthetic speech-like audio through
`A2EStream` in 20 ms chunks and divides the compute time by the audio duration. Writes the JSON
(`step_ms_median`, `step_ms_p95`, `rtf`, `params`, `provider`, `offline_rtf` for bake, ...) and a histogram PNG beside it.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def add_arguments(parser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write (a .png goes beside it)")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--model", type=Path, help="exported A2E .onnx (default: the shipped models/a2e/default.onnx)")
    src.add_argument("--random-init", action="store_true",
                     help="time an untrained model built with torch from --config (no shipped model needed)")
    parser.add_argument("--config", default="default", help="named dims for --random-init (tiny, default, paper)")
    parser.add_argument("--dims", nargs="*", metavar="KEY=VALUE", help="override dims for --random-init, e.g. d_model=96")
    parser.add_argument("--steps", type=int, default=500, help="timed model steps")
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=20.0, help="audio streamed for the real-time factor")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--providers", default=None, help="comma-separated onnxruntime providers (default: CPU)")


def _random_init_model(config: str, folder: Path, overrides: dict | None = None) -> Path:
    import torch

    from realtalk_bridge.face.arkit import ARKIT_LAYOUT, ARKIT_NAMES
    from realtalk_bridge.nets.a2e import A2E, dims_for
    from realtalk_bridge.runtime.export import export_onnx

    torch.manual_seed(0)
    model = A2E(dims_for(config, **(overrides or {}))).eval()
    path = folder / f"random-{config}.onnx"
    export_onnx(model, list(ARKIT_NAMES), ARKIT_LAYOUT, path)
    return path


def bench(model: Path, steps: int = 500, warmup: int = 30, seconds: float = 20.0, threads: int = 1, fps: int = 30,
          providers: list[str] | None = None) -> tuple[dict, np.ndarray]:
    from realtalk_bridge.runtime.a2e import A2ERuntime, A2EStream, infer_offline
    from realtalk_bridge.train.a2e import synth_clip

    rt = A2ERuntime(model, providers=providers or ["CPUExecutionProvider"], threads=threads)
    rng = np.random.default_rng(0)
    win = (rng.normal(size=(1, rt.window_samples)) * 0.1).astype(np.float32)
    ident = rt.default_identity[None]
    hist = rt.default_history[None]
    enc = rt.encoder.new_state() if rt.encoder is not None else None
    noise = (rng.normal(size=rt.frame_samples * (steps + warmup + 1)) * 0.1).astype(np.float32)

    def step(s: int) -> None:
        if enc is None:
            rt.run(win, ident, hist)
            return
        # a Whisper front-end: one step is the encoder on the next 40 ms plus the A2E on the newest window
        enc.feed(noise[s * rt.frame_samples:(s + 1) * rt.frame_samples])
        n = rt.window_samples // 320
        rt.run(enc.window(enc.n_tokens - n, n)[None], ident, hist)

    for s in range(warmup):
        step(s)
    times = np.empty(steps)
    try:
        from rich.progress import track
    except ImportError:  # rich is a core dependency; stay usable without it anyway
        def track(it, description=""):
            return it
    for s in track(range(steps), description="model steps"):
        win[0, s % rt.window_samples] += 1e-4  # new input every step, as in a stream
        t0 = time.perf_counter()
        step(warmup + s)
        times[s] = time.perf_counter() - t0
    ms = times * 1000.0

    clip = synth_clip(rng, seconds, rt.names, rt.n_id)
    stream = A2EStream(rt, fps=fps)
    chunk = rt.sample_rate // 50
    n_frames = 0
    t0 = time.perf_counter()
    for a in range(0, len(clip.audio), chunk):
        n_frames += len(stream.push(clip.audio[a:a + chunk]))
    n_frames += len(stream.flush())
    elapsed = time.perf_counter() - t0
    audio_s = len(clip.audio) / rt.sample_rate
    # offline (bake): the same windows, batched
    t0 = time.perf_counter()
    infer_offline(rt, clip.audio, fps=fps)
    offline = time.perf_counter() - t0

    result = {
        "model": model_label(model),
        "provider": rt.provider,
        "threads": threads,
        "params": int(rt.meta.get("params", -1)),
        "encoder": (None if rt.encoder is None else
                    {"file": rt.encoder.path.name, "precision": rt.encoder.meta.get("precision")}),
        "dims": rt.dims,
        "steps": steps,
        "step_ms_median": float(np.median(ms)),
        "step_ms_p95": float(np.percentile(ms, 95)),
        "step_ms_mean": float(ms.mean()),
        "step_ms_max": float(ms.max()),
        "rtf": elapsed / audio_s,
        "rtf_audio_s": audio_s,
        "rtf_frames": n_frames,
        "rtf_fps": fps,
        "offline_rtf": offline / audio_s,
        "steps_per_audio_s": rt.fps,
        # the load average tells whether other jobs shared the cores during the run
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "processor": platform.processor(), "load_avg_1m": os.getloadavg()[0]},
    }
    return result, ms


def model_label(model) -> str:
    """A name for the JSON that does not leak a developer's folders: `a2e/default.onnx` for a shipped model
    (relative to the models folder), the bare file name otherwise."""
    from realtalk_bridge.assets import models_dir

    path = Path(model).resolve()
    try:
        return path.relative_to(Path(models_dir()).resolve()).as_posix()
    except ValueError:
        return path.name


def plot(ms: np.ndarray, result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    hi = np.percentile(ms, 99.5)
    ax.hist(np.clip(ms, None, hi), bins=60, color="#3b7dd8")
    for v, lab, c in ((result["step_ms_median"], "median", "k"), (result["step_ms_p95"], "p95", "r")):
        ax.axvline(v, color=c, ls="--", label=f"{lab} {v:.2f} ms")
    ax.set_xlabel("A2E step latency (ms, batch 1)")
    ax.set_ylabel("steps")
    ax.set_title(f"A2E on {result['provider']} ({result['threads']} thread), {result['params'] / 1e6:.2f} M params, "
                 f"RTF {result['rtf']:.3f}", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args) -> int:
    providers = args.providers.split(",") if args.providers else None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            if args.random_init:
                from realtalk_bridge.nets.a2e import parse_overrides

                model = _random_init_model(args.config, Path(tmp), parse_overrides(args.dims))
            else:
                from realtalk_bridge.runtime.a2e import DEFAULT_MODEL

                model = args.model or DEFAULT_MODEL
                if not Path(model).is_file():
                    raise FileNotFoundError(f"no model at {model}; pass --model FILE.onnx or --random-init --config default")
            result, ms = bench(Path(model), steps=args.steps, warmup=args.warmup, seconds=args.seconds,
                               threads=args.threads, fps=args.fps, providers=providers)
        except (FileNotFoundError, ValueError) as exc:
            print(f"bench a2e: {exc}", file=sys.stderr)
            return 1
        if args.random_init:
            result["model"] = f"random-init:{args.config}" + ("".join(f" {d}" for d in args.dims) if args.dims else "")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    png = out.with_suffix(".png")
    plot(ms, result, png)
    print(f"step median {result['step_ms_median']:.3f} ms, p95 {result['step_ms_p95']:.3f} ms, "
          f"RTF {result['rtf']:.4f}, {result['params']} params on {result['provider']} -> {out}, {png}")
    return 0
