"""Load a user-supplied Basel Face Model in Deep3DFaceRecon's `BFM_model_front.mat` layout.

The paper (RealTalk, sec. 3.1) uses this model: 35709 vertices, 80 identity and 64 expression dims.
We cannot ship it (the BFM licence forbids redistribution); a user who has it passes its path to
`load_face_model(path)`. Keys read (MATLAB v5 file, as Deep3DFaceRecon's `transferBFM09` writes it):

    meanshape (1, 3V)   idBase (3V, 80)   exBase (3V, 64)   tri (F, 3) 1-based   keypoints (1, 68) 1-based
    point_buf (V, 8) 1-based (optional; the faces around each vertex)

Units are the file's: BFM micrometres / 1e5, i.e. decimetres (FaceModel.units == "dm").
Like Deep3DFaceRecon (`recenter=True`) the mean shape is moved so its centroid is the origin.
Regions come from the 68 keypoints: 48-59 outer lip, 60-67 inner lip, 0-16 jaw contour.
Needs scipy (scipy.io.loadmat, which never unpickles).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from realtalk_bridge.face.face_model import FaceModel, FaceModelError

REQUIRED_KEYS = ("meanshape", "idBase", "exBase", "tri", "keypoints")
OPTIONAL_KEYS = ("point_buf",)
# 68-point (iBUG/Multi-PIE) landmark layout
JAW = list(range(0, 17))
NOSE_MID = 29
OUTER_LIP = list(range(48, 60))
INNER_LIP = list(range(60, 68))


def load_bfm(path: str | os.PathLike, recenter: bool = True) -> FaceModel:
    path = Path(path)
    if not path.is_file():
        raise FaceModelError(f"BFM file not found: {path}")
    try:
        from scipy.io import loadmat
    except ImportError as exc:  # pragma: no cover - scipy is in the train/vision/dev extras
        raise FaceModelError(f"reading {path} needs scipy (pip install scipy)") from exc
    try:
        mat = loadmat(path, variable_names=list(REQUIRED_KEYS + OPTIONAL_KEYS))
    except NotImplementedError as exc:  # MATLAB v7.3 (HDF5)
        raise FaceModelError(f"{path}: MATLAB v7.3 files are not supported; re-save it as v5 ({exc})") from exc
    except Exception as exc:
        raise FaceModelError(f"{path}: not a readable .mat file ({exc})") from exc
    for key in REQUIRED_KEYS:
        if key not in mat:
            raise FaceModelError(f"{path}: missing key {key!r} (expected Deep3DFaceRecon's BFM_model_front.mat "
                                 f"with keys {', '.join(REQUIRED_KEYS)})")

    def numeric(key):
        a = np.asarray(mat[key])
        if a.dtype.kind not in "fiu" or not np.all(np.isfinite(a)):
            raise FaceModelError(f"{path}: key {key!r} must hold finite numbers, got dtype {a.dtype}")
        return a

    mean = numeric("meanshape").astype(np.float32).reshape(-1)
    if mean.size % 3 or mean.size == 0:
        raise FaceModelError(f"{path}: key 'meanshape' must have 3V values, got {mean.size}")
    V = mean.size // 3
    mean = mean.reshape(V, 3)
    if recenter:
        mean = mean - mean.mean(0, keepdims=True)
    bases = {}
    for key in ("idBase", "exBase"):
        b = numeric(key).astype(np.float32)
        if b.ndim != 2 or b.shape[0] != 3 * V:
            raise FaceModelError(f"{path}: key {key!r} must be (3V={3 * V}, K), got {b.shape}")
        bases[key] = b
    tri = numeric("tri").astype(np.int64)
    if tri.ndim != 2 or tri.shape[1] != 3 or tri.min() < 1 or tri.max() > V:
        raise FaceModelError(f"{path}: key 'tri' must be (F, 3) 1-based vertex indices in [1, {V}]")
    kp = numeric("keypoints").astype(np.int64).reshape(-1)
    if kp.size != 68 or kp.min() < 1 or kp.max() > V:
        raise FaceModelError(f"{path}: key 'keypoints' must be 68 1-based vertex indices in [1, {V}]")
    kp = kp - 1
    regions = bfm_regions(mean, kp)
    meta = {"source": str(path), "layout": "Deep3DFaceRecon BFM_model_front.mat", "recentered": recenter}
    if "point_buf" in mat:
        pb = numeric("point_buf").astype(np.int64)
        if pb.ndim != 2 or pb.shape[0] != V:
            raise FaceModelError(f"{path}: key 'point_buf' must be (V={V}, k), got {pb.shape}")
        meta["point_buf_width"] = int(pb.shape[1])
    K_id, K_exp = bases["idBase"].shape[1], bases["exBase"].shape[1]
    return FaceModel(
        mean=mean, id_basis=bases["idBase"], exp_basis=bases["exBase"],
        exp_names=tuple(f"exp{i:02d}" for i in range(K_exp)), id_names=tuple(f"id{i:02d}" for i in range(K_id)),
        triangles=(tri - 1).astype(np.int32), regions=regions, units="dm", name=path.stem, meta=meta,
    )


def bfm_regions(mean: np.ndarray, kp: np.ndarray) -> dict[str, np.ndarray]:
    """Named vertex sets from the 68 keypoints (0-based vertex ids) of a BFM-like mesh."""
    lips = mean[kp[OUTER_LIP]]
    width = np.linalg.norm(mean[kp[54]] - mean[kp[48]])
    # "mouth": every vertex within 0.45 mouth widths of the lip ring's centre, in the frontal plane,
    # and not behind the lips (the same idea as the MediaPipe model's ellipse around the mouth)
    centre = lips.mean(0)
    rel = (mean - centre) / np.array([0.9 * width, 0.6 * width, 1.0])
    near = (rel[:, 0] ** 2 + rel[:, 1] ** 2 < 1.0) & (mean[:, 2] > centre[2] - 0.5 * width)
    mouth = np.union1d(np.nonzero(near)[0], kp[OUTER_LIP + INNER_LIP])
    return {
        "mouth": mouth.astype(np.int32),
        "outer_lip": kp[OUTER_LIP].astype(np.int32),
        "inner_lip": kp[INNER_LIP].astype(np.int32),
        "lower_face_contour": kp[JAW + [NOSE_MID]].astype(np.int32),
        "jaw_contour": kp[JAW].astype(np.int32),
        "keypoints68": kp.astype(np.int32),
    }
