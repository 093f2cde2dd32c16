"""`realtalk-bridge bench renderer --config paper|lite --out FILE.json`: renderer ms per frame on onnxruntime.

Times one 256x256 frame (batch 1: masked source, mask, reference, coefficients -> image) on the session's provider
(CUDA when onnxruntime-gpu is installed and sees a GPU, else CPU). With --model an exported renderer is timed;
otherwise a freshly initialised network of the config (same graph and cost as a trained one) is exported first.
Writes JSON and a PNG of the per-frame times.
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
    p.add_argument("--config", default="lite", help="paper | lite | tiny (ignored with --model)")
    p.add_argument("--model", default=None, help="time this exported renderer .onnx instead")
    p.add_argument("--image-size", type=int, default=None, help="override the config's resolution")
    p.add_argument("--out", required=True, help="JSON results (a PNG is written beside it)")
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: all cores)")
    p.add_argument("--provider", default=None, help="e.g. CPUExecutionProvider")


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


def run(args) -> int:
    from realtalk_bridge.runtime.renderer import RendererRuntime

    providers = [args.provider] if args.provider else None
    tmp = None
    if args.model:
        path, config = Path(args.model), "model"
        params = None
    else:
        import torch

        from realtalk_bridge.nets.renderer import Renderer, count_params, make_dims
        from realtalk_bridge.runtime.export_renderer import export_model

        try:
            dims = make_dims(args.config, image_size=args.image_size)
        except ValueError as exc:
            print(f"bench renderer: {exc}", file=sys.stderr)
            return 2
        torch.manual_seed(0)
        model = Renderer(dims).eval()
        params = count_params(model)
        tmp = tempfile.TemporaryDirectory(prefix="realtalk-bench-")
        path = export_model(model, Path(tmp.name) / "renderer.onnx")
        config = args.config + (f"@{dims.image_size}" if args.image_size else "")
    try:
        rt = RendererRuntime(path, providers, threads=args.threads)
    except ValueError as exc:
        print(f"bench renderer: {exc}", file=sys.stderr)
        return 2
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
    result = {
        "config": config, "params": None if params is None else int(params),
        "params_m": None if params is None else round(params / 1e6, 2),
        "image_size": rt.size, "provider": rt.provider, "threads": args.threads or os.cpu_count(),
        "ms_per_frame_median": round(med, 2), "ms_per_frame_p90": round(float(np.percentile(times, 90)), 2),
        "ms_per_frame_min": round(float(times.min()), 2), "fps": round(1000.0 / med, 2),
        "real_time_25fps": bool(med <= 40.0), "iters": len(times),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "python": platform.python_version()},
        "paper": {"ms_per_frame": 30.82, "params_m": 69.24, "device": "V100"},
        "times_ms": [round(float(t), 3) for t in times],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(times, ".-", label=f"{config}: median {med:.1f} ms ({1000 / med:.1f} fps) on {rt.provider}")
    ax.axhline(40.0, color="r", ls="--", label="25 fps budget (40 ms)")
    ax.set_xlabel("frame")
    ax.set_ylabel("ms")
    ax.legend()
    ax.set_title(f"renderer {config}" + ("" if params is None else f", {params / 1e6:.2f} M params"))
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=100)
    plt.close(fig)
    if tmp is not None:
        tmp.cleanup()
    print(json.dumps({k: v for k, v in result.items() if k != "times_ms"}, indent=1))
    return 0
