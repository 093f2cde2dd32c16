"""Drive a source face with ARKit-52 weights: track -> crop -> learnable mask -> renderer -> paste back.

Used by `render` (offline), `eval renderer` and the sidecar's RendererSink (live). numpy + cv2 + onnxruntime.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from realtalk_bridge.face.arkit import ARKIT_INDEX, ARKIT_NAMES
from realtalk_bridge.video import geometry as G


def to_arkit(names, weights) -> np.ndarray:
    """Weights in any name order -> (52,) in ARKIT_NAMES order (names we do not know are ignored)."""
    out = np.zeros(len(ARKIT_NAMES), np.float32)
    w = np.asarray(weights, np.float32).reshape(-1)
    if len(names) != len(w):
        raise ValueError(f"{len(names)} names but {len(w)} weights")
    for n, v in zip(names, w):
        j = ARKIT_INDEX.get(n)
        if j is not None:
            out[j] = v
    return out


def coeff_vector(alpha, expr, pose) -> np.ndarray:
    """The coefficient vector the renderer sees; pose translation cm -> m keeps magnitudes near 1."""
    pose = np.asarray(pose, np.float32).copy()
    pose[..., 3:] *= 0.01
    return np.concatenate([np.asarray(alpha, np.float32), np.asarray(expr, np.float32), pose], axis=-1)


@dataclass
class SourceFrame:
    """One tracked source frame, ready to be re-rendered with any expression."""
    rgb: np.ndarray  # full frame
    transform: np.ndarray  # 2x3 frame -> crop
    crop: np.ndarray  # (S, S, 3) uint8
    landmarks: np.ndarray  # (478, 2) crop pixels
    expr: np.ndarray  # (52,) tracked ARKit weights
    pose: np.ndarray  # (6,)
    camera: np.ndarray  # (2, 4)


class FaceDriver:
    """Holds the renderer, the face geometry, the identity and the reference crop (the first source frame)."""

    def __init__(self, runtime, geometry=None, tracker=None):
        from realtalk_bridge.video.facefit import FaceGeometry

        self.runtime = runtime
        self.size = runtime.size
        self.geometry = geometry if geometry is not None else FaceGeometry()
        n_id = int(runtime.dims["n_id"])
        if n_id != self.geometry.n_id:
            raise ValueError(f"renderer was trained with {n_id} identity coefficients; the face model has "
                             f"{self.geometry.n_id}")
        self._own_tracker = tracker is None
        if tracker is None:
            from realtalk_bridge.video.track import FaceTracker

            tracker = FaceTracker(video=True)
        self.tracker = tracker
        self.smoother = G.QuadSmoother()
        self.alpha = None
        self.reference = None
        self._t_ms = 0

    def track(self, rgb: np.ndarray) -> SourceFrame | None:
        self._t_ms += 40
        tr = self.tracker(rgb, self._t_ms)
        if tr is None:
            return None
        A = G.quad_to_transform(self.smoother(G.align_quad(tr.landmarks)), self.size)
        lm = G.apply_affine(A, tr.landmarks).astype(np.float32)
        if self.alpha is None:  # identity from the first tracked frame; it is also the texture reference
            self.alpha = self.geometry.fit_identity(tr.blendshapes[None], lm[None])
        cam = self.geometry.fit_camera(self.alpha, tr.blendshapes, lm)
        frame = SourceFrame(rgb, A, G.crop(rgb, A, self.size), lm, tr.blendshapes, G.matrix_to_pose(tr.matrix), cam)
        if self.reference is None:
            self.reference = frame.crop
        return frame

    def refit_identity(self, frames: list[SourceFrame], max_frames: int = 60) -> None:
        """Fit alpha on several tracked frames (better than the first frame alone) and refresh their cameras."""
        if not frames:
            return
        pick = frames[:: max(1, len(frames) // max_frames)][:max_frames]
        self.alpha = self.geometry.fit_identity(np.stack([f.expr for f in pick]), np.stack([f.landmarks for f in pick]))
        for f in frames:
            f.camera = self.geometry.fit_camera(self.alpha, f.expr, f.landmarks)

    def set_reference(self, crop: np.ndarray, alpha: np.ndarray | None = None) -> None:
        self.reference = crop
        if alpha is not None:
            self.alpha = np.asarray(alpha, np.float32)

    def mask(self, src: SourceFrame, expr: np.ndarray) -> np.ndarray:
        # paint both where the new mouth/jaw will be and where the source's own jaw was (no double chin)
        m_new = self.geometry.mask(self.alpha, expr, src.camera, self.size)
        m_src = self.geometry.mask(self.alpha, src.expr, src.camera, self.size)
        return np.minimum(m_new, m_src)

    def render_crop(self, src: SourceFrame, expr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rendered crop uint8 (S, S, 3), mask (S, S) with 1 = kept source pixels)."""
        expr = np.asarray(expr, np.float32)
        mask = self.mask(src, expr)
        guide = self.geometry.guide(self.alpha, expr, src.camera, self.size) if getattr(self.runtime, "has_guide", False) else None
        return self.runtime(src.crop, mask, self.reference, coeff_vector(self.alpha, expr, src.pose), guide), mask

    def render(self, src: SourceFrame, expr: np.ndarray) -> np.ndarray:
        """Full frame with the lower face re-rendered for `expr` (52 ARKit weights)."""
        face, mask = self.render_crop(src, expr)
        return G.paste(src.rgb, face, src.transform, region=1.0 - mask)

    def close(self) -> None:
        if self._own_tracker:
            self.tracker.close()
