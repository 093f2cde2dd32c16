"""Does `bake --stride S` keep lip-sync on real faces? Stride 1 vs larger strides, measured.

For each stride, the real-video eval (realtalk_bridge.eval.a2e.eval_videos: predicted jawOpen vs what
MediaPipe reads off the face) runs on the given videos with infer_offline(..., stride=S), and the
predicted 25 fps curves are compared with stride 1's (max / mean absolute difference). Writes JSON and
a PNG. Measure only: nothing here trains on the videos.

    python scripts/bake_stride_lipsync.py --out docs/bench/bake_stride_lipsync.json \
        --strides 1,4,8,12 /work/shared/data/real-speech-video-*.mp4 /work/data-licensed/grid/rizkiarm/*.mpg
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def predict_fn(rt, stride: int, lookahead_ms: float, keep: list):
    """fn(audio, n_frames) -> (n_frames, 52) ARKit order at 25 fps, as eval a2e's predict, with a stride."""
    from realtalk_bridge.eval.a2e import ARKIT_INDEX, ARKIT_NAMES, FPS
    from realtalk_bridge.runtime.a2e import infer_offline

    def fn(audio, n):
        y = infer_offline(rt, audio, fps=FPS, lookahead_ms=lookahead_ms, stride=stride)
        out = np.zeros((n, len(ARKIT_NAMES)), np.float32)
        m = min(n, len(y))
        for j, name in enumerate(rt.names):
            if name in ARKIT_INDEX:
                out[:m, ARKIT_INDEX[name]] = y[:m, j]
        if 0 < m < n:
            out[m:] = out[m - 1]
        keep.append(y)  # the raw track, for the difference to stride 1
        return out

    return fn


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("videos", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--strides", default="1,4,8,12")
    ap.add_argument("--model", default=None)
    ap.add_argument("--lookahead-ms", type=float, default=80.0)
    ap.add_argument("--track-cache", type=Path, default=Path("/tmp/bake-stride-tracks"))
    args = ap.parse_args(argv)
    from realtalk_bridge.bench.a2e import model_label
    from realtalk_bridge.eval.a2e import eval_videos
    from realtalk_bridge.runtime.a2e import A2ERuntime

    strides = [int(s) for s in args.strides.split(",")]
    if strides[0] != 1:
        strides = [1] + [s for s in strides if s != 1]
    rt = A2ERuntime(args.model)
    jaw = rt.names.index("jawOpen")
    groups = {"real-speech": [v for v in args.videos if v.suffix == ".mp4"],
              "grid": [v for v in args.videos if v.suffix == ".mpg"]}
    groups = {k: v for k, v in groups.items() if v}
    result = {"model": model_label(rt.path), "lookahead_ms": args.lookahead_ms, "strides": strides,
              "videos": {k: [p.name for p in v] for k, v in groups.items()}, "by_group": {}}
    for g, vids in groups.items():
        raw, rows, curves = {}, {}, {}
        for s in strides:
            keep: list = []
            res = eval_videos(predict_fn(rt, s, args.lookahead_ms, keep), vids, args.lookahead_ms,
                              cache_dir=args.track_cache, baselines=False, curves=True)
            curves[s] = res.pop("curves")
            if res.get("errors"):
                print(f"{g}: errors {res['errors']}", file=sys.stderr)
            raw[s] = keep
            p = res["pooled"]
            rows[s] = {"jaw_r": p["jaw_r"], "open_r": p["open_r"], "lag_frames": p["lag_frames"],
                       "median_lag_frames": p["median_lag_frames"], "mouthFunnel_r": p.get("mouthFunnel_r"),
                       "per_video_jaw_r": [v["jaw_r"] for v in res["per_video"]], "tracked": p["tracked"]}
            d = np.concatenate([np.abs(a - b).ravel() for a, b in zip(keep, raw[1])])
            dj = np.concatenate([np.abs(a[:, jaw] - b[:, jaw]) for a, b in zip(keep, raw[1])])
            rows[s].update(max_abs_diff=float(d.max()), mean_abs_diff=float(d.mean()),
                           jaw_max_abs_diff=float(dj.max()), jaw_mean_abs_diff=float(dj.mean()))
            print(f"{g} stride {s}: " + ", ".join(f"{k} {v:.3f}" for k, v in rows[s].items()
                                                  if isinstance(v, float)), file=sys.stderr)
        for s in strides[1:]:  # is a difference to stride 1 more than which clips happened to be chosen?
            for key in ("jaw", "open"):
                lo, hi = bootstrap_diff(curves[1], curves[s], key)
                rows[s][f"{key}_r_diff_ci90"] = [lo, hi]
        result["by_group"][g] = {str(s): r for s, r in rows.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out.with_suffix(".png"))
    print(f"-> {args.out}, {args.out.with_suffix('.png')}")
    return 0


def bootstrap_diff(base: dict, other: dict, key: str, reps: int = 2000, seed: int = 0) -> tuple[float, float]:
    """90% interval of pooled r(other) - r(base) over clips resampled with replacement (paired: same clips).

    key "jaw": predicted jawOpen vs the tracker's jawOpen; "open": vs the inner-lip gap."""
    from realtalk_bridge.eval.a2e import ARKIT_INDEX

    j = ARKIT_INDEX["jawOpen"]
    tracks = base["tracks"]
    oks = [t["valid"] & np.isfinite(t["lip_gap"]) for t in tracks]
    ref = [(t["blendshapes"][o, j] if key == "jaw" else t["lip_gap"][o]) for t, o in zip(tracks, oks)]
    pa = [p[o, j] for p, o in zip(base["preds"]["model"], oks)]
    pb = [p[o, j] for p, o in zip(other["preds"]["model"], oks)]
    rng = np.random.default_rng(seed)
    d = []
    for _ in range(reps):
        idx = rng.integers(0, len(tracks), len(tracks))
        m = np.concatenate([ref[i] for i in idx])
        d.append(np.corrcoef(np.concatenate([pb[i] for i in idx]), m)[0, 1]
                 - np.corrcoef(np.concatenate([pa[i] for i in idx]), m)[0, 1])
    lo, hi = np.nanpercentile(d, [5, 95])
    return float(lo), float(hi)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    s = [str(x) for x in result["strides"]]
    for g, rows in result["by_group"].items():
        for key, ls in (("jaw_r", "-"), ("open_r", "--")):
            axes[0].plot(s, [rows[x][key] for x in s], ls, marker="o", label=f"{g} {key}")
        axes[1].plot(s, [rows[x]["jaw_mean_abs_diff"] for x in s], marker="o", label=f"{g} jawOpen mean")
        axes[1].plot(s, [rows[x]["jaw_max_abs_diff"] for x in s], ":", marker="x", label=f"{g} jawOpen max")
    axes[0].set_xlabel("bake --stride")
    axes[0].set_ylabel("pooled r vs the tracked face")
    axes[0].legend(fontsize=7)
    axes[1].set_xlabel("bake --stride")
    axes[1].set_ylabel("|stride S - stride 1|")
    axes[1].legend(fontsize=7)
    fig.suptitle(f"lip-sync against real faces by stride ({result['model']}, {result['lookahead_ms']:g} ms look-ahead)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
