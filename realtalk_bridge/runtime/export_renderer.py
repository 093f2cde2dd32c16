"""`realtalk-bridge export renderer CKPT --out FILE.onnx`: renderer checkpoint -> ONNX, checked against PyTorch."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def add_arguments(p) -> None:
    p.add_argument("checkpoint", help="renderer.safetensors written by `train renderer`")
    p.add_argument("--out", required=True, help="output .onnx file")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime-vs-PyTorch parity check")


def export_model(model, out, opset: int = 17) -> Path:
    import onnx
    import torch

    dims = model.dims
    s, c = dims.image_size, dims.n_coeffs
    args = (torch.zeros(1, 3, s, s), torch.ones(1, 1, s, s), torch.zeros(1, 3, s, s), torch.zeros(1, c))
    names = ["source", "mask", "reference", "coeffs"]
    if dims.guide:  # the lip guide is a 5th input
        args, names = args + (torch.zeros(1, 1, s, s),), names + ["guide"]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    batch = {0: "batch"}
    with torch.no_grad():
        torch.onnx.export(model.eval(), args, str(out), input_names=names,
                          output_names=["image"], opset_version=opset, dynamo=False,
                          dynamic_axes={**{n: batch for n in names}, "image": batch})
    m = onnx.load(str(out))
    entry = m.metadata_props.add()
    entry.key, entry.value = "dims", dims.to_json()
    entry = m.metadata_props.add()
    entry.key, entry.value = "kind", "realtalk-renderer"
    # so onnxruntime-only tools (bench renderer) can report the size without the onnx package
    entry = m.metadata_props.add()
    entry.key, entry.value = "params", str(sum(int(p.numel()) for p in model.parameters()))
    onnx.save(m, str(out))
    return out


def parity(model, onnx_path, batch: int = 2, seed: int = 0) -> float:
    """Max |onnxruntime - PyTorch| on random inputs with a lower-half mask."""
    import torch

    from realtalk_bridge.runtime.renderer import RendererRuntime

    d = model.dims
    g = torch.Generator().manual_seed(seed)
    src = torch.rand(batch, 3, d.image_size, d.image_size, generator=g) * 2 - 1
    ref = torch.rand(batch, 3, d.image_size, d.image_size, generator=g) * 2 - 1
    mask = torch.ones(batch, 1, d.image_size, d.image_size)
    mask[..., d.image_size // 2:, :] = 0
    coeffs = torch.rand(batch, d.n_coeffs, generator=g)
    guide = (torch.rand(batch, 1, d.image_size, d.image_size, generator=g) > 0.7).float() if d.guide else None
    with torch.no_grad():
        want = model.eval()(src, mask, ref, coeffs, guide).numpy()
    rt = RendererRuntime(onnx_path, providers=["CPUExecutionProvider"])
    got = rt.run(src.numpy(), mask.numpy(), ref.numpy(), coeffs.numpy(), None if guide is None else guide.numpy())
    return float(np.abs(got - want).max())


def run(args) -> int:
    from realtalk_bridge.nets.renderer import load_renderer

    try:
        model, _ = load_renderer(args.checkpoint)
    except ValueError as exc:
        print(f"export renderer: {exc}", file=sys.stderr)
        return 2
    out = export_model(model, args.out, args.opset)
    if not args.no_check:
        err = parity(model, out)
        print(f"export renderer: max |onnxruntime - torch| = {err:.2e}")
        if err > 1e-3:
            print("export renderer: parity check FAILED", file=sys.stderr)
            return 1
    print(f"export renderer: {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0
