"""Face crops, the affine camera and the renderer's masks: pure numpy (+ cv2 for polygon fill and warps).

Conventions
- Landmarks are MediaPipe FaceLandmarker's 478 points; the first 468 share the canonical face mesh's vertex order,
  which is also the vertex order of the shipped "arkit" face model, so model vertices and landmarks correspond 1:1.
- A crop transform `A` (2x3) maps full-frame pixel coordinates to crop pixel coordinates; `cv2.invertAffineTransform`
  pastes back.
- The camera `P` (2x4) is a scaled-orthographic (weak-perspective) projection of face-model vertices (model units, cm) straight
  into crop pixels; it carries the head's rotation, translation and scale of that frame (tau_t of eq. 5).
"""
from __future__ import annotations

import numpy as np

# MediaPipe face-mesh index sets, used when a face model offers no region of that name (and for the teeth mask,
# which is drawn from tracked landmarks). Ordered polygons.
MP_FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152,
                148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
# lower face: jaw line from ear to ear under the chin, closed across the cheeks just under the eyes and nose bridge
MP_LOWER_FACE = (234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288, 361,
                 323, 454, 357, 350, 277, 6, 47, 121, 128)
MP_INNER_LIP = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95)
MP_OUTER_LIP = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146)
MP_LEFT_EYE = (33, 133, 159, 145)  # subject's right eye in the image's left half
MP_RIGHT_EYE = (362, 263, 386, 374)
MP_MOUTH_CORNERS = (61, 291)


# --- crop alignment -----------------------------------------------------------------------------------------------

def align_quad(lm: np.ndarray) -> np.ndarray:
    """FFHQ-style crop square from landmarks (n>=468, 2) in frame pixels -> (center (2,), x-axis (2,), y-axis (2,)).

    The square is 2*|x| wide; it holds the whole head with some neck, so the lower-face mask has room below the chin.
    """
    eye_l = lm[list(MP_LEFT_EYE)].mean(0)
    eye_r = lm[list(MP_RIGHT_EYE)].mean(0)
    mouth = lm[list(MP_MOUTH_CORNERS)].mean(0)
    eye_avg = (eye_l + eye_r) / 2
    eye_to_eye = eye_r - eye_l
    eye_to_mouth = mouth - eye_avg
    x = eye_to_eye - np.array([-eye_to_mouth[1], eye_to_mouth[0]])
    x = x / (np.hypot(*x) + 1e-8)
    x = x * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.array([-x[1], x[0]])
    center = eye_avg + eye_to_mouth * 0.1
    return np.concatenate([center, x, y]).astype(np.float64)


def quad_to_transform(quad: np.ndarray, size: int) -> np.ndarray:
    """(6,) quad -> 2x3 affine mapping frame pixels into a size x size crop."""
    c, x, y = quad[:2], quad[2:4], quad[4:6]
    src = np.stack([c - x - y, c + x - y, c - x + y]).astype(np.float32)  # top-left, top-right, bottom-left
    dst = np.array([[0, 0], [size, 0], [0, size]], dtype=np.float32)
    import cv2

    return cv2.getAffineTransform(src, dst).astype(np.float32)


class QuadSmoother:
    """Exponential smoothing of the crop square over time, so crops do not jitter with the tracker noise."""

    def __init__(self, alpha: float = 0.35):
        self.alpha = alpha
        self.state: np.ndarray | None = None

    def __call__(self, quad: np.ndarray) -> np.ndarray:
        if self.state is None:
            self.state = quad.copy()
        else:
            # a large jump (cut, new face) resets instead of sliding across the frame
            scale = np.hypot(*self.state[2:4])
            if np.hypot(*(quad[:2] - self.state[:2])) > 0.5 * scale:
                self.state = quad.copy()
            else:
                self.state = self.state + self.alpha * (quad - self.state)
        return self.state.copy()


def apply_affine(A: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts[..., :2] @ A[:, :2].T + A[:, 2]


def crop(frame: np.ndarray, A: np.ndarray, size: int) -> np.ndarray:
    import cv2

    return cv2.warpAffine(frame, A, (size, size), flags=cv2.INTER_AREA if A[0, 0] < 1 else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT)


def paste(frame: np.ndarray, face: np.ndarray, A: np.ndarray, region: np.ndarray | None = None,
          feather: float = 0.03) -> np.ndarray:
    """Paste a crop back into the full frame. `region` (crop-sized, 1 = painted) limits the paste to the pixels the
    renderer painted, so the rest of the frame keeps its full resolution; its edge is feathered (no seam)."""
    import cv2

    h, w = frame.shape[:2]
    size = face.shape[0]
    Ainv = cv2.invertAffineTransform(A)
    warped = cv2.warpAffine(face, Ainv, (w, h), flags=cv2.INTER_LINEAR)
    m = max(1, int(size * feather))
    if region is None:
        alpha = np.zeros((size, size), np.float32)
        alpha[2 * m:-2 * m, 2 * m:-2 * m] = 1.0
    else:
        alpha = cv2.dilate(region.astype(np.float32), np.ones((2 * m + 1, 2 * m + 1), np.uint8))
    alpha = cv2.GaussianBlur(alpha, (0, 0), m)
    alpha = cv2.warpAffine(alpha, Ainv, (w, h), flags=cv2.INTER_LINEAR)[..., None]
    return (frame * (1 - alpha) + warped * alpha).round().clip(0, 255).astype(np.uint8)


# --- affine camera ----------------------------------------------------------------------------------------------

def fit_affine_camera(X: np.ndarray, x: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Least-squares 2x4 P with x ~ P @ [X, 1]: X (n, 3) model vertices, x (n, 2) image points."""
    Xh = np.concatenate([X, np.ones((len(X), 1))], axis=1).astype(np.float64)
    if weights is not None:
        w = np.sqrt(weights)[:, None]
        Xh, x = Xh * w, x * w
    P, *_ = np.linalg.lstsq(Xh, x.astype(np.float64), rcond=None)
    return P.T.astype(np.float32)


def fit_weak_camera(X: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Scaled-orthographic 2x4 P = [s * R[:2], t]: the affine fit with its 2x3 part projected onto the nearest
    scaled rotation. Unlike a free affine camera it cannot stretch the face, so face width/height stay identity."""
    X = np.asarray(X, np.float64)
    x = np.asarray(x, np.float64)
    mX, mx = X.mean(0), x.mean(0)
    M, *_ = np.linalg.lstsq(X - mX, x - mx, rcond=None)
    U, S, Vt = np.linalg.svd(M.T, full_matrices=False)  # M.T: (2, 3)
    R = S.mean() * U @ Vt
    return np.concatenate([R, (mx - R @ mX)[:, None]], axis=1).astype(np.float32)


def project_affine(P: np.ndarray, X: np.ndarray) -> np.ndarray:
    return X @ P[:, :3].T + P[:, 3]


# --- masks -------------------------------------------------------------------------------------------------------

def fill_polygon(points: np.ndarray, size: int, sweep: np.ndarray | None = None, steps: int = 6) -> np.ndarray:
    """uint8 (size, size) with 1 inside the polygon; `sweep` (2,) also fills the polygon slid along that vector
    (the neck below the jaw line)."""
    import cv2

    out = np.zeros((size, size), np.uint8)
    offsets = [np.zeros(2)] if sweep is None else [sweep * k / steps for k in range(steps + 1)]
    for off in offsets:
        pts = np.round((points + off) * 4).astype(np.int32)  # 2 bits of sub-pixel precision
        cv2.fillPoly(out, [pts], 1, lineType=cv2.LINE_8, shift=2)
    return out


def lower_face_mask(xy: np.ndarray, contour: tuple[int, ...] | np.ndarray, size: int, neck: float = 0.12) -> np.ndarray:
    """Eq. 5: M = C(V_xy). xy: projected vertices (V, 2) in crop pixels. Returns float32 (size, size), 1 = keep the
    source, 0 = to be painted. `neck` extends the jaw line downwards by that fraction of the crop so the network may
    move the chin (a wider-open jaw) without a double chin."""
    pts = xy[np.asarray(contour)]
    inside = fill_polygon(pts, size, sweep=np.array([0.0, neck * size]))
    return (1 - inside).astype(np.float32)


def lip_guide(xy: np.ndarray, size: int) -> np.ndarray:
    """The renderer's spatial expression cue: float32 (size, size), 0.5 on the lips and 1 in the mouth opening of the
    projected face-model vertices `xy` (MediaPipe order) for the expression to be rendered, 0 elsewhere.
    A global coefficient vector (AdaIN) says *how much* the jaw opens; this says *where* the lips go."""
    import cv2

    out = np.zeros((size, size), np.float32)
    for idx, value in ((MP_OUTER_LIP, 0.5), (MP_INNER_LIP, 1.0)):
        pts = np.round(xy[list(idx)] * 16).astype(np.int32)  # 4 bits of sub-pixel precision
        cv2.fillPoly(out, [pts], value, lineType=cv2.LINE_AA, shift=4)
    return out


def teeth_mask(landmarks: np.ndarray, size: int, dilate: int = 2) -> np.ndarray:
    """M' of eq. 9: the inner-lip polygon of the tracked landmarks (crop pixels), slightly dilated. float32 1 = teeth."""
    import cv2

    m = fill_polygon(landmarks[list(MP_INNER_LIP)], size)
    if dilate:
        m = cv2.dilate(m, np.ones((2 * dilate + 1, 2 * dilate + 1), np.uint8))
    return m.astype(np.float32)


# --- head pose -------------------------------------------------------------------------------------------------

def matrix_to_pose(M: np.ndarray) -> np.ndarray:
    """4x4 rigid transform -> (rx, ry, rz, tx, ty, tz); R = Rz @ Ry @ Rx (x first), angles in radians."""
    R = np.asarray(M, dtype=np.float64)[:3, :3]
    # remove any scale MediaPipe leaves in the matrix
    R = R / np.cbrt(max(np.linalg.det(R), 1e-12))
    ry = np.arcsin(-np.clip(R[2, 0], -1, 1))
    rx = np.arctan2(R[2, 1], R[2, 2])
    rz = np.arctan2(R[1, 0], R[0, 0])
    t = np.asarray(M, dtype=np.float64)[:3, 3]
    return np.array([rx, ry, rz, *t], dtype=np.float32)
