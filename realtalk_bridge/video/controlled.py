"""`realtalk-bridge renderer make-controlled --out DATASET`: a renderer dataset where the answer is known.

One real face (scikit-image's public-domain `data.astronaut()`, or `--image`) is tracked once; every frame is then
that photo warped so its landmarks move exactly as the face model's vertices move for a chosen set of ARKit weights
(jawOpen, funnel, pucker, smile, stretch, lip up/down), the mouth opening painted dark with teeth, plus a small
in-plane head jitter. The coefficients written are the ones used to make the frame (true values, not a tracker's
guess), and the mouth moves a lot, so "does the renderer follow the coefficients?" has a known answer.

The folder has the layout `prepare` writes (docs/renderer.md), one clip, silent audio, and `subject.png` (the
untouched aligned crop: the source still for `render --image`).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from realtalk_bridge.audio import SAMPLE_RATE
from realtalk_bridge.face.arkit import ARKIT_INDEX, ARKIT_NAMES
from realtalk_bridge.video import geometry as G

FPS = 25
# channels the generator drives, with their ranges (the rest keep the photo's own tracked values)
DRIVEN = {"jawOpen": (0.0, 1.0), "mouthFunnel": (0.0, 0.6), "mouthPucker": (0.0, 0.6), "mouthSmile": (0.0, 0.7),
          "mouthStretch": (0.0, 0.5), "mouthLowerDown": (0.0, 0.6), "mouthUpperUp": (0.0, 0.5)}
UPPER_INNER = G.MP_INNER_LIP[:11]  # 78 ... 13 ... 308
LOWER_INNER = G.MP_INNER_LIP[10:] + G.MP_INNER_LIP[:1]  # 308 ... 14 ... 78


def add_arguments(p) -> None:
    p.add_argument("--out", required=True, help="dataset folder (created or replaced clip)")
    p.add_argument("--frames", type=int, default=2000, help="frames to generate (25 fps)")
    p.add_argument("--image", default=None, help="a portrait to use instead of scikit-image's astronaut")
    p.add_argument("--crop-size", type=int, default=256)
    p.add_argument("--shard-frames", type=int, default=128)
    p.add_argument("--jitter", type=float, default=1.0, help="scale of the in-plane head jitter (0 = none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")


def smooth_noise(rng, n: int, k: int, period: float) -> np.ndarray:
    """(n, k) smooth random curves in [0, 1]: white noise low-passed with a Gaussian of ~period frames."""
    from scipy.ndimage import gaussian_filter1d

    x = gaussian_filter1d(rng.standard_normal((n + 200, k)), period / 2.5, axis=0, mode="wrap")[100:-100]
    x = (x - x.mean(0)) / (x.std(0) + 1e-8)
    return np.clip(0.5 + 0.35 * x, 0, 1)


def expression_track(rng, n: int, base: np.ndarray) -> np.ndarray:
    """(n, 52) ARKit weights: the photo's own values, with the mouth channels on smooth random curves. Each driven
    channel is gated so that it is often near zero (closed, neutral mouth) and sometimes wide."""
    e = np.repeat(base[None].astype(np.float32), n, axis=0)
    curves = smooth_noise(rng, n, len(DRIVEN), period=10.0)
    gates = smooth_noise(rng, n, len(DRIVEN), period=40.0)
    for j, (name, (lo, hi)) in enumerate(DRIVEN.items()):
        v = lo + (hi - lo) * curves[:, j] * np.clip(gates[:, j] * 2 - 0.2, 0, 1)
        sides = [name + "Left", name + "Right"] if name + "Left" in ARKIT_INDEX else [name]
        for s in sides:
            e[:, ARKIT_INDEX[s]] = v
    # pucker and funnel fight a wide smile/stretch; keep combinations a face can make
    rounding = np.maximum(e[:, ARKIT_INDEX["mouthPucker"]], e[:, ARKIT_INDEX["mouthFunnel"]])
    for s in ("mouthSmileLeft", "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight"):
        e[:, ARKIT_INDEX[s]] *= 1 - rounding
    return e


def warp_to(img: np.ndarray, src_pts: np.ndarray, dst_pts: np.ndarray) -> np.ndarray:
    """Piecewise-affine warp that moves src_pts to dst_pts (backward map, Delaunay on the target points; the crop
    border is pinned so the neck and background stretch smoothly)."""
    import cv2
    from scipy.interpolate import LinearNDInterpolator

    s = img.shape[0]
    border = np.linspace(-0.1 * s, 1.1 * s, 9)
    ring = np.array([(x, y) for x in border for y in border if x in (border[0], border[-1]) or y in (border[0], border[-1])])
    dst = np.concatenate([dst_pts, ring])
    src = np.concatenate([src_pts, ring])
    f = LinearNDInterpolator(dst, src)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    m = f(np.stack([xx.ravel(), yy.ravel()], 1)).astype(np.float32).reshape(s, s, 2)
    return cv2.remap(img, m[..., 0], m[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def paint_mouth(img: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """Fill the inner-lip polygon: dark mouth, a band of upper teeth and a thinner band of lower teeth."""
    import cv2

    s = img.shape[0]
    ss = 4  # draw at 4x then downsample: anti-aliased edges
    inner = np.zeros((s * ss, s * ss), np.uint8)
    cv2.fillPoly(inner, [np.round(lm[list(G.MP_INNER_LIP)] * ss).astype(np.int32)], 255)
    if not inner.any():
        return img
    upper, lower = lm[list(UPPER_INNER)], lm[list(LOWER_INNER)]
    width = np.linalg.norm(lm[308] - lm[78])
    teeth = np.zeros_like(inner)
    for curve, h in ((upper, 0.16 * width), (lower, -0.08 * width)):
        band = np.concatenate([curve, curve[::-1] + [0, h]])
        cv2.fillPoly(teeth, [np.round(band * ss).astype(np.int32)], 255)
    area = lambda m: cv2.resize(m, (s, s), interpolation=cv2.INTER_AREA).astype(np.float32)[..., None] / 255
    a_in, a_teeth = area(inner), area(cv2.bitwise_and(inner, teeth))
    out = img.astype(np.float32)
    out = out * (1 - a_in) + np.array([70, 22, 28], np.float32) * a_in
    out = out * (1 - a_teeth) + np.array([228, 222, 210], np.float32) * a_teeth
    return out.round().clip(0, 255).astype(np.uint8)


def similarity(angle: float, scale: float, shift, center) -> np.ndarray:
    import cv2

    A = cv2.getRotationMatrix2D((float(center[0]), float(center[1])), float(np.degrees(angle)), float(scale))
    A[:, 2] += shift
    return A


def make_subject(image: np.ndarray, crop_size: int, geometry):
    """Track the photo once: aligned crop, its landmarks, its ARKit weights, pose, identity and camera."""
    from realtalk_bridge.video.track import FaceTracker

    with FaceTracker(video=False) as tracker:
        tr = tracker(image)
    if tr is None:
        raise ValueError("no face found in the subject image")
    A = G.quad_to_transform(G.align_quad(tr.landmarks), crop_size)
    crop = G.crop(image, A, crop_size)
    lm = G.apply_affine(A, tr.landmarks).astype(np.float32)
    alpha = geometry.fit_identity(tr.blendshapes[None], lm[None])
    P = geometry.fit_camera(alpha, tr.blendshapes, lm)
    return {"crop": crop, "landmarks": lm, "expr": tr.blendshapes.astype(np.float32),
            "pose": G.matrix_to_pose(tr.matrix).astype(np.float32), "alpha": alpha, "camera": P}


def render_frame(subject: dict, geometry, expr: np.ndarray, A: np.ndarray):
    """One frame for ARKit weights `expr` with in-plane jitter A (2x3): (crop, landmarks (478, 2), camera (2, 4))."""
    P0, lm0 = subject["camera"].astype(np.float64), subject["landmarks"]
    n = geometry.n_match
    dV = geometry.vertices(subject["alpha"], expr)[:n] - geometry.vertices(subject["alpha"], subject["expr"])[:n]
    lm = lm0.astype(np.float64).copy()
    lm[:n] += dV @ P0[:, :3].T  # the photo's landmarks moved as the model's vertices move (iris stays)
    img = paint_mouth(warp_to(subject["crop"], lm0[:n], lm[:n]), lm)
    import cv2

    s = img.shape[0]
    img = cv2.warpAffine(img, A, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    P = np.concatenate([A[:, :2] @ P0[:, :3], (A[:, :2] @ P0[:, 3] + A[:, 2])[:, None]], axis=1)
    return img, G.apply_affine(A, lm).astype(np.float32), P.astype(np.float32)


def build(out: Path, n_frames: int, image: np.ndarray, crop_size: int = 256, shard_frames: int = 128,
          jitter: float = 1.0, seed: int = 0, progress: bool = True, cid: str = "controlled") -> dict:
    from tqdm import tqdm

    from realtalk_bridge.video.facefit import FaceGeometry

    if n_frames < 2:
        raise ValueError("--frames must be at least 2")
    geometry = FaceGeometry()
    subject = make_subject(image, crop_size, geometry)
    rng = np.random.default_rng(seed)
    expr = expression_track(rng, n_frames, subject["expr"])
    jit = (smooth_noise(rng, n_frames, 4, period=30.0) - 0.5) * 2 * jitter  # [-1, 1] * jitter
    (out / "clips").mkdir(parents=True, exist_ok=True)
    frames_dir = out / "frames" / cid
    frames_dir.mkdir(parents=True, exist_ok=True)
    for old in frames_dir.glob("shard_*.npz"):
        old.unlink()
    pose = np.repeat(subject["pose"][None], n_frames, 0)
    camera = np.zeros((n_frames, 2, 4), np.float32)
    transform = np.zeros((n_frames, 2, 3), np.float32)
    shards, buf = [], {"crops": [], "landmarks": [], "transform": [], "frame": []}
    c = crop_size / 2
    for k in tqdm(range(n_frames), desc="controlled frames", disable=not progress):
        angle = np.radians(3.0) * jit[k, 0]
        A = similarity(angle, 1 + 0.02 * jit[k, 1], 0.012 * crop_size * jit[k, 2:], (c, c))
        img, lm, P = render_frame(subject, geometry, expr[k], A)
        pose[k, 2] += -angle  # in-plane roll (image y points down)
        camera[k], transform[k] = P, A  # A maps the untouched subject crop (the "frame") to this crop
        for key, v in (("crops", img), ("landmarks", lm), ("transform", A.astype(np.float32)), ("frame", k)):
            buf[key].append(v)
        if len(buf["frame"]) >= shard_frames or k == n_frames - 1:
            name = f"shard_{len(shards):03d}.npz"
            np.savez(frames_dir / name, crops=np.stack(buf["crops"]), landmarks=np.stack(buf["landmarks"]),
                     transform=np.stack(buf["transform"]), frame=np.array(buf["frame"], np.int64))
            shards.append(name)
            for v in buf.values():
                v.clear()
    import soundfile as sf

    sf.write(str(out / "clips" / f"{cid}.wav"), np.zeros(n_frames * SAMPLE_RATE // FPS, np.int16), SAMPLE_RATE,
             subtype="PCM_16")
    np.savez(out / "clips" / f"{cid}.npz", expr=expr, identity=subject["alpha"].astype(np.float32), pose=pose,
             valid=np.ones(n_frames, bool), camera=camera, transform=transform)
    import cv2

    cv2.imwrite(str(out / "subject.png"), cv2.cvtColor(subject["crop"], cv2.COLOR_RGB2BGR))
    entry = {"id": cid, "split": "train", "speaker": "controlled", "source": "make-controlled",
             "license": "public domain (scikit-image data.astronaut), generated", "n_frames": n_frames,
             "valid_frames": n_frames, "has_audio": False, "shards": shards, "width": crop_size,
             "height": crop_size, "fps_in": float(FPS), "controlled": {"driven": list(DRIVEN), "seed": seed,
                                                                        "jitter": jitter}}
    from realtalk_bridge.video.prepare import DATASET_VERSION, load_manifest

    manifest = load_manifest(out) if (out / "manifest.json").is_file() else {
        "version": DATASET_VERSION, "space": "arkit52", "names": list(ARKIT_NAMES), "fps": FPS,
        "sample_rate": SAMPLE_RATE, "clips": []}
    manifest["renderer"] = {"crop_size": crop_size, "landmarks": 478, "format": "frames/<id>/shard_NNN.npz"}
    manifest["clips"] = [x for x in manifest["clips"] if x.get("id") != cid] + [entry]
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return entry


def load_image(path: str | None) -> np.ndarray:
    if path is None:
        from skimage import data

        return np.ascontiguousarray(data.astronaut())
    import cv2

    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot read image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def run(args) -> int:
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        print(f"renderer make-controlled: --out {out} is a file", file=sys.stderr)
        return 2
    if args.crop_size % 16 or not 64 <= args.crop_size <= 1024:
        print("renderer make-controlled: --crop-size must be a multiple of 16 in 64..1024", file=sys.stderr)
        return 2
    try:
        entry = build(out, args.frames, load_image(args.image), args.crop_size, args.shard_frames, args.jitter,
                      args.seed, progress=not args.quiet)
    except (ValueError, RuntimeError) as exc:
        print(f"renderer make-controlled: {exc}", file=sys.stderr)
        return 2
    print(f"renderer make-controlled: {entry['n_frames']} frames ({len(entry['shards'])} shards) -> {out}")
    return 0
