"""`realtalk-bridge eval renderer --data DATASET --renderer MODEL --frames 0.8:1 --out FILE.json`.

The real test of lip control (`drive`): every held-out frame is re-rendered with the coefficients of ANOTHER
held-out frame (a fixed random pairing, seed 0, no frame drives itself, so the driving values have nothing to do
with the source's own mouth: `drive_source_r` reports how little), with the clip's first face frame as the
reference (paper, section 4.1). Reported:
- `drive_open_r`: Pearson r between the driving jawOpen and the inner-lip gap (landmarks 13-14, pixels of a 256 crop)
  that MediaPipe tracks on the output. `source_open_r` is the same r against the SOURCE frame's jawOpen: a renderer
  that copies the source or the reference mouth scores high there and low on `drive_open_r`.
- `m_lmd`: mean distance of the 40 lip landmarks tracked on the output and on the frame whose coefficients were
  used, each set centred on its own mean (head position differs between the two frames; mouth shape is compared).
- `ssim`, `psnr`: on the unchanged region: the repainted pixels away from the mouth and jaw (the painted region
  minus the dilated lips of both expressions and minus the band where the two jaw outlines differ) against the
  source. (Pixels outside the mask are the source's by construction, eq. 8, so they are not counted.)
`reconstruction` keeps the paper's setting (each frame with its own coefficients, against itself): SSIM, PSNR on the
crop, M-LMD and F-LMD (all 468 face-mesh landmarks). FID, LPIPS and CSIM need backbone weights (Inception,
AlexNet/VGG, ArcFace) that no registry package ships; they are reported as null.
Writes the JSON, a PNG (scatter of driving jawOpen vs lip gap + real/generated pairs), a contact sheet PNG
(`*_sheet.png`: driving value, source, output) and an mp4 (`*.mp4`: source | output, driven).
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
    p.add_argument("--no-reconstruction", action="store_true", help="skip the own-coefficient reconstruction pass")
    p.add_argument("--drive", default=None,
                   help="take the driving coefficients from this other dataset's first clip (e.g. a real speaker "
                        "who opens the mouth more); m_lmd is then not computed (other face)")
    p.add_argument("--out", required=True, help="JSON results (plot PNG, contact sheet PNG and mp4 beside it)")


class CopyReference:
    """The no-network baseline: eq. 8 with the reference crop in place of the decoder output."""

    def __init__(self, size: int = 256, n_id: int = 0):
        self.size = size
        self.dims = {"n_id": n_id}

    def __call__(self, source, mask, reference, coeffs, guide=None):
        m = np.asarray(mask, np.float32)[..., None]
        return (source * m + reference * (1 - m)).round().astype(np.uint8)


def landmarks_of(tracker, rgb: np.ndarray) -> np.ndarray | None:
    tr = tracker(rgb)
    return None if tr is None else tr.landmarks


def _pearson(a, b) -> float | None:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 3 or a.std() < 1e-9 or b.std() < 1e-9:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def lip_gap(lm: np.ndarray) -> float:
    """Inner-lip opening in the landmarks' pixels: upper (13) to lower (14) inner-lip centre."""
    return float(np.linalg.norm(lm[13] - lm[14]))


def centred_lip_distance(a: np.ndarray, b: np.ndarray) -> float:
    pa, pb = a[MOUTH] - a[MOUTH].mean(0), b[MOUTH] - b[MOUTH].mean(0)
    return float(np.linalg.norm(pa - pb, axis=1).mean())


def unchanged_region(mask_new, mask_src, guide_new, guide_src, size: int) -> np.ndarray:
    """bool (S, S): repainted pixels that should still look like the source (cheeks, nose, chin skin)."""
    import cv2

    painted = (np.minimum(mask_new, mask_src) < 0.5)
    k = max(3, int(round(0.06 * size)) | 1)
    near_mouth = cv2.dilate(((guide_new > 0) | (guide_src > 0)).astype(np.uint8), np.ones((k, k), np.uint8)) > 0
    jaw_moved = cv2.dilate((np.abs(mask_new - mask_src) > 0.5).astype(np.uint8), np.ones((k, k), np.uint8)) > 0
    return painted & ~near_mouth & ~jaw_moved


def derangement(n: int, seed: int = 0) -> np.ndarray:
    """A fixed random permutation with no fixed point (n >= 2): frame i is driven by frame p[i] != i."""
    p = np.random.default_rng(seed).permutation(n)
    for i in range(n):  # in order: a swap never brings back a fixed point already passed
        if p[i] == i:
            j = (i + 1) % n
            p[i], p[j] = p[j], p[i]
    return p


def _load_clips(root: Path, manifest: dict, frames, clip, max_frames):
    """Per clip: its arrays, the reference (first face frame) and the held-out (frame, crop) pairs."""
    for c in manifest["clips"]:
        if clip and c["id"] != clip or not c.get("shards"):
            continue
        cid = c["id"]
        with np.load(root / "clips" / f"{cid}.npz", allow_pickle=False) as z:
            meta = {k: z[k] for k in ("expr", "identity", "pose", "camera")}
        n = len(meta["expr"])
        lo, hi = int(np.floor(frames[0] * n)), int(np.ceil(frames[1] * n))
        reference, ref_f, picked = None, None, []
        for name in c["shards"]:
            with np.load(root / "frames" / cid / name, allow_pickle=False) as z:
                for f, crop_img in zip(z["frame"], z["crops"]):
                    if reference is None:
                        reference, ref_f = crop_img, int(f)  # the clip's first face frame (paper, section 4.1)
                    if lo <= f < hi:
                        picked.append((int(f), crop_img))
        if max_frames and len(picked) > max_frames:
            picked = [picked[i] for i in np.linspace(0, len(picked) - 1, max_frames).round().astype(int)]
        if reference is not None and len(picked) >= 2:
            yield cid, meta, reference, ref_f, picked


def driving_track(path) -> np.ndarray:
    """(n, 52) ARKit weights of the first clip of another dataset (its face frames only)."""
    from realtalk_bridge.video.prepare import load_manifest

    root = Path(path)
    clips = [c for c in load_manifest(root)["clips"] if c.get("shards")]
    if not clips:
        raise ValueError(f"--drive {path}: no clip with face frames")
    with np.load(root / "clips" / f"{clips[0]['id']}.npz", allow_pickle=False) as z:
        expr, valid = np.asarray(z["expr"], np.float32), np.asarray(z["valid"], bool)
    if expr.ndim != 2 or expr.shape[1] != 52 or valid.shape != (len(expr),) or not valid.any():
        raise ValueError(f"--drive {path}: clip arrays do not look like a prepared clip")
    return expr[valid]


def evaluate(data, runtime, frames=(0.8, 1.0), clip=None, max_frames=None, geometry=None, progress=False,
             reconstruction=True, drive=None):
    """-> (result dict, pictures: {"pairs": [...], "sheet": [(driving jawOpen, source, output)], "video": [...]})."""
    import cv2
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity
    from tqdm import tqdm

    from realtalk_bridge.face.arkit import ARKIT_INDEX
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
    jaw = ARKIT_INDEX["jawOpen"]
    guided = getattr(runtime, "has_guide", False)
    resize = lambda x: x if size == crop_size else cv2.resize(x, (size, size), interpolation=cv2.INTER_AREA)
    # landmarks on 256 px crops whatever the model size, so LMD is in comparable units
    up = lambda x: x if size == 256 else cv2.resize(x, (256, 256), interpolation=cv2.INTER_CUBIC)
    rows, recon, pics = [], [], {"pairs": [], "sheet": [], "video": []}
    with FaceTracker(video=False) as tracker:
        for cid, meta, reference, ref_f, picked in _load_clips(root, manifest, frames, clip, max_frames):
            ref = resize(reference)
            alpha = meta["identity"]
            real_lm = {}
            pairing = derangement(len(picked))
            for i, (f, real) in enumerate(tqdm(picked, desc=f"eval {cid}", disable=not progress)):
                real = resize(real)
                g, driver_img = picked[pairing[i]]  # the frame whose coefficients drive this one
                P = meta["camera"][f] * s
                e_src, e_drv = meta["expr"][f], meta["expr"][g]
                if drive is not None:  # another person's track: no driving image to compare landmarks with
                    g, driver_img, e_drv = -1 - (i % len(drive)), None, drive[i % len(drive)]
                m_src, m_drv = geometry.mask(alpha, e_src, P, size), geometry.mask(alpha, e_drv, P, size)
                g_src, g_drv = geometry.guide(alpha, e_src, P, size), geometry.guide(alpha, e_drv, P, size)
                mask = np.minimum(m_src, m_drv)  # as FaceDriver.mask at inference
                fake = runtime(real, mask, ref, coeff_vector(alpha, e_drv, meta["pose"][f]), g_drv if guided else None)
                keep = unchanged_region(m_drv, m_src, g_drv, g_src, size)
                row = {"clip": cid, "frame": f, "driver": g, "drive_jaw": float(e_drv[jaw]),
                       "source_jaw": float(e_src[jaw]), "unchanged_px": int(keep.sum())}
                if keep.sum() >= 16:
                    row["psnr"] = float(peak_signal_noise_ratio(real[keep], fake[keep], data_range=255))
                    ssim_map = structural_similarity(real, fake, channel_axis=2, data_range=255, full=True)[1]
                    row["ssim"] = float(ssim_map.mean(axis=2)[keep].mean())
                lf = landmarks_of(tracker, up(fake))
                if g not in real_lm:
                    real_lm[g] = None if driver_img is None else landmarks_of(tracker, up(resize(driver_img)))
                if lf is not None:
                    row["gap"] = lip_gap(lf)
                    if real_lm[g] is not None:
                        row["m_lmd"] = centred_lip_distance(lf, real_lm[g])
                        row["drive_gap"] = lip_gap(real_lm[g])
                rows.append(row)
                if len(pics["video"]) < 250:
                    pics["video"].append(np.concatenate([real, fake], axis=1))
                pics["sheet"].append((float(e_drv[jaw]), real, fake))
                if reconstruction:  # the paper's setting: own coefficients, compared with the frame itself
                    m_own = np.minimum(m_src, geometry.mask(alpha, meta["expr"][ref_f], P, size))
                    rec = runtime(real, m_own, ref, coeff_vector(alpha, e_src, meta["pose"][f]), g_src if guided else None)
                    r = {"ssim": float(structural_similarity(real, rec, channel_axis=2, data_range=255)),
                         "psnr": float(peak_signal_noise_ratio(real, rec, data_range=255))}
                    lr, lrec = landmarks_of(tracker, up(real)), landmarks_of(tracker, up(rec))
                    if lr is not None and lrec is not None:
                        d = np.linalg.norm(lr[:468] - lrec[:468], axis=1)
                        r["f_lmd"], r["m_lmd"] = float(d.mean()), float(d[MOUTH].mean())
                    recon.append(r)
                    if len(pics["pairs"]) < 6:
                        pics["pairs"].append(np.concatenate([real, rec], axis=0))
    if not rows:
        raise ValueError(f"{data}: no face frames in range {frames} (need at least 2 per clip)")
    mean = lambda rs, k: (float(np.mean([r[k] for r in rs if k in r])) if any(k in r for r in rs) else None)
    tracked = [r for r in rows if "gap" in r]
    result = {
        "frames": len(rows), "range": list(frames), "model_size": size, "guide": bool(guided),
        "drive_jaw_range": [float(min(r["drive_jaw"] for r in rows)), float(max(r["drive_jaw"] for r in rows))],
        "drive_open_r": _pearson([r["drive_jaw"] for r in tracked], [r["gap"] for r in tracked]),
        "source_open_r": _pearson([r["source_jaw"] for r in tracked], [r["gap"] for r in tracked]),
        "drive_source_r": _pearson([r["drive_jaw"] for r in rows], [r["source_jaw"] for r in rows]),
        "drive_open_r_target": 0.7,
        "m_lmd": mean(rows, "m_lmd"), "ssim": mean(rows, "ssim"), "psnr": mean(rows, "psnr"),
        "tracked_frames": len(tracked), "lmd_units": "pixels of a 256x256 crop",
        "definitions": {
            "drive": "each held-out frame re-rendered with the coefficients of another held-out frame (fixed "
                     "random pairing, seed 0); reference = the clip's first face frame",
            "drive_open_r": "Pearson r: driving jawOpen vs MediaPipe inner-lip gap (13-14) on the output",
            "m_lmd": "lip landmarks of output vs of the driving frame, each centred on its mean",
            "ssim/psnr": "painted pixels away from lips and jaw line (unchanged region) vs the source"},
        "fid": None, "lpips": None, "csim": None,
        "note": "FID/LPIPS/CSIM need user-supplied backbone weights; not computed by this build",
        "per_frame": rows,
    }
    if recon:
        result["reconstruction"] = {"ssim": mean(recon, "ssim"), "psnr": mean(recon, "psnr"),
                                    "m_lmd": mean(recon, "m_lmd"), "f_lmd": mean(recon, "f_lmd"),
                                    "lmd_frames": sum("m_lmd" in r for r in recon)}
    return result, pics


def contact_sheet(sheet: list, n: int = 8) -> np.ndarray:
    """Columns sorted by driving jawOpen (evenly spread over its range): label, source, output."""
    import cv2

    if not sheet:
        return np.zeros((8, 8, 3), np.uint8)
    order = sorted(range(len(sheet)), key=lambda i: sheet[i][0])
    pick = [order[i] for i in np.linspace(0, len(order) - 1, min(n, len(order))).round().astype(int)]
    cols = []
    for i in pick:
        v, src, out = sheet[i]
        size = src.shape[0]
        label = np.full((max(24, size // 8), size, 3), 255, np.uint8)
        cv2.putText(label, f"jawOpen {v:.2f}", (4, label.shape[0] - 8), cv2.FONT_HERSHEY_SIMPLEX,
                    max(0.35, size / 400), (0, 0, 0), 1, cv2.LINE_AA)
        cols.append(np.concatenate([label, src, out], axis=0))
    return np.concatenate(cols, axis=1)


def plot(result: dict, pics: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["per_frame"] if "gap" in r]
    fig = plt.figure(figsize=(12, 6.5))
    ax = fig.add_subplot(2, 2, 1)
    ax.scatter([r["drive_jaw"] for r in rows], [r["gap"] for r in rows], s=8, label="output")
    both = [r for r in rows if "drive_gap" in r]
    ax.scatter([r["drive_jaw"] for r in both], [r["drive_gap"] for r in both], s=8, alpha=0.5,
               label="driving frame (real)")
    r = result["drive_open_r"]
    ax.set_title(f"driving jawOpen vs tracked lip gap: r = {r if r is None else round(r, 3)}")
    ax.set_xlabel("driving jawOpen")
    ax.set_ylabel("inner-lip gap (px @256)")
    ax.legend()
    ax = fig.add_subplot(2, 2, 2)
    ax.scatter([r["source_jaw"] for r in rows], [r["gap"] for r in rows], s=8, color="gray")
    r = result["source_open_r"]
    ax.set_title(f"source frame's own jawOpen vs lip gap: r = {r if r is None else round(r, 3)}")
    ax.set_xlabel("source jawOpen")
    if pics["pairs"]:
        axi = fig.add_subplot(2, 1, 2)
        axi.imshow(np.concatenate(pics["pairs"], axis=1))
        axi.set_title("reconstruction (own coefficients): top real, bottom rendered")
        axi.axis("off")
    fig.tight_layout()
    fig.savefig(png, dpi=80)
    plt.close(fig)


def write_outputs(result: dict, pics: dict, out: Path) -> dict:
    """JSON + plot PNG + contact sheet PNG + mp4 (the mp4 needs ffmpeg; skipped with a note without it)."""
    import shutil

    import cv2

    out.parent.mkdir(parents=True, exist_ok=True)
    plot(result, pics, out.with_suffix(".png"))
    sheet = out.with_name(out.stem + "_sheet.png")
    cv2.imwrite(str(sheet), cv2.cvtColor(contact_sheet(pics["sheet"]), cv2.COLOR_RGB2BGR))
    files = {"plot": str(out.with_suffix(".png")), "sheet": str(sheet)}
    if pics["video"] and shutil.which("ffmpeg"):
        from realtalk_bridge.render import VideoWriter

        h, w = pics["video"][0].shape[:2]
        writer = VideoWriter(out.with_suffix(".mp4"), w, h)
        for frame in pics["video"]:
            writer.write(frame)
        writer.close()
        files["video"] = str(out.with_suffix(".mp4"))
    result["files"] = files
    out.write_text(json.dumps(result, indent=1))
    return result


def run(args) -> int:
    from realtalk_bridge.render import load_runtime
    from realtalk_bridge.train.renderer import parse_range

    if bool(args.renderer) == bool(args.baseline):
        print("eval renderer: give --renderer MODEL or --baseline", file=sys.stderr)
        return 2
    try:
        frames = parse_range(args.frames)
        runtime = load_runtime(args.renderer) if args.renderer else CopyReference()
        drive = driving_track(args.drive) if args.drive else None
        result, pics = evaluate(args.data, runtime, frames, args.clip, args.max_frames, progress=True,
                                reconstruction=not args.no_reconstruction, drive=drive)
    except (ValueError, RuntimeError) as exc:
        print(f"eval renderer: {exc}", file=sys.stderr)
        return 2
    result["renderer"] = args.renderer or "baseline: copy the reference into the mask"
    if args.drive:
        result["drive_source"] = args.drive
    result = write_outputs(result, pics, Path(args.out))
    print(json.dumps({k: v for k, v in result.items() if k not in ("per_frame", "definitions")}, indent=1))
    return 0
