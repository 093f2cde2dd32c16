"""`realtalk-bridge prepare VIDEOS --out DATASET`: talking-face videos -> a dataset for both trainers.

Per video (streamed frame by frame at 25 fps, so memory stays bounded for long videos):
MediaPipe FaceLandmarker -> 478 landmarks, 52 ARKit blendshape scores, head pose; a temporally smoothed,
aligned 256x256 face crop with the transform that pastes it back; 16 kHz mono audio (ffmpeg); the identity
coefficients of the face model fitted to the tracked landmarks; a per-frame affine camera for the renderer mask.
The layout is in docs/renderer.md; it is also an "A2E training data" folder (docs/ARCHITECTURE.md).
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from realtalk_bridge.audio import SAMPLE_RATE
from realtalk_bridge.face.arkit import ARKIT_NAMES

FPS = 25
CROP = 256
DATASET_VERSION = 1


def add_arguments(p) -> None:
    p.add_argument("videos", nargs="+", help="video files (any format ffmpeg/OpenCV reads)")
    p.add_argument("--out", required=True, help="dataset folder (created; existing clips with the same id are replaced)")
    p.add_argument("--crop-size", type=int, default=CROP)
    p.add_argument("--shard-frames", type=int, default=128, help="frames per renderer shard file")
    p.add_argument("--split", choices=["train", "val"], default="train")
    p.add_argument("--speaker", default=None, help="speaker name for the manifest (default: the file name)")
    p.add_argument("--license", default="user-supplied", help="license of the videos, recorded in the manifest")
    p.add_argument("--max-frames", type=int, default=None, help="stop each video after this many 25 fps frames")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def clip_id(path: Path, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem)[:56] or "clip"
    cid, k = base, 1
    while cid in taken:
        k += 1
        cid = f"{base}-{k}"
    taken.add(cid)
    return cid


def extract_audio(video: Path, wav: Path, n_frames: int) -> bool:
    """16 kHz mono wav from the video's audio track; silence of the video's length when it has none."""
    import soundfile as sf

    n_samples = int(round(n_frames / FPS * SAMPLE_RATE))
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg:
        r = subprocess.run([ffmpeg, "-v", "error", "-y", "-i", str(video), "-vn", "-ac", "1", "-ar", str(SAMPLE_RATE),
                            "-c:a", "pcm_s16le", "-f", "wav", str(wav)], capture_output=True, text=True)
        if r.returncode == 0 and wav.is_file() and wav.stat().st_size > 44:
            # exactly as long as the 25 fps frames, so audio sample i*640 is frame i's time
            x, _ = sf.read(str(wav), dtype="int16")
            x = np.pad(x[:n_samples], (0, max(0, n_samples - len(x))))
            sf.write(str(wav), x, SAMPLE_RATE, subtype="PCM_16")
            return True
    sf.write(str(wav), np.zeros(n_samples, np.int16), SAMPLE_RATE, subtype="PCM_16")
    return False


def _fill_invalid(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Hold the nearest valid frame's value in frames without a face."""
    idx = np.flatnonzero(valid)
    if len(idx) == len(valid):
        return x
    nearest = idx[np.clip(np.searchsorted(idx, np.arange(len(valid))), 0, len(idx) - 1)]
    prev = idx[np.clip(np.searchsorted(idx, np.arange(len(valid))) - 1, 0, len(idx) - 1)]
    pick = np.where(np.abs(prev - np.arange(len(valid))) <= np.abs(nearest - np.arange(len(valid))), prev, nearest)
    return x[pick]


def prepare_video(video: Path, out: Path, cid: str, geometry, crop_size: int = CROP, shard_frames: int = 128,
                  max_frames: int | None = None, progress=None, log=print) -> dict | None:
    from realtalk_bridge.video import geometry as G
    from realtalk_bridge.video.track import FaceTracker, read_frames, video_info

    info = video_info(video)
    frames_dir = out / "frames" / cid
    if frames_dir.exists():
        shutil.rmtree(frames_dir)
    frames_dir.mkdir(parents=True)
    expected = int(round(info["frames"] / info["fps"] * FPS)) if info["fps"] > 0 else 0
    if max_frames:
        expected = min(expected, max_frames) if expected else max_frames
    task = progress.add_task(f"{cid}", total=expected or None) if progress else None

    exprs, poses, transforms, valid = [], [], [], []
    shard: dict[str, list] = {"crops": [], "landmarks": [], "transform": [], "frame": []}
    shards: list[str] = []
    rng = np.random.default_rng(0)
    pool_e, pool_l, seen = [], [], 0  # reservoir of frames for the identity fit
    smoother = G.QuadSmoother()

    def flush():
        if not shard["frame"]:
            return
        name = f"shard_{len(shards):03d}.npz"
        np.savez(frames_dir / name, crops=np.stack(shard["crops"]), landmarks=np.stack(shard["landmarks"]),
                 transform=np.stack(shard["transform"]), frame=np.array(shard["frame"], np.int64))
        shards.append(name)
        for v in shard.values():
            v.clear()

    with FaceTracker(video=True) as tracker:
        for k, t, rgb in read_frames(video, FPS):
            if max_frames and k >= max_frames:
                break
            tr = tracker(rgb, int(round(t * 1000)))
            if tr is None:
                exprs.append(np.zeros(len(ARKIT_NAMES), np.float32))
                poses.append(np.zeros(6, np.float32))
                transforms.append(np.zeros((2, 3), np.float32))
                valid.append(False)
            else:
                A = G.quad_to_transform(smoother(G.align_quad(tr.landmarks)), crop_size)
                lm = G.apply_affine(A, tr.landmarks).astype(np.float32)
                exprs.append(tr.blendshapes)
                poses.append(G.matrix_to_pose(tr.matrix))
                transforms.append(A)
                valid.append(True)
                shard["crops"].append(G.crop(rgb, A, crop_size))
                shard["landmarks"].append(lm)
                shard["transform"].append(A)
                shard["frame"].append(k)
                seen += 1
                if len(pool_e) < 120:
                    pool_e.append(tr.blendshapes)
                    pool_l.append(lm)
                else:
                    j = rng.integers(seen)
                    if j < 120:
                        pool_e[j], pool_l[j] = tr.blendshapes, lm
                if len(shard["frame"]) >= shard_frames:
                    flush()
            if task is not None:
                progress.advance(task)
    flush()

    n = len(valid)
    valid_arr = np.array(valid, bool)
    if n == 0 or not valid_arr.any():
        log(f"prepare: {video}: no face found in any of {n} frames; clip skipped")
        shutil.rmtree(frames_dir, ignore_errors=True)
        return None
    if (~valid_arr).any():
        log(f"prepare: {video}: no face in {int((~valid_arr).sum())} of {n} frames (flagged invalid, not in shards)")
    expr = _fill_invalid(np.stack(exprs), valid_arr)
    pose = _fill_invalid(np.stack(poses), valid_arr)
    transform = _fill_invalid(np.stack(transforms), valid_arr)

    alpha = geometry.fit_identity(np.stack(pool_e), np.stack(pool_l))
    camera = np.zeros((n, 2, 4), np.float32)
    for name in shards:
        with np.load(frames_dir / name, allow_pickle=False) as z:
            for f, lm in zip(z["frame"], z["landmarks"]):
                camera[f] = geometry.fit_camera(alpha, expr[f], lm)
    camera = _fill_invalid(camera, valid_arr)

    has_audio = extract_audio(video, out / "clips" / f"{cid}.wav", n)
    if not has_audio:
        log(f"prepare: {video}: no audio track; wrote silence (fine for the renderer, useless for A2E training)")
    np.savez(out / "clips" / f"{cid}.npz", expr=expr.astype(np.float32), identity=alpha.astype(np.float32),
             pose=pose.astype(np.float32), valid=valid_arr, camera=camera, transform=transform.astype(np.float32))
    return {"id": cid, "n_frames": n, "valid_frames": int(valid_arr.sum()), "has_audio": has_audio,
            "shards": shards, "width": info["width"], "height": info["height"], "fps_in": info["fps"],
            "source": video.name}


def load_manifest(root: Path) -> dict:
    path = Path(root) / "manifest.json"
    if not path.is_file():
        raise ValueError(f"{root} is not a dataset: {path} is missing")
    try:
        m = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(m, dict) or not isinstance(m.get("clips"), list):
        raise ValueError(f"{path} has no clip list")
    return m


def run(args) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from realtalk_bridge.video.facefit import FaceGeometry

    out = Path(args.out)
    videos = [Path(v) for v in args.videos]
    for v in videos:  # before anything is written
        if not v.is_file():
            print(f"prepare: no such file: {v}", file=sys.stderr)
            return 2
    if out.exists() and not out.is_dir():
        print(f"prepare: --out {out} is a file, not a folder", file=sys.stderr)
        return 2
    (out / "clips").mkdir(parents=True, exist_ok=True)
    manifest = load_manifest(out) if (out / "manifest.json").is_file() else {
        "version": DATASET_VERSION, "space": "arkit52", "names": list(ARKIT_NAMES), "fps": FPS,
        "sample_rate": SAMPLE_RATE, "clips": []}
    manifest["renderer"] = {"crop_size": args.crop_size, "landmarks": 478, "format": "frames/<id>/shard_NNN.npz"}
    geometry = FaceGeometry()
    taken: set[str] = set()
    new = []
    progress = None if args.quiet else Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                               TimeRemainingColumn())
    ctx = progress if progress is not None else _Null()
    with ctx:
        for v in videos:
            cid = clip_id(v, taken)
            try:
                entry = prepare_video(v, out, cid, geometry, args.crop_size, args.shard_frames, args.max_frames,
                                      progress, log=lambda s: print(s, file=sys.stderr))
            except ValueError as exc:
                print(f"prepare: {exc}", file=sys.stderr)
                continue
            if entry is None:
                continue
            entry.update({"split": args.split, "speaker": args.speaker or v.stem, "license": args.license})
            new.append(entry)
    if not new and not manifest["clips"]:  # nothing usable: leave no dataset that looks valid
        print(f"prepare: no clip prepared; {out} has no manifest.json", file=sys.stderr)
        return 1
    ids = {e["id"] for e in new}
    manifest["clips"] = [c for c in manifest["clips"] if c.get("id") not in ids] + new
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    print(f"prepare: {len(new)} clip(s), {sum(e['valid_frames'] for e in new)} face frames -> {out}")
    return 0 if new else 1


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False
