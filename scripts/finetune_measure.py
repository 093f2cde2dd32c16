"""Measure personal fine-tuning on a real talking-face video: fine-tune on its first 70 %, score its last 30 %.

    python scripts/finetune_measure.py ../shared/data/real-speech-video-2.mp4 [more videos] --work runs/ft

Per video: `prepare` -> a dataset cut to the first 70 % of the frames -> `train a2e --init default` (its own
defaults: early stopping on the last 15 % of that 70 %) -> `export a2e` -> both the shipped and the fine-tuned
model predict from the whole audio track, and only the frames of the last 30 % (never trained on) are scored
against MediaPipe (the `eval a2e --videos` figures). Writes WORK/finetune.json and prints a table.
This is a measurement: the fine-tuned weights stay in WORK and are never shipped.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from realtalk_bridge.cli import main as cli  # noqa: E402
from realtalk_bridge.eval import a2e as ev  # noqa: E402

KEYS = ("jaw_r", "open_r", "mouthClose_r", "mouthFunnel_r", "mouthPucker_r", "mouthSmileLeft_r", "lag_frames")


def cut_dataset(prep: Path, out: Path, keep: float) -> float:
    """prepare's one-clip dataset -> a copy holding only its first `keep` of the frames; returns the cut time (s)."""
    import soundfile as sf

    manifest = json.loads((prep / "manifest.json").read_text())
    (out / "clips").mkdir(parents=True, exist_ok=True)
    clips = []
    for c in manifest["clips"]:
        with np.load(prep / "clips" / f"{c['id']}.npz", allow_pickle=False) as z:
            expr, identity = z["expr"], z["identity"]
        n = int(round(len(expr) * keep))
        audio, sr = sf.read(prep / "clips" / f"{c['id']}.wav", dtype="float32")
        sf.write(out / "clips" / f"{c['id']}.wav", audio[: n * (sr // 25)], sr)
        np.savez(out / "clips" / f"{c['id']}.npz", expr=expr[:n], identity=identity)
        clips.append({**c, "split": "train"})
    (out / "manifest.json").write_text(json.dumps({**manifest, "clips": clips}, indent=1))
    return n / 25.0


def tail_scores(rt, video: Path, cut_s: float, cache: Path) -> dict:
    track = ev.track_video(video, cache)
    audio = ev.video_audio(video)
    n25 = int(np.ceil((track["t"][-1] + 0.5) * ev.FPS)) + 1
    pred = ev.resample_to_times(ev.predict(rt, audio, n25, 80.0), ev.FPS, track["t"])
    m = track["t"] >= cut_s
    sub = {"t": track["t"][m], "blendshapes": track["blendshapes"][m], "lip_gap": track["lip_gap"][m],
           "valid": track["valid"][m]}
    return ev.video_scores(pred[m], sub)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("videos", type=Path, nargs="+")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--keep", type=float, default=0.7, help="share of the video to fine-tune on")
    ap.add_argument("--train-args", default="", help="extra `train a2e` options, e.g. '--freeze-frontend'")
    args = ap.parse_args()
    from realtalk_bridge.runtime.a2e import A2ERuntime

    shipped = A2ERuntime()
    cache = args.work / "tracks"
    rows = []
    for v in args.videos:
        w = args.work / v.stem
        if w.exists():
            shutil.rmtree(w)
        if cli(["prepare", str(v), "--out", str(w / "prep"), "--quiet"]) != 0:
            print(f"prepare failed on {v}", file=sys.stderr)
            continue
        cut = cut_dataset(w / "prep", w / "train", args.keep)
        if cli(["train", "a2e", "--init", "default", "--data", str(w / "train"), "--out", str(w / "run"),
                "--device", "cpu", *args.train_args.split()]) != 0:
            continue
        if cli(["export", "a2e", str(w / "run" / "best.safetensors"), "--out", str(w / "me.onnx")]) != 0:
            continue
        log = [json.loads(ln) for ln in (w / "run" / "log.jsonl").read_text().splitlines()]
        best = min((r for r in log if "val" in r), key=lambda r: r["val"])
        row = {"video": v.name, "cut_s": cut, "best_step": best["step"],
               "last_step": max(r["step"] for r in log if "val" in r),
               "default": tail_scores(shipped, v, cut, cache), "finetuned": tail_scores(A2ERuntime(w / "me.onnx"), v,
                                                                                          cut, cache)}
        rows.append(row)
        d, f = row["default"], row["finetuned"]
        print(f"{v.name}: last {1 - args.keep:.0%} ({d['tracked']} frames): "
              + ", ".join(f"{k} {d[k]:.3f} -> {f[k]:.3f}" if k != "lag_frames" else f"lag {d[k]} -> {f[k]}"
                          for k in KEYS))
    if rows:
        mean = {side: {k: float(np.mean([r[side][k] for r in rows])) for k in KEYS} for side in ("default", "finetuned")}
        print("mean: " + ", ".join(f"{k} {mean['default'][k]:.3f} -> {mean['finetuned'][k]:.3f}" for k in KEYS))
        args.work.mkdir(parents=True, exist_ok=True)
        (args.work / "finetune.json").write_text(json.dumps({"keep": args.keep, "per_video": rows, "mean": mean,
                                                             "train_args": args.train_args}, indent=1))
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
