"""Loading a user's Basel Face Model (Deep3DFaceRecon `BFM_model_front.mat` layout) from a synthetic file
of the same layout, written here with scipy.io."""
from __future__ import annotations

import numpy as np
import pytest
from matplotlib.path import Path as MplPath

scipy_io = pytest.importorskip("scipy.io", reason="the BFM loader needs scipy")

from realtalk_bridge.face.bfm import REQUIRED_KEYS, load_bfm  # noqa: E402
from realtalk_bridge.face.face_model import FaceModelError, load_face_model, project  # noqa: E402


def ellipsoid_z(x, y):
    return 0.6 * np.sqrt(np.clip(1 - (x / 0.8) ** 2 - (y / 1.0) ** 2, 0, None))


def template68():
    """A face-like 68-point layout (decimetres, y up): jaw, brows, nose, eyes, outer and inner lips."""
    t = np.linspace(np.pi, 2 * np.pi, 17)
    jaw = np.stack([0.7 * np.cos(t), 0.1 + 0.95 * np.sin(t)], 1)
    brows = np.stack([np.r_[np.linspace(-0.55, -0.1, 5), np.linspace(0.1, 0.55, 5)], np.full(10, 0.45)], 1)
    nose = np.r_[np.stack([np.zeros(4), np.linspace(0.3, -0.05, 4)], 1),
                 np.stack([np.linspace(-0.15, 0.15, 5), np.full(5, -0.12)], 1)]
    a = np.linspace(np.pi, -np.pi, 6, endpoint=False)
    eyes = np.r_[np.stack([-0.3 + 0.1 * np.cos(a), 0.25 + 0.05 * np.sin(a)], 1),
                 np.stack([0.3 + 0.1 * np.cos(a), 0.25 + 0.05 * np.sin(a)], 1)]
    k = np.arange(12)
    outer = np.stack([0.25 * np.cos(np.pi - k * np.pi / 6), -0.45 + 0.12 * np.sin(np.pi - k * np.pi / 6)], 1)
    k = np.arange(8)
    inner = np.stack([0.18 * np.cos(np.pi - k * np.pi / 4), -0.45 + 0.04 * np.sin(np.pi - k * np.pi / 4)], 1)
    pts = np.r_[jaw, brows, nose, eyes, outer, inner]
    assert pts.shape == (68, 2)
    return pts


def synthetic_bfm(seed=0, offset=(0.1, -0.2, 3.0)):
    """Mesh: a grid on the front of an ellipsoid plus the 68 keypoint vertices; bases random."""
    gx, gy = np.meshgrid(np.linspace(-0.75, 0.75, 21), np.linspace(-0.95, 0.95, 25))
    grid = np.stack([gx.ravel(), gy.ravel()], 1)
    xy = np.r_[grid, template68()]
    verts = np.c_[xy, ellipsoid_z(xy[:, 0], xy[:, 1])] + np.asarray(offset)
    V = len(verts)
    nx, ny = 21, 25
    tri = []
    for j in range(ny - 1):
        for i in range(nx - 1):
            a = j * nx + i
            tri += [[a, a + 1, a + nx + 1], [a, a + nx + 1, a + nx]]
    tri = np.array(tri) + 1
    rng = np.random.default_rng(seed)
    point_buf = np.ones((V, 8), np.int64)
    return {
        "meanshape": verts.reshape(1, -1),
        "meantex": rng.uniform(0, 255, (1, 3 * V)),
        "idBase": rng.normal(0, 0.01, (3 * V, 80)),
        "exBase": rng.normal(0, 0.005, (3 * V, 64)),
        "texBase": rng.normal(0, 1, (3 * V, 80)),
        "tri": tri.astype(np.float64),  # MATLAB stores doubles
        "point_buf": point_buf.astype(np.float64),
        "keypoints": (np.arange(len(grid), V) + 1).reshape(1, 68).astype(np.float64),
        "frontmask2_idx": np.arange(1, V + 1).reshape(-1, 1).astype(np.float64),
        "skinmask": np.ones((1, V)),
        "tri_mask2": tri.astype(np.float64),
    }


@pytest.fixture()
def bfm_file(tmp_path):
    data = synthetic_bfm()
    path = tmp_path / "BFM_model_front.mat"
    scipy_io.savemat(path, data)
    return path, data


def test_loads_the_deep3dfacerecon_layout(bfm_file):
    path, data = bfm_file
    m = load_face_model(path)  # dispatches on .mat
    V = data["meanshape"].size // 3
    assert m.mean.shape == (V, 3) and m.n_id == 80 and m.n_exp == 64
    assert m.units == "dm" and m.cm_per_unit == 10.0
    np.testing.assert_allclose(m.mean.mean(0), 0, atol=1e-6)  # recentred like Deep3DFaceRecon
    np.testing.assert_allclose(m.mean, data["meanshape"].reshape(V, 3) - data["meanshape"].reshape(V, 3).mean(0),
                               atol=1e-6)
    np.testing.assert_allclose(m.exp_basis, data["exBase"].astype(np.float32))
    np.testing.assert_array_equal(m.triangles, data["tri"].astype(int) - 1)
    kp = data["keypoints"].astype(int).ravel() - 1
    np.testing.assert_array_equal(m.region("outer_lip"), kp[48:60])
    np.testing.assert_array_equal(m.region("inner_lip"), kp[60:68])
    np.testing.assert_array_equal(m.region("lower_face_contour")[:17], kp[:17])
    # vertices follow the same vertex-major layout as Deep3DFaceRecon (reshape(-1, 3))
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=80), rng.normal(size=64)
    manual = (data["meanshape"].ravel() + data["idBase"] @ a + data["exBase"] @ b).reshape(-1, 3)
    manual -= data["meanshape"].reshape(-1, 3).mean(0)
    np.testing.assert_allclose(m.vertices(a, b), manual, atol=1e-4)
    assert load_bfm(path, recenter=False).mean[0, 2] == pytest.approx(data["meanshape"][0, 2], abs=1e-6)


def test_regions_from_keypoints_are_usable(bfm_file):
    path, data = bfm_file
    m = load_bfm(path)
    kp = m.region("keypoints68")
    mouth = set(m.region("mouth").tolist())
    assert set(kp[48:68].tolist()) <= mouth
    assert not mouth & set(kp[36:48].tolist())  # no eye points
    v = m.vertices(pose=[0, 0, 0, 0, 0, -5.0])  # 50 cm in front of the camera
    uv = project(v, 1000.0, (128, 128))
    lower = MplPath(uv[m.region("lower_face_contour")])
    assert lower.contains_points(uv[kp[48:68]]).all()
    assert not lower.contains_points(uv[kp[36:48]]).any()


@pytest.mark.parametrize("key", REQUIRED_KEYS)
def test_missing_key_is_named(tmp_path, key):
    data = synthetic_bfm()
    del data[key]
    path = tmp_path / "partial_bfm.mat"
    scipy_io.savemat(path, data)
    with pytest.raises(FaceModelError) as err:
        load_face_model(path)
    assert "partial_bfm.mat" in str(err.value) and repr(key) in str(err.value)


@pytest.mark.parametrize("key,value", [
    ("idBase", np.zeros((10, 80))),
    ("exBase", np.zeros(5)),
    ("keypoints", np.arange(1, 60).reshape(1, -1).astype(float)),
    ("tri", np.zeros((4, 3))),          # 0-based: not the layout
    ("meanshape", np.zeros((1, 7))),
])
def test_malformed_key_is_named(tmp_path, key, value):
    data = synthetic_bfm()
    data[key] = value
    path = tmp_path / "bad_bfm.mat"
    scipy_io.savemat(path, data)
    with pytest.raises(FaceModelError, match=f"bad_bfm.mat.*'{key}'"):
        load_bfm(path)


def test_missing_and_garbage_files(tmp_path):
    with pytest.raises(FaceModelError, match="not found.*nothere.mat"):
        load_face_model(tmp_path / "nothere.mat")
    junk = tmp_path / "junk.mat"
    junk.write_bytes(b"\x00\x01 definitely not MATLAB" * 20)
    with pytest.raises(FaceModelError, match="junk.mat"):
        load_face_model(junk)
