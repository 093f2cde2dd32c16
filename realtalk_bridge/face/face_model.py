"""Linear 3D morphable face models (3DMMs): shape = mean + id_basis @ alpha + exp_basis @ beta, then pose.

Conventions (shared by every model this module loads):
- Vertex-major flattening: a (V*3,) vector is x0, y0, z0, x1, ... (Deep3DFaceRecon's BFM layout too).
- Model frame: x to the subject's left, y up, z out of the face towards the viewer (right-handed).
- Pose: (rx, ry, rz, tx, ty, tz); radians and model units. R = Rz(rz) @ Ry(ry) @ Rx(rx) (rotate about x,
  then y, then z, fixed axes; Deep3DFaceRecon's order), applied as v' = R v + t.
- Pinhole camera at the origin looking down -z (OpenGL style), image y pointing down:
  u = cx + f * x / (-z), v = cy - f * y / (-z). So a face in front of the camera has tz < 0.
- Units: the shipped "arkit" model is in centimetres (MediaPipe's canonical mesh); a BFM from
  Deep3DFaceRecon is in its own units (BFM micrometres / 1e5, i.e. 1 unit = 10 cm). `FaceModel.units` says which.

Runtime code: numpy only (scipy only for the BFM `.mat`, see bfm.py).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from realtalk_bridge.assets import MODELS_ENV, models_dir  # noqa: F401  (re-exported)
from realtalk_bridge.face.arkit import ARKIT_NAMES

SHIPPED = {"arkit": "arkit_mediapipe.npz"}
# Names other pieces rely on (docs/ARCHITECTURE.md, "Face model").
REQUIRED_REGIONS = ("mouth", "outer_lip", "inner_lip", "lower_face_contour")
UNIT_CM = {"mm": 0.1, "cm": 1.0, "dm": 10.0, "m": 100.0}


class FaceModelError(ValueError):
    """A face-model file is missing, malformed, or an argument has the wrong shape."""


@dataclass
class FaceModel:
    mean: np.ndarray            # (V, 3) float32
    id_basis: np.ndarray        # (V*3, K_id) float32; one unit of alpha = about one standard deviation
    exp_basis: np.ndarray       # (V*3, K_exp) float32; ARKit model: one unit of beta = the full blendshape
    exp_names: tuple[str, ...]  # (K_exp,)
    triangles: np.ndarray       # (F, 3) int32, counter-clockwise seen from the front
    regions: dict[str, np.ndarray] = field(default_factory=dict)  # name -> int32 vertex indices
    id_names: tuple[str, ...] = ()
    units: str = "cm"
    name: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.mean = np.asarray(self.mean, np.float32)
        self.id_basis = np.asarray(self.id_basis, np.float32)
        self.exp_basis = np.asarray(self.exp_basis, np.float32)
        self.triangles = np.asarray(self.triangles, np.int32)
        self.exp_names = tuple(str(n) for n in self.exp_names)
        self.id_names = tuple(str(n) for n in self.id_names)
        self.regions = {k: np.asarray(v, np.int32) for k, v in self.regions.items()}
        V = self.mean.shape[0] if self.mean.ndim == 2 else -1
        if self.mean.ndim != 2 or self.mean.shape[1] != 3:
            raise FaceModelError(f"mean must be (V, 3), got {self.mean.shape}")
        for key, basis in (("id_basis", self.id_basis), ("exp_basis", self.exp_basis)):
            if basis.ndim != 2 or basis.shape[0] != V * 3:
                raise FaceModelError(f"{key} must be (V*3={V * 3}, K), got {basis.shape}")
        if len(self.exp_names) != self.exp_basis.shape[1]:
            raise FaceModelError(f"{len(self.exp_names)} exp_names for {self.exp_basis.shape[1]} expression columns")
        if self.id_names and len(self.id_names) != self.id_basis.shape[1]:
            raise FaceModelError(f"{len(self.id_names)} id_names for {self.id_basis.shape[1]} identity columns")
        if self.triangles.ndim != 2 or self.triangles.shape[1] != 3:
            raise FaceModelError(f"triangles must be (F, 3), got {self.triangles.shape}")
        if self.triangles.size and (self.triangles.min() < 0 or self.triangles.max() >= V):
            raise FaceModelError("triangle index out of range")
        for k, idx in self.regions.items():
            if idx.ndim != 1 or (idx.size and (idx.min() < 0 or idx.max() >= V)):
                raise FaceModelError(f"region {k!r} must be 1-D vertex indices in [0, {V})")

    @property
    def cm_per_unit(self) -> float:
        """How many centimetres one model unit is (1 for the shipped model, 10 for Deep3DFaceRecon's BFM)."""
        try:
            return UNIT_CM[self.units]
        except KeyError:
            raise FaceModelError(f"unknown units {self.units!r}; known: {sorted(UNIT_CM)}") from None

    @property
    def n_vertices(self) -> int:
        return self.mean.shape[0]

    @property
    def n_id(self) -> int:
        return self.id_basis.shape[1]

    @property
    def n_exp(self) -> int:
        return self.exp_basis.shape[1]

    def exp_index(self, name: str) -> int:
        try:
            return self.exp_names.index(name)
        except ValueError:
            raise KeyError(f"{self.name or 'face model'} has no expression {name!r}") from None

    def region(self, name: str) -> np.ndarray:
        if name not in self.regions:
            raise KeyError(f"{self.name or 'face model'} has no region {name!r}; it has {sorted(self.regions)}")
        return self.regions[name]

    def region_rows(self, name: str) -> np.ndarray:
        """Rows of id_basis / exp_basis (and of a flattened (V*3,) shape) for the vertices of a region."""
        idx = self.region(name).astype(np.int64)
        return (idx[:, None] * 3 + np.arange(3)).reshape(-1)

    def vertices(self, alpha=None, beta=None, pose=None) -> np.ndarray:
        """(..., V, 3) vertices for identity alpha (..., K_id), expression beta (..., K_exp), pose (..., 6).

        Any argument may be None (zeros / no pose). Leading dimensions broadcast.
        """
        return shape_vertices(self.mean, self.id_basis, self.exp_basis, alpha, beta, pose)

    def project(self, verts, focal, center) -> np.ndarray:
        return project(verts, focal, center)

    def project_weak(self, verts, scale, center) -> np.ndarray:
        return project_weak(verts, scale, center)

    def save(self, path: str | os.PathLike) -> Path:
        return save_face_model(self, path)


# ---- the math: pure functions --------------------------------------------------------------------

def _coeffs(x, k: int, what: str) -> np.ndarray | None:
    if x is None:
        return None
    x = np.asarray(x, np.float32)
    if x.ndim == 0 or x.shape[-1] != k:
        raise FaceModelError(f"{what} must have last dimension {k}, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise FaceModelError(f"{what} has non-finite values")
    return x


def shape_vertices(mean, id_basis, exp_basis, alpha=None, beta=None, pose=None) -> np.ndarray:
    V = mean.shape[0]
    alpha = _coeffs(alpha, id_basis.shape[1], "alpha")
    beta = _coeffs(beta, exp_basis.shape[1], "beta")
    pose = _coeffs(pose, 6, "pose")
    flat = mean.reshape(-1).astype(np.float32)
    if alpha is not None:
        flat = flat + alpha @ id_basis.T
    if beta is not None:
        flat = flat + beta @ exp_basis.T
    verts = flat.reshape(flat.shape[:-1] + (V, 3))
    if pose is not None:
        verts = apply_pose(verts, pose)
    return verts


def euler_to_matrix(angles) -> np.ndarray:
    """(..., 3) radians (rx, ry, rz) -> (..., 3, 3) rotation R = Rz @ Ry @ Rx."""
    a = np.asarray(angles, np.float64)
    cx, cy, cz = np.cos(a[..., 0]), np.cos(a[..., 1]), np.cos(a[..., 2])
    sx, sy, sz = np.sin(a[..., 0]), np.sin(a[..., 1]), np.sin(a[..., 2])
    R = np.empty(a.shape[:-1] + (3, 3))
    R[..., 0, 0] = cz * cy
    R[..., 0, 1] = cz * sy * sx - sz * cx
    R[..., 0, 2] = cz * sy * cx + sz * sx
    R[..., 1, 0] = sz * cy
    R[..., 1, 1] = sz * sy * sx + cz * cx
    R[..., 1, 2] = sz * sy * cx - cz * sx
    R[..., 2, 0] = -sy
    R[..., 2, 1] = cy * sx
    R[..., 2, 2] = cy * cx
    return R


def matrix_to_euler(R) -> np.ndarray:
    """Inverse of euler_to_matrix for |ry| < pi/2: (..., 3, 3) -> (..., 3)."""
    R = np.asarray(R, np.float64)
    ry = -np.arcsin(np.clip(R[..., 2, 0], -1.0, 1.0))
    rx = np.arctan2(R[..., 2, 1], R[..., 2, 2])
    rz = np.arctan2(R[..., 1, 0], R[..., 0, 0])
    return np.stack([rx, ry, rz], -1)


def apply_pose(verts, pose) -> np.ndarray:
    """verts (..., V, 3), pose (..., 6) -> R v + t."""
    pose = np.asarray(pose, np.float32)
    R = euler_to_matrix(pose[..., :3]).astype(np.float32)
    return np.einsum("...ij,...vj->...vi", R, verts) + pose[..., None, 3:]


def project(verts, focal, center) -> np.ndarray:
    """Pinhole projection (see module docstring) of (..., V, 3) to (..., V, 2) pixels.

    focal: pixels, a scalar, (fx, fy) or (..., 2); center: (cx, cy) or (..., 2).
    Raises if a vertex is not in front of the camera.
    """
    verts = np.asarray(verts, np.float32)
    f = np.broadcast_to(np.asarray(focal, np.float32), (2,)) if np.ndim(focal) <= 1 else np.asarray(focal)
    c = np.asarray(center, np.float32)
    depth = -verts[..., 2]
    if np.any(depth <= 0):
        raise FaceModelError("vertices behind the camera (need z < 0: the camera looks down -z; use tz < 0)")
    u = c[..., 0, None] + f[..., 0, None] * verts[..., 0] / depth
    v = c[..., 1, None] - f[..., 1, None] * verts[..., 1] / depth
    return np.stack([u, v], -1)


def project_weak(verts, scale, center) -> np.ndarray:
    """Weak perspective (scaled orthographic): u = cx + s x, v = cy - s y (image y down)."""
    verts = np.asarray(verts, np.float32)
    s = np.asarray(scale, np.float32)
    c = np.asarray(center, np.float32)
    s = s[..., None] if s.ndim else s
    u = c[..., 0, None] + s * verts[..., 0]
    v = c[..., 1, None] - s * verts[..., 1]
    return np.stack([u, v], -1)


def vertex_normals(verts, triangles) -> np.ndarray:
    """Area-weighted unit normals (V, 3) of one mesh."""
    verts = np.asarray(verts, np.float64)
    a, b, c = (verts[triangles[:, i]] for i in range(3))
    fn = np.cross(b - a, c - a)
    n = np.zeros_like(verts)
    for i in range(3):
        np.add.at(n, triangles[:, i], fn)
    return (n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)).astype(np.float32)


# ---- I/O at the edges -----------------------------------------------------------------------------

def save_face_model(model: FaceModel, path: str | os.PathLike) -> Path:
    """Write the `.npz` layout `load_face_model` reads (no pickled objects anywhere)."""
    path = Path(path)
    arrays = {
        "mean": model.mean.astype(np.float32),
        "id_basis": model.id_basis.astype(np.float32),
        "exp_basis": model.exp_basis.astype(np.float32),
        "exp_names": np.array(model.exp_names, dtype=np.str_),
        "id_names": np.array(model.id_names, dtype=np.str_),
        "triangles": model.triangles.astype(np.int32),
        "units": np.array(model.units),
        "name": np.array(model.name),
        "meta": np.array(json.dumps(model.meta, sort_keys=True)),
    }
    for k, v in model.regions.items():
        arrays["region_" + k] = v.astype(np.int32)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:  # a file handle keeps numpy from appending ".npz" to other suffixes
        np.savez_compressed(fh, **arrays)
    return path


def _load_npz(path: Path) -> FaceModel:
    try:
        z = np.load(path, allow_pickle=False)
    except Exception as exc:  # zip/format errors come in many types
        raise FaceModelError(f"{path}: not a readable face-model .npz ({exc})") from exc
    with z:
        for key in ("mean", "id_basis", "exp_basis", "exp_names", "triangles"):
            if key not in z.files:
                raise FaceModelError(f"{path}: missing key {key!r}")
        try:
            return FaceModel(
                mean=z["mean"], id_basis=z["id_basis"], exp_basis=z["exp_basis"],
                exp_names=tuple(z["exp_names"].tolist()),
                id_names=tuple(z["id_names"].tolist()) if "id_names" in z.files else (),
                triangles=z["triangles"],
                regions={k[len("region_"):]: z[k] for k in z.files if k.startswith("region_")},
                units=str(z["units"]) if "units" in z.files else "",
                name=str(z["name"]) if "name" in z.files else path.stem,
                meta=json.loads(str(z["meta"])) if "meta" in z.files else {},
            )
        except FaceModelError as exc:
            raise FaceModelError(f"{path}: {exc}") from exc
        except ValueError as exc:
            raise FaceModelError(f"{path}: malformed ({exc})") from exc


def load_face_model(name_or_path: str | os.PathLike = "arkit") -> FaceModel:
    """`"arkit"`: the shipped MediaPipe-mesh model with the ARKit-52 basis (models/face/).
    A path: a `.npz` written by `save_face_model` / `face fit-basis`, or a Basel Face Model
    `BFM_model_front.mat` in Deep3DFaceRecon's layout (needs scipy)."""
    if isinstance(name_or_path, str) and name_or_path in SHIPPED:
        path = models_dir() / "face" / SHIPPED[name_or_path]
        if not path.is_file():
            raise FaceModelError(f"shipped face model {name_or_path!r} not found at {path} "
                                 f"(set {MODELS_ENV} to the folder holding face/)")
        model = _load_npz(path)
        if name_or_path == "arkit" and model.exp_names != ARKIT_NAMES:
            raise FaceModelError(f"{path}: expression names are not the ARKit-52 order")
        return model
    path = Path(name_or_path)
    if not path.is_file():
        raise FaceModelError(f"face model file not found: {path}")
    if path.suffix.lower() == ".mat":
        from realtalk_bridge.face.bfm import load_bfm
        return load_bfm(path)
    return _load_npz(path)


def write_obj(path: str | os.PathLike, verts, triangles, uv=None) -> Path:
    """Wavefront OBJ (1-based faces), for a quick look in Blender or any viewer."""
    path = Path(path)
    verts = np.asarray(verts, np.float64)
    if verts.ndim != 2 or verts.shape[1] != 3:
        raise FaceModelError(f"write_obj needs (V, 3) vertices, got {verts.shape}")
    tri = np.asarray(triangles, np.int64) + 1
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in verts]
    if uv is not None:
        lines += [f"vt {u:.6f} {v:.6f}" for u, v in np.asarray(uv, np.float64)]
        lines += [f"f {a}/{a} {b}/{b} {c}/{c}" for a, b, c in tri]
    else:
        lines += [f"f {a} {b} {c}" for a, b, c in tri]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# realtalk-bridge face model\n" + "\n".join(lines) + "\n")
    return path
