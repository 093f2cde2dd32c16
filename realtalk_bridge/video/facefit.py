"""The face model seen from the renderer: vertices for ARKit-52 weights, the per-frame affine camera, the identity fit,
and the learnable mask (eq. 5) built from projected vertices.

Works with any `FaceModel` (realtalk_bridge.face.face_model) whose first vertices follow the MediaPipe mesh order
(the shipped "arkit" model); landmarks are matched to vertices by index.
"""
from __future__ import annotations

import numpy as np

from realtalk_bridge.face.arkit import ARKIT_NAMES
from realtalk_bridge.video import geometry as G


def load_arkit_face_model():
    try:
        from realtalk_bridge.face.face_model import load_face_model
    except ImportError as exc:  # the face-model module is a separate part of the project
        raise RuntimeError(f"the face model is not available ({exc}); the renderer needs "
                           "realtalk_bridge.face.face_model.load_face_model('arkit')") from exc
    return load_face_model("arkit")


class FaceGeometry:
    def __init__(self, model=None):
        self.model = model if model is not None else load_arkit_face_model()
        names = list(getattr(self.model, "exp_names", ARKIT_NAMES))
        index = {n: i for i, n in enumerate(ARKIT_NAMES)}
        # ARKit-52 order -> the model's expression order (names the model lacks stay 0)
        self._exp_src = np.array([index.get(n, -1) for n in names])
        self.n_exp = len(names)
        self.n_id = int(np.asarray(self.model.id_basis).shape[1])
        self.zero_id = np.zeros(self.n_id, np.float32)
        regions = getattr(self.model, "regions", {}) or {}
        self.contour = np.asarray(regions.get("lower_face_contour", G.MP_LOWER_FACE), dtype=np.int64)
        mean = np.asarray(self.model.mean)
        self.n_match = min(len(mean), 468)  # vertices that correspond to MediaPipe landmarks
        # identity basis as displacements (V, 3, K), read through vertices() so its memory layout does not matter
        base = self.vertices(self.zero_id, np.zeros(len(ARKIT_NAMES), np.float32))
        cols = []
        for k in range(self.n_id):
            a = self.zero_id.copy()
            a[k] = 1.0
            cols.append(self.vertices(a, np.zeros(len(ARKIT_NAMES), np.float32)) - base)
        self._id_dirs = np.stack(cols, axis=-1) if cols else np.zeros((len(base), 3, 0))

    def beta(self, expr52: np.ndarray) -> np.ndarray:
        e = np.asarray(expr52, np.float32)
        out = np.where(self._exp_src >= 0, e[np.clip(self._exp_src, 0, None)], 0.0)
        return out.astype(np.float32)

    def vertices(self, alpha: np.ndarray, expr52: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.vertices(np.asarray(alpha, np.float32), self.beta(expr52)), dtype=np.float64)

    def fit_camera(self, alpha, expr52, landmarks) -> np.ndarray:
        n = self.n_match
        return G.fit_weak_camera(self.vertices(alpha, expr52)[:n], landmarks[:n])

    def fit_identity(self, exprs: np.ndarray, landmarks: np.ndarray, iters: int = 3, ridge: float = 1.0) -> np.ndarray:
        """alpha from tracked frames (exprs (n, 52), landmarks (n, >=468, 2) in any pixel space): alternate the
        per-frame affine cameras and a ridge least-squares of alpha (units: 1 sigma of the model's identity basis)."""
        n = self.n_match
        alpha = self.zero_id.astype(np.float64)
        if self.n_id == 0 or len(exprs) == 0:
            return alpha.astype(np.float32)
        D = self._id_dirs[:n]  # (n, 3, K)
        for _ in range(iters):
            rows, rhs, scale2 = [], [], 0.0
            for e, lm in zip(exprs, landmarks):
                V = self.vertices(alpha, e)[:n]
                P = G.fit_weak_camera(V, lm[:n]).astype(np.float64)
                base = V - np.einsum("vck,k->vc", D, alpha)  # vertices without identity
                rows.append(np.einsum("rc,vck->vrk", P[:, :3], D).reshape(-1, self.n_id))
                rhs.append((lm[:n] - G.project_affine(P, base)).reshape(-1))
                scale2 += np.linalg.det(P[:, :3] @ P[:, :3].T) ** 0.5  # pixels^2 per cm^2
            A, b = np.concatenate(rows), np.concatenate(rhs)
            lam = ridge * scale2  # ridge in the same (pixel) units as the residual
            alpha = np.linalg.solve(A.T @ A + lam * np.eye(self.n_id), A.T @ b)
        return alpha.astype(np.float32)

    def guide(self, alpha, expr52, P, size: int) -> np.ndarray:
        """Lips (0.5) and mouth opening (1) of the face model for this expression, projected with the frame's camera."""
        return G.lip_guide(G.project_affine(P.astype(np.float64), self.vertices(alpha, expr52)), size)

    def mask(self, alpha, expr52, P, size: int, neck: float = 0.12) -> np.ndarray:
        """Eq. 5: project the vertices for this expression with the frame's camera, fill the lower-face contour."""
        xy = G.project_affine(P.astype(np.float64), self.vertices(alpha, expr52))
        return G.lower_face_mask(xy, self.contour, size, neck)
