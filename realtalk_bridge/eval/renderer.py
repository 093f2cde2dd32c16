"""`realtalk-bridge eval renderer --data DATASET --renderer MODEL --frames 0.8:1 --out FILE.json`.

Reconstruction on held-out frames (the paper's setting): each frame is masked with the learnable mask of its own
tracked expression and repainted with the clip's first face frame as the reference; the result is compared with
the real crop.
- SSIM, PSNR on the 256x256 crop (scikit-image).
- M-LMD / F-LMD: mean distance (crop pixels) between MediaPipe landmarks found on the generated and on the real crop,
  over the lip landmarks (mouth) and over all 468 face-mesh landmarks.
FID, LPIPS and CSIM need backbone weights (Inception, AlexNet/VGG, ArcFace) that no registry package ships; they
are not computed by this build and are reported as null.
Writes the JSON and a PNG (metric curves + real/generated pairs).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from realtalk_bridge.video import geometry as G

MOUTH = sorted(set(G.MP_OUTER_LIP) | set(G.MP_INNER_LIP))


def add_arguments(p) -> None:
    p.add_argument("--data", required=True, help="dataset from `realtalk-bridge prepare`")
    p.add_argument("--renderer", default=None, help="renderer .onnx or .safetensors")
    p.add_argument("--baseline", action="store_true",
                   help="instead of a renderer: fill the masked region with the reference frame (no network); "
                        "the floor a trained renderer must beat")
    p.add_argument("--frames", default="0.8:1", help="fraction range of each clip's frames to evaluate (held out)")
    p.add_argument("--clip", default=None, help="only this clip id")
    p.add_argument("--max-frames", type=int, default=None, help="at most this many frames per clip (evenly spaced)")
    p.add_argument("--out", required=True, help="JSON results (a PNG is written beside it)")


class CopyReference:
    """The no-network baseline: eq. 8 with the reference crop in place of the decoder output."""

    def __init__(self, size: int = 256, n_id: int = 0):
        self.size = size
        self.dims = {"n_id": n_id}

    def __call__(self, source, mask, reference, coeffs):
        m = np.asarray(mask, np.float32)[..., None]
        return (source * m + reference * (1 - m)).round().astype(np.uint8)


def landmarks_of(tracker, rgb: np.ndarray) -> np.ndarray | None:
    tr = tracker(rgb)
    return None if tr is None else tr.landmarks


def evaluate(data, runtime, frames=(0.8, 1.0), clip=None, max_frames=None, geometry=None, progress=False):
    """-> (result dict, a few real/generated crop pairs for the picture)."""
    import cv2
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity
    from tqdm import tqdm

    from realtalk_bridge.video.driver import coeff_vector
    from realtalk_bridge.video.facefit import FaceGeometry
    from realtalk_bridge.video.prepare import load_manifest
    from realtalk_bridge.video.track import FaceTracker

    root = Path(data)
    manifest = load_manifest(root)
    geometry = geometry if geometry is not None else FaceGeometry()
    crop_size = int(manifest.get("renderer", {}).get("crop_size", 256))
    size = runtime.size
    s = size / crop_size
    rows, pairs = [], []
    with FaceTracker(video=False) as tracker:
        for c in manifest["clips"]:
            if clip and c["id"] != clip or not c.get("shards"):
                continue
            cid = c["id"]
            with np.load(root / "clips" / f"{cid}.npz", allow_pickle=False) as z:
                meta = {k: z[k] for k in ("expr", "identity", "pose", "camera")}
            n = len(meta["expr"])
            lo, hi = int(np.floor(frames[0] * n)), int(np.ceil(frames[1] * n))
            reference, picked = None, []
            for name in c["shards"]:
                with np.load(root / "frames" / cid / name, allow_pickle=False) as z:
                    for f, crop_img in zip(z["frame"], z["crops"]):
                        if reference is None:
                            reference = crop_img  # the clip's first face frame (paper, section 4.1)
                            ref_f = int(f)
                        if lo <= f < hi:
                            picked.append((int(f), crop_img))
            if max_frames and len(picked) > max_frames:
                picked = [picked[i] for i in np.linspace(0, len(picked) - 1, max_frames).round().astype(int)]
            if reference is None or not picked:
                continue
            ref = cv2.resize(reference, (size, size), interpolation=cv2.INTER_AREA) if size != crop_size else reference
            for f, real in tqdm(picked, desc=f"eval {cid}", disable=not progress):
                if size != crop_size:
                    real = cv2.resize(real, (size, size), interpolation=cv2.INTER_AREA)
                P = meta["camera"][f] * s
                mask = np.minimum(geometry.mask(meta["identity"], meta["expr"][f], P, size),
                                  geometry.mask(meta["identity"], meta["expr"][ref_f], P, size))
                fake = runtime(real, mask, ref, coeff_vector(meta["identity"], meta["expr"][f], meta["pose"][f]))
                row = {"clip": cid, "frame": f,
                       "ssim": float(structural_similarity(real, fake, channel_axis=2, data_range=255)),
                       "psnr": float(peak_signal_noise_ratio(real, fake, data_range=255))}
                # landmarks on 256 px crops whatever the model size, so LMD is in comparable units
                up = lambda x: x if size == 256 else cv2.resize(x, (256, 256), interpolation=cv2.INTER_CUBIC)
                lr, lf = landmarks_of(tracker, up(real)), landmarks_of(tracker, up(fake))
                if lr is not None and lf is not None:
                    d = np.linalg.norm(lr[:468] - lf[:468], axis=1)
                    row["f_lmd"] = float(d.mean())
                    row["m_lmd"] = float(d[MOUTH].mean())
                rows.append(row)
                if len(pairs) < 6:
                    pairs.append(np.concatenate([real, fake], axis=0))
    if not rows:
        raise ValueError(f"{data}: no face frames in range {frames}")
    lmd = [r for r in rows if "m_lmd" in r]
    result = {
        "frames": len(rows), "range": list(frames), "model_size": size,
        "ssim": float(np.mean([r["ssim"] for r in rows])), "psnr": float(np.mean([r["psnr"] for r in rows])),
        "m_lmd": float(np.mean([r["m_lmd"] for r in lmd])) if lmd else None,
        "f_lmd": float(np.mean([r["f_lmd"] for r in lmd])) if lmd else None,
        "lmd_frames": len(lmd), "lmd_units": "pixels of a 256x256 crop",
        "fid": None, "lpips": None, "csim": None,
        "note": "FID/LPIPS/CSIM need user-supplied backbone weights; not computed by this build",
        "per_frame": rows,
    }
    return result, pairs


def plot(result: dict, pairs: list, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["per_frame"]
    fig = plt.figure(figsize=(12, 6))
    ax = fig.add_subplot(2, 1, 1)
    x = np.arange(len(rows))
    ax.plot(x, [r["ssim"] for r in rows], label=f"SSIM (mean {result['ssim']:.3f})")
    ax2 = ax.twinx()
    ax2.plot(x, [r.get("m_lmd", np.nan) for r in rows], "r", label=f"M-LMD px (mean {result['m_lmd'] or float('nan'):.2f})")
    ax.set_xlabel("held-out frame")
    ax.legend(loc="upper left")
    ax2.legend(loc="upper right")
    if pairs:
        axi = fig.add_subplot(2, 1, 2)
        axi.imshow(np.concatenate(pairs, axis=1))
        axi.set_title("top: real, bottom: rendered")
        axi.axis("off")
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)


def run(args) -> int:
    from realtalk_bridge.render import load_runtime
    from realtalk_bridge.train.renderer import parse_range

    if bool(args.renderer) == bool(args.baseline):
        print("eval renderer: give --renderer MODEL or --baseline", file=sys.stderr)
        return 2
    try:
        frames = parse_range(args.frames)
        runtime = load_runtime(args.renderer) if args.renderer else CopyReference()
        result, pairs = evaluate(args.data, runtime, frames, args.clip, args.max_frames, progress=True)
    except (ValueError, RuntimeError) as exc:
        print(f"eval renderer: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result["renderer"] = args.renderer or "baseline: copy the reference into the mask"
    out.write_text(json.dumps(result, indent=1))
    plot(result, pairs, out.with_suffix(".png"))
    print(json.dumps({k: v for k, v in result.items() if k != "per_frame"}, indent=1))
    return 0
