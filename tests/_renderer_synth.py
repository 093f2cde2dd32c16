"""Test helpers for the renderer: a synthetic talking face drawn from the shipped face model, written as a prepared
dataset (the same layout `realtalk-bridge prepare` writes), and small real media (portrait image, speech)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from realtalk_bridge.face.arkit import ARKIT_INDEX, ARKIT_NAMES

REPO = Path(__file__).resolve().parents[1]


def _shared() -> Path:
    """REALTALK_SHARED, else ../shared beside the checkout (or beside its parent, for git worktrees)."""
    if os.environ.get("REALTALK_SHARED"):
        return Path(os.environ["REALTALK_SHARED"])
    for cand in (REPO / ".." / "shared", REPO / ".." / ".." / "shared"):
        if cand.is_dir():
            return cand
    return REPO / ".." / "shared"


SHARED = _shared()
SAMPLE_CLIP = SHARED / "data" / "talking-face-sample.mp4"


def draw_face(model, alpha, expr, P, size: int) -> np.ndarray:
    """Flat-shaded face-model mesh (painter's order) over a grey background, the mouth cavity dark."""
    import cv2

    from realtalk_bridge.video import geometry as G

    beta = np.zeros(model.exp_basis.shape[1], np.float32)
    for i, n in enumerate(model.exp_names):
        if n in ARKIT_INDEX:
            beta[i] = expr[ARKIT_INDEX[n]]
    V = np.asarray(model.vertices(alpha, beta), np.float64)
    xy = G.project_affine(P, V)
    img = np.full((size, size, 3), 90, np.uint8)
    # neck and shoulders, so the mask's neck sweep covers real content
    cv2.rectangle(img, (int(size * 0.35), int(size * 0.6)), (int(size * 0.65), size), (150, 110, 90), -1)
    tri = np.asarray(model.triangles)
    depth = V[tri, 2].mean(1)
    for t in tri[np.argsort(depth)]:
        shade = 0.75 + 0.25 * np.clip(V[t, 2].mean() / 8.0, -1, 1)
        cv2.fillPoly(img, [np.round(xy[t] * 4).astype(np.int32)], tuple(int(v * shade) for v in (225, 180, 150)),
                     shift=2)
    poly = lambda name: [np.round(xy[model.regions[name]] * 4).astype(np.int32)]
    cv2.fillPoly(img, poly("outer_lip"), (190, 90, 100), shift=2)
    cv2.fillPoly(img, poly("inner_lip"), (50, 10, 20), shift=2)  # the mouth cavity
    for eye in ("left_eye", "right_eye"):
        if eye in model.regions:
            cv2.fillPoly(img, poly(eye), (40, 40, 60), shift=2)
    return img


def make_dataset(root: Path, n_frames: int = 24, size: int = 64, seed: int = 0) -> Path:
    """A prepared dataset with one synthetic clip: the jaw opens and closes, the head turns slightly."""
    from realtalk_bridge.face.face_model import load_face_model
    from realtalk_bridge.video import geometry as G

    model = load_face_model("arkit")
    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / "clips").mkdir(parents=True, exist_ok=True)
    (root / "frames" / "synth").mkdir(parents=True, exist_ok=True)
    alpha = (rng.normal(size=model.id_basis.shape[1]) * 0.5).astype(np.float32)
    k = np.arange(n_frames)
    expr = np.zeros((n_frames, len(ARKIT_NAMES)), np.float32)
    expr[:, ARKIT_INDEX["jawOpen"]] = 0.5 - 0.5 * np.cos(2 * np.pi * k / 8)
    expr[:, ARKIT_INDEX["mouthSmileLeft"]] = expr[:, ARKIT_INDEX["mouthSmileRight"]] = (k % 5) / 5.0
    pose = np.zeros((n_frames, 6), np.float32)
    pose[:, 1] = 0.1 * np.sin(2 * np.pi * k / n_frames)
    s = size / 26.0  # px per cm: the head fills about half the crop, like a prepared crop
    crops, lms, cams = [], [], []
    for i in range(n_frames):
        c, sn = np.cos(pose[i, 1]), np.sin(pose[i, 1])
        R = np.array([[c, 0, sn], [0, 1, 0], [-sn, 0, c]])
        P = np.zeros((2, 4))
        P[:, :3] = np.diag([s, -s, 0])[:2] @ R  # y up in the model, down in the image
        P[:, 3] = (size / 2, size * 0.45)
        crops.append(draw_face(model, alpha, expr[i], P, size))
        beta = np.zeros(model.exp_basis.shape[1], np.float32)
        for j, n in enumerate(model.exp_names):
            if n in ARKIT_INDEX:
                beta[j] = expr[i, ARKIT_INDEX[n]]
        xy = G.project_affine(P, np.asarray(model.vertices(alpha, beta), np.float64))
        lm = np.concatenate([xy, np.repeat(xy[[468 - 1]], 10, 0)])  # 478 like MediaPipe (iris points unused)
        lms.append(lm.astype(np.float32))
        cams.append(P.astype(np.float32))
    A = np.tile(np.array([[1, 0, 0], [0, 1, 0]], np.float32), (n_frames, 1, 1))
    half = n_frames // 2
    shards = []
    for j, (a, b) in enumerate([(0, half), (half, n_frames)]):
        name = f"shard_{j:03d}.npz"
        np.savez(root / "frames" / "synth" / name, crops=np.stack(crops[a:b]), landmarks=np.stack(lms[a:b]),
                 transform=A[a:b], frame=np.arange(a, b, dtype=np.int64))
        shards.append(name)
    np.savez(root / "clips" / "synth.npz", expr=expr, identity=alpha, pose=pose, valid=np.ones(n_frames, bool),
             camera=np.stack(cams), transform=A)
    import soundfile as sf

    t = np.arange(int(n_frames / 25 * 16000)) / 16000
    sf.write(str(root / "clips" / "synth.wav"), (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000)
    manifest = {"version": 1, "space": "arkit52", "names": list(ARKIT_NAMES), "fps": 25, "sample_rate": 16000,
                "renderer": {"crop_size": size, "landmarks": 478},
                "clips": [{"id": "synth", "split": "train", "speaker": "synthetic", "source": "face model",
                           "license": "Apache-2.0", "n_frames": n_frames, "valid_frames": n_frames,
                           "has_audio": True, "shards": shards}]}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def portrait(path: Path) -> Path:
    """scikit-image's astronaut (public domain), the real face the tests drive."""
    import cv2
    from skimage import data

    img = data.astronaut()
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return path


def speech(path: Path, text: str = "hello there, this is a test") -> Path:
    """Real synthetic speech from Debian flite when present, else a voiced, amplitude-modulated tone."""
    import shutil
    import subprocess

    import soundfile as sf

    if shutil.which("flite"):
        r = subprocess.run(["flite", "-voice", "slt", "-t", text, "-o", str(path)], capture_output=True)
        if r.returncode == 0 and path.is_file():
            return path
    t = np.arange(int(1.5 * 16000)) / 16000
    x = 0.2 * np.sin(2 * np.pi * 140 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    sf.write(str(path), x.astype(np.float32), 16000)
    return path


def tiny_renderer_onnx(path: Path, seed: int = 0) -> Path:
    """An exported 'tiny' renderer (64x64) whose identity size matches the shipped face model. Untrained, with a
    random AdaIN modulation so every input path (coefficients, reference, mask) changes the painted pixels."""
    import torch

    from realtalk_bridge.nets.renderer import Renderer, make_dims
    from realtalk_bridge.runtime.export_renderer import export_model
    from realtalk_bridge.video.facefit import FaceGeometry

    torch.manual_seed(seed)
    m = Renderer(make_dims("tiny", n_id=FaceGeometry().n_id)).eval()
    for fia in m.decoder:
        torch.nn.init.normal_(fia.adain.affine.weight, std=0.3)
    return export_model(m, path)


def one_torch_thread():
    """Generator for an autouse fixture: tiny models on a shared 2-core machine run far faster on 1 thread."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
