"""Crops, the affine camera, the learnable mask (eq. 5) and the teeth mask, frame-rate resampling."""
import numpy as np
import pytest

from realtalk_bridge.face.arkit import ARKIT_INDEX
from realtalk_bridge.video import geometry as G


def test_affine_camera_fit_recovers_projection():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    P = rng.normal(size=(2, 4))
    x = G.project_affine(P, X)
    assert np.allclose(G.fit_affine_camera(X, x), P, atol=1e-4)


def test_crop_and_paste_back_roundtrip():
    from skimage import data

    img = data.astronaut()
    quad = np.array([256.0, 180.0, 90.0, 10.0, -10.0, 90.0])
    A = G.quad_to_transform(quad, 128)
    face = G.crop(img, A, 128)
    assert face.shape == (128, 128, 3)
    # the crop centre is the quad centre
    assert np.allclose(G.apply_affine(A, quad[None, :2]), [[64, 64]], atol=1e-3)
    back = G.paste(img, face, A)
    inner = np.zeros(img.shape[:2], bool)
    inner[150:210, 226:286] = True
    assert np.abs(back[inner].astype(int) - img[inner]).mean() < 6  # resampled twice, nothing else changed
    far = np.zeros(img.shape[:2], bool)
    far[:40] = True
    assert np.array_equal(back[far], img[far])


def test_quad_smoother_damps_jitter_and_resets_on_cuts():
    s = G.QuadSmoother(alpha=0.3)
    base = np.array([100.0, 100, 50, 0, 0, 50])
    s(base)
    jit = s(base + np.array([4.0, 0, 0, 0, 0, 0]))
    assert 100 < jit[0] < 104
    cut = s(base + np.array([300.0, 0, 0, 0, 0, 0]))
    assert cut[0] == 400


def test_lower_face_mask_follows_the_predicted_jaw():
    from realtalk_bridge.video.facefit import FaceGeometry

    g = FaceGeometry()
    P = np.array([[8.0, 0, 0, 128], [0, -8.0, 0, 120]])
    closed = np.zeros(52, np.float32)
    open_ = closed.copy()
    open_[ARKIT_INDEX["jawOpen"]] = 1.0
    m0 = g.mask(g.zero_id, closed, P, 256)
    m1 = g.mask(g.zero_id, open_, P, 256)
    assert m0.dtype == np.float32 and set(np.unique(m0)) <= {0.0, 1.0}
    painted0, painted1 = (m0 == 0), (m1 == 0)
    assert painted1.sum() > painted0.sum() * 1.02
    # the open jaw reaches further down
    assert np.flatnonzero(painted1.any(1)).max() > np.flatnonzero(painted0.any(1)).max()
    # the eyes stay outside the mask: the upper face is never painted
    assert (m0[:90] == 1).all()
    # the mouth itself (projected inner lip) is painted
    xy = G.project_affine(P, g.vertices(g.zero_id, closed))
    cx, cy = xy[g.model.regions["inner_lip"]].mean(0).round().astype(int)
    assert m0[cy, cx] == 0


def test_teeth_mask_is_the_inner_lip():
    lm = np.zeros((478, 2), np.float32)
    ring = np.array(G.MP_INNER_LIP)
    ang = np.linspace(0, 2 * np.pi, len(ring), endpoint=False)
    lm[ring] = np.stack([32 + 10 * np.cos(ang), 40 + 5 * np.sin(ang)], 1)
    t = G.teeth_mask(lm, 64, dilate=0)
    assert t[40, 32] == 1 and t[10, 10] == 0 and t[40, 50] == 0
    assert abs(t.sum() - np.pi * 10 * 5) < 40


def test_identity_fit_recovers_alpha():
    from realtalk_bridge.video.facefit import FaceGeometry

    g = FaceGeometry()
    rng = np.random.default_rng(1)
    alpha = rng.normal(size=g.n_id).astype(np.float32)
    exprs = rng.uniform(0, 0.6, size=(6, 52)).astype(np.float32)
    lms = []
    for i, e in enumerate(exprs):
        a = 0.1 * i
        R = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0]])
        P = np.concatenate([7.0 * R * [[1], [-1]], [[128.0], [120.0]]], axis=1)  # y flipped: image y points down
        lms.append(G.project_affine(P, g.vertices(alpha, e)))
    est = g.fit_identity(exprs, np.stack(lms), ridge=1e-4)
    # a weak-perspective camera cannot tell a bigger face from a closer one, so compare up to that ambiguity:
    # most components come back, and the fitted face explains the landmarks far better than the mean face
    assert np.corrcoef(est, alpha)[0, 1] > 0.9
    err = lambda a: np.mean([np.abs(G.project_affine(g.fit_camera(a, e, lm), g.vertices(a, e)[:468]) - lm[:468]).mean()
                             for e, lm in zip(exprs, lms)])
    assert err(est) < 0.2 * err(g.zero_id)


def test_matrix_to_pose():
    from realtalk_bridge.face.face_model import euler_to_matrix

    M = np.eye(4)
    M[:3, :3] = euler_to_matrix(np.array([0.1, -0.2, 0.05]))
    M[:3, 3] = [1, 2, -50]
    pose = G.matrix_to_pose(M)
    back = np.eye(4)
    assert pose.shape == (6,) and np.allclose(pose[3:], [1, 2, -50])
    rx, ry, rz = pose[:3]
    Rx = np.array([[1, 0, 0], [0, np.cos(rx), -np.sin(rx)], [0, np.sin(rx), np.cos(rx)]])
    Ry = np.array([[np.cos(ry), 0, np.sin(ry)], [0, 1, 0], [-np.sin(ry), 0, np.cos(ry)]])
    Rz = np.array([[np.cos(rz), -np.sin(rz), 0], [np.sin(rz), np.cos(rz), 0], [0, 0, 1]])
    back[:3, :3] = Rz @ Ry @ Rx
    assert np.allclose(back[:3, :3], M[:3, :3], atol=1e-5)


@pytest.mark.parametrize("src_fps,expect", [(50, [0, 2, 4, 6, 8, 10]), (10, [0, 0, 1, 1, 2, 2])])
def test_read_frames_resamples_to_25_fps(tmp_path, src_fps, expect):
    import cv2

    from realtalk_bridge.video.track import read_frames

    path = tmp_path / f"v{src_fps}.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), src_fps, (32, 32))
    for i in range(20):
        w.write(np.full((32, 32, 3), i * 10, np.uint8))  # the frame number, as brightness
    w.release()
    got = [(k, int(round(rgb.mean() / 10))) for k, _, rgb in read_frames(path, 25)]
    assert [v for _, v in got[:6]] == expect
    assert [k for k, _ in got] == list(range(len(got)))
    assert abs(len(got) - 20 / src_fps * 25) <= 1.5


def test_weak_camera_fit_is_a_scaled_rotation():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 3))
    c, s = np.cos(0.3), np.sin(0.3)
    R = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    P = np.concatenate([5 * R[:2], [[10.0], [20.0]]], axis=1)
    x = G.project_affine(P, X) + rng.normal(scale=0.01, size=(100, 2))
    est = G.fit_weak_camera(X, x)
    assert np.allclose(est, P, atol=0.02)
    A = est[:, :3]
    assert np.allclose(A @ A.T, 25 * np.eye(2), atol=0.05)
