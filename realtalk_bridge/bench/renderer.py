"""`realtalk-bridge bench renderer --config paper|lite --out FILE.json`: renderer ms per frame on onnxruntime.

Times one 256x256 frame (batch 1: masked source, mask, reference, coefficients -> image) on the session's provider
(CUDA when onnxruntime-gpu is installed and sees a GPU, else CPU). With --model an exported renderer is timed;
otherwise a freshly initialised network of the config (same graph and cost as a trained one) is exported first.
`--config lite,paper --provider all` times every config on every provider (CUDA, CPU) this onnxruntime has.
Writes JSON (`runs`: one entry per config and provider) and a PNG of the per-frame times and fps.
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


def add_arguments(p) -> None:
    p.add_argument("--config", default="lite", help="paper | lite | tiny, or a comma list (ignored with --model)")
    p.add_argument("--model", default=None, help="time this exported renderer .onnx instead")
    p.add_argument("--image-size", type=int, default=None, help="override the config's resolution")
    p.add_argument("--out", required=True, help="JSON results (a PNG is written beside it)")
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: all cores)")
    p.add_argument("--provider", default=None,
                   help="e.g. CPUExecutionProvider, a comma list, or all (default: CUDA when available, else CPU)")


def bench(runtime, iters: int = 30, warmup: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    s = runtime.size
    src = rng.uniform(-1, 1, (1, 3, s, s)).astype(np.float32)
    ref = rng.uniform(-1, 1, (1, 3, s, s)).astype(np.float32)
    mask = np.ones((1, 1, s, s), np.float32)
    mask[..., s // 2:, s // 4: 3 * s // 4] = 0
    coeffs = rng.uniform(0, 1, (1, runtime.n_coeffs)).astype(np.float32)
    guide = (1 - mask) * 0.5 if getattr(runtime, "has_guide", False) else None
    for _ in range(warmup):
        runtime.run(src, mask, ref, coeffs, guide)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        runtime.run(src, mask, ref, coeffs, guide)
        times.append((time.perf_counter() - t0) * 1000)
    return np.array(times)


def _export_config(config: str, image_size, tmpdir: Path):
    import torch

    from realtalk_bridge.nets.renderer import Renderer, count_params, make_dims
    from realtalk_bridge.runtime.export_renderer import export_model

    dims = make_dims(config, image_size=image_size)
    torch.manual_seed(0)
    model = Renderer(dims).eval()
    name = config + (f"@{dims.image_size}" if image_size else "")
    return name, export_model(model, tmpdir / f"{name}.onnx"), count_params(model)


def _providers(text: str | None) -> list[str | None]:
    """--provider: one name, a comma list, or "all" (every provider of CUDA/CPU this onnxruntime has)."""
    if not text:
        return [None]  # the session's default choice (CUDA when available, else CPU)
    if text == "all":
        import onnxruntime as ort

        have = ort.get_available_providers()
        return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in have]
    return [p.strip() for p in text.split(",") if p.strip()]


def time_one(path: Path, config: str, params, provider, args) -> dict:
    from realtalk_bridge.runtime.renderer import RendererRuntime

    rt = RendererRuntime(path, [provider] if provider else None, threads=args.threads)
    if provider and rt.provider != provider:  # onnxruntime falls back silently; say so instead of mislabelling
        raise ValueError(f"provider {provider} is not usable here (the session took {rt.provider})")
    if params is None:
        params = rt.params
    if params is None:  # an older export without the "params" entry: count its initializers
        try:
            import onnx
        except ModuleNotFoundError:
            pass
        else:
            params = int(sum(np.prod(t.dims) for t in onnx.load(str(path)).graph.initializer))
    times = bench(rt, args.iters, args.warmup)
    med = float(np.median(times))
    return {
        "config": config, "params": None if params is None else int(params),
        "params_m": None if params is None else round(params / 1e6, 2),
        "image_size": rt.size, "provider": rt.provider, "guide": rt.has_guide,
        "threads": args.threads or os.cpu_count(),
        "ms_per_frame_median": round(med, 2), "ms_per_frame_p90": round(float(np.percentile(times, 90)), 2),
        "ms_per_frame_min": round(float(times.min()), 2), "fps": round(1000.0 / med, 2),
        "real_time_25fps": bool(med <= 40.0), "iters": len(times),
        "times_ms": [round(float(t), 3) for t in times],
    }


def plot(runs: list[dict], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [2, 1]})
    labels = []
    for r in runs:
        label = f"{r['config']} / {r['provider'].replace('ExecutionProvider', '')}"
        labels.append(label)
        ax.plot(r["times_ms"], ".-", label=f"{label}: median {r['ms_per_frame_median']:.1f} ms ({r['fps']:.1f} fps)")
    ax.axhline(40.0, color="r", ls="--", label="25 fps budget (40 ms)")
    ax.set_xlabel("frame")
    ax.set_ylabel("ms")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.set_title("renderer, batch 1, per-frame time")
    bx.barh(labels, [r["fps"] for r in runs])
    bx.axvline(25, color="r", ls="--")
    bx.set_xlabel("fps (median)")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def run(args) -> int:
    providers = _providers(args.provider)
    tmp = tempfile.TemporaryDirectory(prefix="realtalk-bench-")
    try:
        if args.model:
            models = [("model", Path(args.model), None)]
        else:
            models = [_export_config(c.strip(), args.image_size, Path(tmp.name)) for c in args.config.split(",")
                      if c.strip()]
        runs = [time_one(path, name, params, prov, args) for name, path, params in models for prov in providers]
    except ValueError as exc:
        print(f"bench renderer: {exc}", file=sys.stderr)
        return 2
    finally:
        tmp.cleanup()
    # the top-level fields are the first run's (one config and provider: the whole result); `runs` has them all
    result = {**runs[0], "runs": runs,
              "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "python": platform.python_version()},
              "paper": {"ms_per_frame": 30.82, "params_m": 69.24, "device": "V100"}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    plot(runs, out.with_suffix(".png"))
    for r in runs:
        print(f"bench renderer: {r['config']} on {r['provider']}: {r['ms_per_frame_median']:.1f} ms/frame "
              f"(p90 {r['ms_per_frame_p90']:.1f}), {r['fps']:.1f} fps, "
              f"{'?' if r['params_m'] is None else r['params_m']} M params")
    return 0
