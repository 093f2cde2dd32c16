"""Renderer inference on onnxruntime (numpy only; no torch): the piece `render`, `serve --render` and `bench` use.

The ONNX graph (written by `realtalk-bridge export renderer`) takes
  source (B, 3, S, S) float32 in [-1, 1], mask (B, 1, S, S) float32 (1 = keep), reference (B, 3, S, S),
  coeffs (B, C) float32 = [identity, ARKit-52, pose] (video.driver.coeff_vector)
and, for models with dims.guide, guide (B, 1, S, S) (the projected lip guide, video.geometry.lip_guide);
returns image (B, 3, S, S) in [-1, 1]. The dims dataclass travels in the model's metadata ("dims").
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def pick_providers(providers=None) -> list[str]:
    import onnxruntime as ort

    if providers:
        return list(providers)
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def _to_nchw(img: np.ndarray) -> np.ndarray:
    x = np.asarray(img)
    if x.ndim == 3:
        x = x[None]
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 127.5 - 1.0
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)


class RendererRuntime:
    def __init__(self, onnx_path, providers=None, threads: int | None = None):
        import onnxruntime as ort

        path = Path(onnx_path)
        if not path.is_file():
            raise ValueError(f"renderer model not found: {path}")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=pick_providers(providers))
        except Exception as exc:
            raise ValueError(f"cannot load renderer model {path}: {exc}") from exc
        meta = self.session.get_modelmeta().custom_metadata_map
        if "dims" not in meta:
            raise ValueError(f"{path} is not a realtalk renderer export (no 'dims' metadata)")
        self.dims = json.loads(meta["dims"])
        self.size = int(self.dims["image_size"])
        self.n_coeffs = int(self.dims["n_id"]) + int(self.dims["n_exp"]) + int(self.dims["n_pose"])
        self.params = int(meta["params"]) if meta.get("params", "").isdigit() else None  # exports since 0.1
        self.provider = self.session.get_providers()[0]
        self.has_guide = "guide" in {i.name for i in self.session.get_inputs()}

    def run(self, source, mask, reference, coeffs, guide=None) -> np.ndarray:
        """Arrays already in network layout (NCHW float32) -> (B, 3, S, S) float32."""
        feed = {"source": source, "mask": mask, "reference": reference, "coeffs": coeffs}
        if self.has_guide:
            if guide is None:
                raise ValueError("this renderer takes a lip guide (B, 1, S, S); pass guide=")
            feed["guide"] = guide
        return self.session.run(["image"], feed)[0]

    def __call__(self, source, mask, reference, coeffs, guide=None) -> np.ndarray:
        """source/reference: uint8 (S, S, 3) or (B, S, S, 3); mask: (S, S) or (B, S, S) with 1 = keep;
        coeffs: (C,) or (B, C); guide (models with a guide input): (S, S) or (B, S, S).
        Returns uint8 (B, S, S, 3) (or (S, S, 3) for unbatched input)."""
        single = np.asarray(source).ndim == 3
        src, ref = _to_nchw(source), _to_nchw(reference)
        m = np.asarray(mask, np.float32)
        m = m.reshape((-1, 1) + m.shape[-2:])
        c = np.asarray(coeffs, np.float32).reshape(len(src), -1)
        if src.shape[-1] != self.size or ref.shape != src.shape or m.shape[-1] != self.size:
            raise ValueError(f"renderer expects {self.size}x{self.size} images and mask; got source {src.shape}, "
                             f"reference {ref.shape}, mask {m.shape}")
        if c.shape[1] != self.n_coeffs:
            raise ValueError(f"renderer expects {self.n_coeffs} coefficients, got {c.shape[1]}")
        g = None
        if self.has_guide:
            if guide is None:
                raise ValueError("this renderer takes a lip guide: pass guide= (FaceGeometry.guide)")
            g = np.asarray(guide, np.float32)
            g = g.reshape((-1, 1) + g.shape[-2:])
            if g.shape[-1] != self.size or g.shape[-2] != self.size:
                raise ValueError(f"renderer expects a {self.size}x{self.size} guide, got {g.shape}")
            g = np.broadcast_to(g, (len(src), 1) + g.shape[-2:]).copy()
        out = self.run(src, np.broadcast_to(m, (len(src), 1) + m.shape[-2:]).copy(), ref, c, g)
        img = ((out.transpose(0, 2, 3, 1) + 1.0) * 127.5).round().clip(0, 255).astype(np.uint8)
        return img[0] if single else img
