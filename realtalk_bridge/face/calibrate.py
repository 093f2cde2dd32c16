"""`realtalk-bridge profile calibrate`: per-channel gains so an avatar's mouth reaches its range.

Give it a short recording of the user speaking (an audio file, run through the A2E model, or a
frames file recorded earlier: .npz / .csv / .json, e.g. from `bake` or `listen --record`, or a
Live Link Face CSV). For every calibrated channel of a profile it measures the chosen percentile
of the channel's linear mix over the speaking frames and suggests the gain that puts that
percentile at the target value. It writes the tuned profile (TOML) and a before/after plot (PNG).
"""
from __future__ import annotations

import csv
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np

from realtalk_bridge.face.arkit import ARKIT_NAMES
from realtalk_bridge.face.retarget import (Channel, Profile, ProfileError, load_profile, profile_matrix,
                                           profile_to_toml)

# Shapes that articulate speech (not expression: smiles, frowns and dimples are left alone)
LIP_SYNC = ("jawOpen", "mouthClose", "mouthFunnel", "mouthPucker", "mouthStretchLeft", "mouthStretchRight",
            "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthPressLeft",
            "mouthPressRight", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthUpperUpLeft", "mouthUpperUpRight",
            "tongueOut")
MAX_FRAMES_FILE = 512 * 1024 * 1024
TIME_COLUMNS = {"t", "time", "timecode", "frame", "index", "seq", "blendshapecount", "wall"}


class CalibrationError(ValueError):
    pass


# ---------------------------------------------------------------- reading frames


def read_frames(path: str | Path) -> tuple[tuple[str, ...], np.ndarray]:
    """A frames file -> (names, (n, len(names)) float32). .npz (allow_pickle=False), .csv, .json."""
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"{path}: no such file")
    if path.stat().st_size > MAX_FRAMES_FILE:
        raise CalibrationError(f"{path}: larger than {MAX_FRAMES_FILE >> 20} MiB")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npz":
            names, w = _read_npz(path)
        elif suffix == ".csv":
            names, w = _read_csv(path)
        elif suffix == ".json":
            names, w = _read_json(path)
        else:
            raise CalibrationError(f"{path}: unknown frames format {suffix!r} (.npz, .csv or .json)")
    except CalibrationError:
        raise
    except (ValueError, KeyError, TypeError, OSError, UnicodeDecodeError) as exc:
        raise CalibrationError(f"{path}: cannot read frames: {exc}") from None
    if w.ndim != 2 or w.shape[1] != len(names) or len(w) == 0:
        raise CalibrationError(f"{path}: expected frames of {len(names)} values, got shape {w.shape}")
    names = tuple(_canonical(n) for n in names)
    if not set(names) & set(ARKIT_NAMES):
        raise CalibrationError(f"{path}: no ARKit-52 names among the columns ({', '.join(names[:5])}...)")
    return names, np.nan_to_num(w.astype(np.float32))


def _canonical(name: str) -> str:
    """Map case variants (Live Link Face CSV writes EyeBlinkLeft) to Apple's spelling."""
    lower = {n.lower(): n for n in ARKIT_NAMES}
    return lower.get(str(name).lower(), str(name))


def _read_npz(path: Path):
    with np.load(path, allow_pickle=False) as z:
        if "names" not in z:
            raise CalibrationError(f"{path}: npz needs a 'names' array (found {', '.join(z.files)})")
        names = [str(n) for n in z["names"].tolist()]
        for key in ("w", "weights", "expr", "frames"):
            if key in z:
                return names, np.asarray(z[key], np.float32)
    raise CalibrationError(f"{path}: npz needs the frames as 'w', 'weights', 'expr' or 'frames'")


def _read_csv(path: Path):
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if len(rows) < 2:
        raise CalibrationError(f"{path}: a CSV needs a header row of names and at least one frame")
    header = [h.strip() for h in rows[0]]
    keep = [i for i, h in enumerate(header) if h and h.lower() not in TIME_COLUMNS]
    w = np.array([[float(r[i]) for i in keep] for r in rows[1:] if r], np.float32)
    return [header[i] for i in keep], w


def _read_json(path: Path):
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("names"), list):
        raise CalibrationError(f"{path}: JSON needs {{\"names\": [...], \"frames\": [[...], ...]}}")
    frames = next((data[k] for k in ("frames", "w", "weights") if k in data), None)
    if frames is None:
        raise CalibrationError(f"{path}: JSON needs the frames under 'frames', 'w' or 'weights'")
    if frames and isinstance(frames[0], dict):  # [{"t": .., "w": [...]}, ...]
        frames = [fr.get("w", fr.get("weights")) for fr in frames]
    return data["names"], np.asarray(frames, np.float32)


def frames_from_audio(audio_path: str, model: str | None, fps: int) -> tuple[tuple[str, ...], np.ndarray]:
    """Run the A2E model over an audio file (the same path `bake` uses)."""
    from realtalk_bridge.audio import load_audio

    try:
        from realtalk_bridge.runtime.a2e import A2ERuntime, infer_offline
    except ImportError as exc:
        raise CalibrationError(f"the A2E runtime is not available in this build ({exc}); "
                               "pass --frames with recorded frames instead") from None
    audio = load_audio(audio_path)
    rt = A2ERuntime(model) if model else A2ERuntime()
    w = infer_offline(rt, audio, fps)
    return tuple(rt.names), np.asarray(w, np.float32)


# ---------------------------------------------------------------- the math


def mouth_channels(profile: Profile) -> list[str]:
    """Channels whose strongest positive input is a speech shape: the ones whose range matters for lip-sync."""
    return [c.name for c in profile.channels if max(c.map, key=c.map.get) in LIP_SYNC and max(c.map.values()) > 0]


def speaking_frames(names: Sequence[str], frames: np.ndarray, threshold: float = 0.15) -> np.ndarray:
    """Boolean mask of frames where the mouth moves: jawOpen above `threshold` of its own range."""
    if "jawOpen" not in names:
        return np.ones(len(frames), bool)
    jaw = frames[:, list(names).index("jawOpen")]
    lo, hi = np.percentile(jaw, 5), np.percentile(jaw, 99)
    if hi - lo < 1e-4:
        return np.ones(len(frames), bool)
    return jaw > lo + threshold * (hi - lo)


def suggest_gains(profile: Profile, names: Sequence[str], frames: np.ndarray, channels: Sequence[str],
                  percentile: float = 95.0, target: float = 1.0, gain_range=(0.25, 8.0),
                  rest_percentile: float | None = 5.0) -> dict[str, dict]:
    """Per channel: the gain (and offset) that put the `percentile` of its mix over the speaking frames
    at `target` and, with `rest_percentile`, the mix at rest (that percentile over all frames) at 0.

    Trackers and regressors rarely rest at exactly 0 (a resting face reads mouthPress 0.1, say); without
    the offset a larger gain would also hold the avatar's mouth half open between words."""
    out_names, M, gain, offset, lo, hi, _, _ = profile_matrix(profile, names)
    mask = speaking_frames(names, frames)
    mix_all = frames @ M.T  # (n, out), before gain/offset/clamp
    mix = mix_all[mask]
    result = {}
    for c in channels:
        o = out_names.index(c)
        p = float(np.percentile(mix[:, o], percentile)) if len(mix) else 0.0
        rest = max(0.0, float(np.percentile(mix_all[:, o], rest_percentile))) if rest_percentile is not None else None
        before = float(np.clip(gain[o] * p + offset[o], lo[o], hi[o]))
        span = p - (rest or 0.0)
        if p <= 1e-2 or span <= 1e-2:  # the recording never used this channel: a gain would only amplify noise
            result[c] = dict(level=p, rest=rest, gain=float(gain[o]), new_gain=float(gain[o]),
                             offset=float(offset[o]), new_offset=float(offset[o]), before=before, after=before,
                             note="no activity: kept")
            continue
        if rest is None:
            new = float(np.clip((target - offset[o]) / p, *gain_range))
            new_off = float(offset[o])
        else:
            new = float(np.clip(target / span, *gain_range))
            new_off = -new * rest
        note = "at the gain limit" if new in gain_range else ""
        result[c] = dict(level=p, rest=rest, gain=float(gain[o]), new_gain=new, offset=float(offset[o]),
                         new_offset=new_off, before=before, after=float(np.clip(new * p + new_off, lo[o], hi[o])),
                         note=note)
    return result


def apply_gains(profile: Profile, gains: dict[str, float], offsets: dict[str, float] | None = None) -> Profile:
    """A copy of `profile` with these channel gains (and offsets); pass-through channels get their own entry."""
    d = profile.defaults
    offsets = offsets or {}
    chans = tuple(replace(c, gain=round(gains[c.name], 4), offset=round(offsets.get(c.name, c.offset), 4))
                  if c.name in gains else c for c in profile.channels)
    listed = {c.name for c in profile.channels}
    chans += tuple(Channel(n, {n: 1.0}, round(g, 4), round(offsets.get(n, d.offset), 4), d.clamp, d.smoothing)
                   for n, g in gains.items() if n not in listed)
    return replace(profile, channels=chans)


def plot(result: dict[str, dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(names) + 2), 4))
    ax.bar(x - 0.2, [result[n]["before"] for n in names], 0.4, label="before")
    ax.bar(x + 0.2, [result[n]["after"] for n in names], 0.4, label="after")
    ax.set_xticks(x, names, rotation=45, ha="right")
    ax.set_ylabel("channel value at the percentile")
    ax.set_ylim(0, 1.1)
    ax.axhline(1.0, color="grey", lw=0.5)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------- command


def add_arguments(parser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--audio", metavar="FILE", help="a recording of you speaking (wav/flac/ogg), run through A2E")
    src.add_argument("--frames", metavar="FILE", help="recorded frames: .npz (names + w), .csv (header of names), "
                                                      ".json, or a Live Link Face CSV")
    parser.add_argument("--profile", default="vrm1", help="profile to calibrate: preset name or file (default vrm1)")
    parser.add_argument("--channels", default=None,
                        help="comma-separated channels to calibrate (default: those driven by jaw/mouth shapes)")
    parser.add_argument("--percentile", type=float, default=95.0, help="percentile that should reach --target (95)")
    parser.add_argument("--target", type=float, default=1.0, help="value the percentile should reach (1.0)")
    parser.add_argument("--rest-percentile", type=float, default=5.0,
                        help="percentile of each channel over the whole take that counts as rest and maps to 0 "
                             "(an offset); 0 keeps the profile's offsets (default 5)")
    parser.add_argument("--model", default=None, help="A2E ONNX model for --audio (default: the shipped one)")
    parser.add_argument("--fps", type=int, default=25, choices=(25, 30, 50, 60), help="frame rate for --audio (25)")
    parser.add_argument("-o", "--output", default=None, help="write the calibrated profile here (.toml)")
    parser.add_argument("--plot", default=None, help="before/after PNG (default: next to --output)")


def run(args) -> int:
    try:
        if not 50.0 <= args.percentile <= 100.0:
            raise CalibrationError(f"--percentile must be 50-100, got {args.percentile}")
        if not 0.05 <= args.target <= 1.0:
            raise CalibrationError(f"--target must be 0.05-1, got {args.target}")
        profile = load_profile(args.profile)
        if args.frames:
            names, frames = read_frames(args.frames)
        else:
            names, frames = frames_from_audio(args.audio, args.model, args.fps)
        out_names = profile.output_names(names)
        channels = [c.strip() for c in args.channels.split(",") if c.strip()] if args.channels \
            else mouth_channels(profile)
        if not channels and profile.passthrough:
            channels = [n for n in out_names if n in LIP_SYNC]
        bad = [c for c in channels if c not in out_names]
        if bad:
            raise CalibrationError(f"--channels: not in profile {profile.name!r}: {', '.join(bad)}")
        if not channels:
            raise CalibrationError("no channels to calibrate: pass --channels")
        if not 0.0 <= args.rest_percentile < args.percentile:
            raise CalibrationError(f"--rest-percentile must be 0 (off) or below --percentile, got {args.rest_percentile}")
        result = suggest_gains(profile, names, frames, channels, args.percentile, args.target,
                               rest_percentile=args.rest_percentile or None)
    except (ProfileError, CalibrationError, ValueError, FileNotFoundError) as exc:
        print(f"profile calibrate: error: {exc}", file=sys.stderr)
        return 1

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{profile.name}: gains for p{args.percentile:g} = {args.target:g} "
                        f"({len(frames)} frames, {int(speaking_frames(names, frames).sum())} speaking)")
    for col in ("channel", "rest", "speech", "gain", "suggested", "offset", "before", "after", ""):
        table.add_column(col)
    for c, r in result.items():
        table.add_row(c, "-" if r["rest"] is None else f"{r['rest']:.3f}", f"{r['level']:.3f}", f"{r['gain']:.2f}",
                      f"{r['new_gain']:.2f}", f"{r['new_offset']:+.2f}", f"{r['before']:.2f}", f"{r['after']:.2f}",
                      r["note"])
    Console().print(table)

    if args.output:
        out = Path(args.output)
        tuned = apply_gains(profile, {c: r["new_gain"] for c, r in result.items()},
                            {c: r["new_offset"] for c, r in result.items()})
        src = args.frames or args.audio
        out.write_text(profile_to_toml(tuned, header=(
            f"Calibrated from {profile.name} by `realtalk-bridge profile calibrate` on {Path(src).name}:\n"
            f"p{args.percentile:g} of each speech channel over the speaking frames set to {args.target:g}"
            + (f", its p{args.rest_percentile:g} over the take (rest) to 0." if args.rest_percentile else "."))),
            encoding="utf-8")
        print(f"wrote {out}")
    plot_path = Path(args.plot) if args.plot else (Path(args.output).with_suffix(".png") if args.output else None)
    if plot_path:
        plot(result, plot_path, f"{profile.name}: p{args.percentile:g} per channel before / after calibration")
        print(f"wrote {plot_path}")
    return 0
