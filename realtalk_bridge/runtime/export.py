"""`realtalk-bridge export a2e CKPT --out FILE.onnx`: A2E checkpoint -> self-describing ONNX.

The ONNX graph takes raw 16 kHz samples (the log-mel front-end is inside it), the identity and the
history, and returns T frames. Everything the runtime needs to use it (dims, coefficient names,
layout id, rates, default identity and history) goes into the model's metadata_props under the key
`realtalk_a2e` as JSON, so a .onnx file is all a user ships.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

META_KEY = "realtalk_a2e"
META_VERSION = 1
OPSET = 17


def add_arguments(parser) -> None:
    parser.add_argument("checkpoint", type=Path, help="A2E checkpoint (.safetensors) written by `train a2e`")
    parser.add_argument("--out", type=Path, required=True, help="output .onnx file")
    parser.add_argument("--opset", type=int, default=OPSET)
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="max abs difference allowed between PyTorch and onnxruntime outputs")


def run(args) -> int:
    import sys

    try:
        err = export_checkpoint(args.checkpoint, args.out, opset=args.opset, tolerance=args.tolerance)
    except (ValueError, FileNotFoundError) as exc:
        print(f"export a2e: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.out} (PyTorch vs onnxruntime max abs error {err:.2e})")
    return 0


def export_checkpoint(ckpt: str | Path, out: str | Path, opset: int = OPSET, tolerance: float = 1e-4) -> float:
    from realtalk_bridge.nets.a2e import load_checkpoint

    if not Path(ckpt).is_file():
        raise FileNotFoundError(f"no checkpoint at {ckpt}")
    model, meta = load_checkpoint(ckpt)
    defaults = meta.get("defaults") or {}
    return export_onnx(model, meta["names"], meta["layout"], out, defaults=defaults, opset=opset, tolerance=tolerance)


def export_onnx(model, names, layout: str, out: str | Path, defaults: dict | None = None, opset: int = OPSET,
                tolerance: float = 1e-4) -> float:
    """Export `model` (nets.a2e.A2E) to `out`; returns the PyTorch/onnxruntime max abs error (checked <= tolerance)."""
    import warnings
    from dataclasses import asdict

    import onnx
    import torch

    dims = model.dims
    if len(names) != dims.n_expr:
        raise ValueError(f"{len(names)} names for {dims.n_expr} expression coefficients")
    defaults = defaults or {}
    identity = np.asarray(defaults.get("identity", np.zeros(dims.n_id)), dtype=np.float32)
    history = np.asarray(defaults.get("history", np.zeros((dims.n_hist, dims.n_expr))), dtype=np.float32)
    if identity.shape != (dims.n_id,) or history.shape != (dims.n_hist, dims.n_expr):
        raise ValueError(f"default identity {identity.shape} / history {history.shape} do not match the dims")

    model = model.eval().cpu()
    g = torch.Generator().manual_seed(0)
    audio = torch.randn(2, dims.window_samples, generator=g) * 0.1
    ident = torch.randn(2, dims.n_id, generator=g)
    hist = torch.randn(2, dims.n_hist, dims.n_expr, generator=g) * 0.3
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(
            model, (audio, ident, hist), str(out), dynamo=False, opset_version=opset,
            input_names=["audio", "identity", "history"], output_names=["expr"],
            dynamic_axes={"audio": {0: "batch"}, "identity": {0: "batch"}, "history": {0: "batch"}, "expr": {0: "batch"}},
        )
        ref = model(audio, ident, hist).numpy()

    meta = {
        "version": META_VERSION,
        "dims": asdict(dims),
        "names": list(names),
        "layout": layout,
        "sample_rate": dims.sample_rate,
        "fps": dims.fps,
        "window_samples": dims.window_samples,
        "params": int(sum(p.numel() for p in model.parameters())),
        "default_identity": identity.tolist(),
        "default_history": history.tolist(),
    }
    m = onnx.load(str(out))
    del m.metadata_props[:]
    entry = m.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(meta)
    m.producer_name = "realtalk-bridge"
    onnx.save(m, str(out))

    import onnxruntime as ort

    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"audio": audio.numpy(), "identity": ident.numpy(), "history": hist.numpy()})[0]
    err = float(np.abs(got - ref).max())
    if not err <= tolerance:
        raise ValueError(f"ONNX export differs from PyTorch by {err:.3g} (> {tolerance})")
    return err
