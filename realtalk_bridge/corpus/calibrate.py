"""`realtalk-bridge corpus calibrate-teacher --videos DIR --out FILE.json`: fit the articulation teacher to real faces.

For each real talking-face video: the audio is phone-recognised by pocketsphinx (allphone decoding with its en-us
acoustic model: no transcript needed, lip shapes follow phone classes more than languages), the face is tracked by
MediaPipe FaceLandmarker (the cached tracks of `eval a2e --videos`), and the teacher's curves for those phones are
compared with the tracked ones at the video's own frame times.

The fit moves only the few parameters of `teacher.Calibration` (onset lead, anticipation / carry-over widths, the
jaw's width, rounding anticipation, jawOpen targets of three phone classes relative to the open vowels, rounding
of consonants relative to rounded vowels, stretch of the other phones relative to the spread ones), by
regularised least squares (scipy.optimize.least_squares) toward the hand-set values. The data term compares
*shapes*: each video's channel is standardised on both sides (so 1 - r is what is minimised), because MediaPipe's
blendshape scale is not the teacher's ARKit scale and differs between faces and cameras; global amplitude is
therefore left as hand-set, and the tracked-vs-teacher gain is only reported. Leave-one-video-out r (fit on the
others, score the held-out video) before and after tells whether the fit generalises. Measure/calibrate only:
no network weights are trained on these videos.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from realtalk_bridge.audio import SAMPLE_RATE
from realtalk_bridge.corpus.teacher import HAND_SET, Calibration, Phone, Style, teacher_curves
from realtalk_bridge.face.arkit import ARKIT_INDEX

FPS = 25
# scored channels (left/right averaged) and their weight in the fit
SCORED = {"jawOpen": 2.0, "mouthClose": 0.5, "mouthFunnel": 1.0, "mouthPucker": 1.0, "mouthSmile": 0.5}
_PAIRS = {"mouthSmile": ("mouthSmileLeft", "mouthSmileRight")}
# prior widths: a parameter moves about this much (log-ratio for factors, seconds for the lead) per unit of prior
PRIOR_SIGMA = {"lead_shift": 0.03, "anticipation": 0.3, "carryover": 0.3, "jaw_width": 0.3, "round_anticipation": 0.3,
               "jaw_mid_vowels": 0.3, "jaw_close_vowels": 0.3, "jaw_consonants": 0.4, "round_consonants": 0.4,
               "stretch_others": 0.4}
DEFAULT_LAMBDA = 0.05
# the fit may not make the mouth trail the sound: MediaPipe's VIDEO mode smooths landmarks over time, which
# delays the tracked curves, and a negative lead fitted to that delay would teach late lips
FIT_BOUNDS = {"lead_shift": (0.0, 0.08)}
_EPS_STD = 0.01  # keeps standardising a nearly flat channel from blowing up


@dataclass
class Sample:
    name: str
    phones: list[Phone]
    t: np.ndarray  # (n,) s, the video's frame times
    tracked: dict[str, np.ndarray]  # channel -> (n,) MediaPipe values
    valid: np.ndarray  # (n,) bool
    group: str = ""  # the folder it came from (a speaker, a corpus): see folds()
    timing: str = "allphone"  # or "aligned" (pocketsphinx forced alignment to a transcript)


# ---------------------------------------------------------------------------------------------
# inputs: phones from the audio, curves from the face
# ---------------------------------------------------------------------------------------------

def _channel(values: np.ndarray, name: str) -> np.ndarray:
    cols = [ARKIT_INDEX[n] for n in _PAIRS.get(name, (name,))]
    return values[:, cols].mean(axis=1)


def transcript_for(video: Path) -> str | None:
    """A transcript for forced alignment, when one sits beside the video: `<stem>.txt`, or GRID-style word
    alignments `../align/<stem>.align` ("start end word" lines; sil/sp dropped)."""
    txt = video.with_suffix(".txt")
    if txt.is_file():
        return txt.read_text(errors="replace").strip() or None
    al = video.parent.parent / "align" / f"{video.stem}.align"
    if al.is_file():
        words = [ln.split()[2] for ln in al.read_text(errors="replace").splitlines() if len(ln.split()) == 3]
        words = [w for w in words if w.lower() not in ("sil", "sp")]
        return " ".join(words) or None
    return None


def load_samples(videos: list[Path], cache_dir: Path | None = None) -> list[Sample]:
    """Videos -> Samples (audio -> phones: forced alignment when a transcript is found, else allphone; face ->
    cached MediaPipe track). Unreadable videos are reported and skipped."""
    from realtalk_bridge.corpus.sources import Aligner, PhoneRecognizer
    from realtalk_bridge.eval.a2e import track_video, video_audio

    out, aligner, recognizer = [], None, None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        tqdm = lambda x, **k: x  # noqa: E731
    for v in tqdm([Path(v) for v in videos], desc="calibrate: track + phones", unit="video",
                  disable=not sys.stderr.isatty()):
        try:
            audio = video_audio(v)  # first: a video without sound is not worth tracking
            track = track_video(v, cache_dir)
            text, timing = transcript_for(v), "allphone"
            phones = None
            if text:
                aligner = aligner or Aligner()
                try:
                    phones, timing = aligner.align(audio, text), "aligned"
                except ValueError as exc:  # words outside the dictionary, a failed alignment: fall back
                    print(f"calibrate-teacher: {v.name}: alignment failed ({exc}); allphone instead", file=sys.stderr)
            if not phones:  # pocketsphinx allphone: timed phones, no transcript
                recognizer = recognizer or PhoneRecognizer()
                phones = recognizer.recognize(audio)
        except (OSError, ValueError, RuntimeError) as exc:
            print(f"calibrate-teacher: skipped {v.name}: {exc}", file=sys.stderr)
            continue
        valid = track["valid"].copy()
        if valid.sum() < 10:
            print(f"calibrate-teacher: skipped {v.name}: face tracked in {valid.sum()} frames", file=sys.stderr)
            continue
        out.append(Sample(v.name, phones, track["t"], {c: _channel(track["blendshapes"], c) for c in SCORED},
                          valid, group=v.parent.name, timing=timing))
    return out


def folds(samples: list[Sample], k_large: int = 3) -> list[list[int]]:
    """Held-out folds: each video of a small group (<= 4 videos) alone; a larger group (one speaker's many
    clips) in `k_large` interleaved folds."""
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        groups.setdefault(s.group, []).append(i)
    out = []
    for idx in groups.values():
        out += [[i] for i in idx] if len(idx) <= 4 else [idx[j::k_large] for j in range(k_large)]
    return out


def pick_evenly(paths: list[Path], n: int | None) -> list[Path]:
    """At most n of the (sorted) paths, evenly spread: a reproducible subset."""
    if n is None or len(paths) <= n:
        return list(paths)
    return [paths[int(i)] for i in np.linspace(0, len(paths) - 1, n).round()]


# ---------------------------------------------------------------------------------------------
# the fit (pure given the samples)
# ---------------------------------------------------------------------------------------------

def teacher_at(sample: Sample, cal: Calibration) -> dict[str, np.ndarray]:
    """The teacher's scored channels (neutral style) at the sample's frame times."""
    from realtalk_bridge.eval.a2e import resample_to_times

    n25 = int(np.ceil((sample.t[-1] + 0.5) * FPS)) + 1
    c = teacher_curves(sample.phones, n25, FPS, Style(), cal)
    c = resample_to_times(c, FPS, sample.t)
    return {name: _channel(c, name) for name in SCORED}


def _unit(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / (x.std() + _EPS_STD)


def encode(cal: Calibration) -> np.ndarray:
    """Calibration -> theta (0 = hand-set; 1 = one prior sigma away)."""
    out = []
    for k in Calibration.names():
        v, v0 = getattr(cal, k), getattr(HAND_SET, k)
        out.append((v - v0) / PRIOR_SIGMA[k] if k == "lead_shift" else np.log(v / v0) / PRIOR_SIGMA[k])
    return np.array(out)


def decode(theta: np.ndarray) -> Calibration:
    vals = {}
    for k, x in zip(Calibration.names(), theta):
        v0 = getattr(HAND_SET, k)
        v = v0 + x * PRIOR_SIGMA[k] if k == "lead_shift" else v0 * np.exp(x * PRIOR_SIGMA[k])
        lo, hi = FIT_BOUNDS.get(k, Calibration.BOUNDS[k])
        vals[k] = float(np.clip(v, lo, hi))
    return Calibration(**vals)


def _theta_bounds() -> tuple[np.ndarray, np.ndarray]:
    lo, hi = [], []
    for k in Calibration.names():
        a, b = FIT_BOUNDS.get(k, Calibration.BOUNDS[k])
        v0 = getattr(HAND_SET, k)
        if k == "lead_shift":
            lo.append((a - v0) / PRIOR_SIGMA[k]), hi.append((b - v0) / PRIOR_SIGMA[k])
        else:
            lo.append(np.log(a / v0) / PRIOR_SIGMA[k]), hi.append(np.log(b / v0) / PRIOR_SIGMA[k])
    return np.array(lo), np.array(hi)


def residuals(theta: np.ndarray, samples: list[Sample], lam: float) -> np.ndarray:
    """Standardised teacher-minus-tracked per video and channel (weighted, per frame), then the prior."""
    cal = decode(theta)
    n_total = sum(int(s.valid.sum()) for s in samples)
    parts = []
    for s in samples:
        pred = teacher_at(s, cal)
        for name, w in SCORED.items():
            p, m = pred[name][s.valid], s.tracked[name][s.valid]
            parts.append(np.sqrt(w / n_total) * (_unit(p) - _unit(m)))
    parts.append(np.sqrt(lam) * np.asarray(theta))
    return np.concatenate(parts)


def _jacobian(theta: np.ndarray, samples: list[Sample], lam: float, step: float = 0.05) -> np.ndarray:
    """Forward differences with an absolute step of 0.05 prior sigmas: the teacher computes in float32, so the
    tiny relative steps of scipy's default would only measure rounding noise."""
    r0 = residuals(theta, samples, lam)
    lo, hi = _theta_bounds()
    cols = []
    for i in range(len(theta)):
        h = step if theta[i] + step <= hi[i] else -step
        t = theta.copy()
        t[i] += h
        cols.append((residuals(t, samples, lam) - r0) / h)
    return np.stack(cols, axis=1)


def fit(samples: list[Sample], lam: float = DEFAULT_LAMBDA, start: Calibration = HAND_SET) -> tuple[Calibration, dict]:
    from scipy.optimize import least_squares

    lo, hi = _theta_bounds()
    # strictly inside the bounds (the hand-set lead sits on its fit bound): trf stalls on a start at a bound
    x0 = np.clip(encode(start), lo + 0.05, hi - 0.05)
    res = least_squares(residuals, x0, jac=_jacobian, args=(samples, lam), bounds=(lo, hi), x_scale=1.0,
                        max_nfev=60)
    return decode(res.x), {"cost": float(res.cost), "nfev": int(res.nfev), "status": int(res.status)}


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.std() < 1e-9 or b.std() < 1e-9:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def score(samples: list[Sample], cal: Calibration) -> dict:
    """Pooled r (over all samples' tracked frames) per scored channel, their weighted mean, and the
    least-squares gain tracked / teacher on jawOpen (how MediaPipe's scale compares to the teacher's)."""
    preds = [teacher_at(s, cal) for s in samples]
    out = {}
    for name in SCORED:
        p = np.concatenate([pr[name][s.valid] for pr, s in zip(preds, samples)])
        m = np.concatenate([s.tracked[name][s.valid] for s in samples])
        out[f"{name}_r"] = pearson(p, m)
        if name == "jawOpen":
            pc, mc = p - p.mean(), m - m.mean()
            out["jawOpen_gain"] = float(pc @ mc / max(pc @ pc, 1e-9))
    wsum = sum(SCORED.values())
    out["weighted_r"] = float(sum(w * out[f"{n}_r"] for n, w in SCORED.items()) / wsum)
    return out


def leave_one_out(samples: list[Sample], lam: float) -> list[dict]:
    """For each fold (folds()): fit on the other samples, score the fold before (hand-set) and after."""
    rows = []
    all_folds = folds(samples)
    for k, idx in enumerate(all_folds):
        print(f"calibrate-teacher: held-out fold {k + 1}/{len(all_folds)}", file=sys.stderr, flush=True)
        held = [samples[i] for i in idx]
        rest = [s for i, s in enumerate(samples) if i not in idx]
        cal, _ = fit(rest, lam)
        rows.append({"held_out": [s.name for s in held], "group": held[0].group, "frames": int(sum(s.valid.sum()
                     for s in held)), "before": score(held, HAND_SET), "after": score(held, cal),
                     "params": cal.to_dict()})
    return rows


def calibrate(samples: list[Sample], lam: float = DEFAULT_LAMBDA, lovo: bool = True) -> dict:
    """The whole report: held-out before/after, the fit on every sample, and the fitted params."""
    if not samples:
        raise ValueError("no usable videos to calibrate on")
    import time

    t0 = time.perf_counter()
    cal, info = fit(samples, lam)
    info["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"calibrate-teacher: fit on all {len(samples)} videos in {info['seconds']} s", file=sys.stderr, flush=True)
    groups = sorted({s.group for s in samples})
    rep: dict = {"version": 1, "params": cal.to_dict(), "hand_set": HAND_SET.to_dict(), "lambda": lam,
                 "prior_sigma": PRIOR_SIGMA, "scored": SCORED,
                 "videos": [{"name": s.name, "group": s.group, "timing": s.timing, "frames": int(s.valid.sum())}
                            for s in samples],
                 "frames": int(sum(s.valid.sum() for s in samples)), "fit": info,
                 "fit_all": {"before": score(samples, HAND_SET), "after": score(samples, cal)},
                 "tracker": "MediaPipe FaceLandmarker (eval.a2e.track_video)",
                 "phones": "pocketsphinx forced alignment where a transcript exists, else allphone (en-us model)"}
    if lovo and len(folds(samples)) >= 2:
        rows = leave_one_out(samples, lam)
        keys = list(rows[0]["before"])
        mean = lambda rs, k, side: float(np.mean([r[side][k] for r in rs]))  # noqa: E731
        rep["lovo"] = {"per_fold": rows,
                       "mean": {side: {k: mean(rows, k, side) for k in keys} for side in ("before", "after")},
                       "by_group": {g: {side: {k: mean([r for r in rows if r["group"] == g], k, side) for k in keys}
                                        for side in ("before", "after")} for g in groups}}
    return rep


# ---------------------------------------------------------------------------------------------
# figures and the command
# ---------------------------------------------------------------------------------------------

def plot(path: Path, samples: list[Sample], rep: dict) -> None:
    """Per video: tracked vs hand-set vs calibrated jawOpen and mouthPucker (each standardised), plus the params."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cal = Calibration.from_dict(rep["params"])
    shown: dict[str, int] = {}
    picked = []
    for s in samples:  # at most two videos per group
        if shown.get(s.group, 0) < 2:
            shown[s.group] = shown.get(s.group, 0) + 1
            picked.append(s)
    samples = picked
    n = len(samples)
    fig, axes = plt.subplots(n + 1, 2, figsize=(14, 2.5 * n + 3), squeeze=False)
    for i, s in enumerate(samples):
        before, after = teacher_at(s, HAND_SET), teacher_at(s, cal)
        for c, ch in enumerate(("jawOpen", "mouthPucker")):
            ax = axes[i, c]
            v = s.valid
            ax.plot(s.t[v], _unit(s.tracked[ch][v]), "k", lw=2, label="tracked (MediaPipe)")
            ax.plot(s.t[v], _unit(before[ch][v]), color="C1", lw=1.2, label="teacher, hand-set")
            ax.plot(s.t[v], _unit(after[ch][v]), color="C0", lw=1.2, label="teacher, calibrated")
            rb, ra = pearson(before[ch][v], s.tracked[ch][v]), pearson(after[ch][v], s.tracked[ch][v])
            ax.set_title(f"{s.name}: {ch} (standardised), r {rb:.2f} -> {ra:.2f}", fontsize=9)
            ax.set_xlabel("s")
            if i == 0:
                ax.legend(fontsize=7, loc="upper right")
    ax = axes[n, 0]
    names = Calibration.names()
    x = np.arange(len(names))
    ratio = [rep["params"][k] / rep["hand_set"][k] if k != "lead_shift" else 1 + rep["params"][k] / 0.03
             for k in names]
    ax.bar(x, ratio, color="C0")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(x, names, rotation=35, fontsize=7, ha="right")
    ax.set_title("fitted / hand-set (lead_shift: 1 + shift / 30 ms)", fontsize=9)
    ax = axes[n, 1]
    if "lovo" in rep:
        chans = [f"{c}_r" for c in SCORED] + ["weighted_r"]
        m = rep["lovo"]["mean"]
        ax.bar(np.arange(len(chans)) - 0.2, [m["before"][c] for c in chans], 0.4, label="hand-set", color="C1")
        ax.bar(np.arange(len(chans)) + 0.2, [m["after"][c] for c in chans], 0.4, label="calibrated", color="C0")
        ax.set_xticks(np.arange(len(chans)), chans, rotation=25, fontsize=7)
        ax.axhline(0, color="k", lw=0.5)
        ax.legend(fontsize=7)
        ax.set_title("leave-one-video-out r (mean over held-out videos)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def add_arguments(parser) -> None:
    parser.add_argument("--videos", type=Path, nargs="*", default=None,
                        help="talking-face videos with audio, or folders of them "
                             "(default: ../shared/data/real-speech-video-*.mp4)")
    parser.add_argument("--out", type=Path, required=True, help="calibration JSON to write (the teacher reads "
                        "models/teacher/calibration.json, or $REALTALK_TEACHER_CALIBRATION)")
    parser.add_argument("--plot", type=Path, default=None, help="PNG of before/after curves (default: beside --out)")
    parser.add_argument("--lambda", dest="lam", type=float, default=DEFAULT_LAMBDA,
                        help="weight of the pull toward the hand-set values")
    parser.add_argument("--track-cache", type=Path, default=Path(".cache/video-tracks"))
    parser.add_argument("--no-lovo", action="store_true", help="skip the held-out (leave-one-video-out) check")
    parser.add_argument("--max-per-folder", type=int, default=30,
                        help="use at most this many videos of a folder (evenly spread), to bound the fit time")


def run(args) -> int:
    from realtalk_bridge.eval.a2e import default_videos, expand_videos

    if not (args.lam >= 0 and np.isfinite(args.lam)):
        print("calibrate-teacher: --lambda must be >= 0", file=sys.stderr)
        return 2
    if args.max_per_folder < 1:
        print("calibrate-teacher: --max-per-folder must be >= 1", file=sys.stderr)
        return 2
    videos = []
    for v in (args.videos if args.videos is not None else default_videos()):
        videos += pick_evenly(expand_videos([v]), args.max_per_folder) if Path(v).is_dir() else [Path(v)]
    missing = [str(v) for v in videos if not v.is_file()]
    if missing or not videos:
        print(f"calibrate-teacher: no such video(s): {', '.join(missing) or '(none given, none in ../shared/data)'}",
              file=sys.stderr)
        return 1
    samples = load_samples(videos, args.track_cache)
    if not samples:
        print("calibrate-teacher: none of the videos could be used", file=sys.stderr)
        return 1
    rep = calibrate(samples, args.lam, lovo=not args.no_lovo)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rep, indent=1))
    plot_path = args.plot or args.out.with_suffix(".png")
    plot(plot_path, samples, rep)
    b, a = rep["fit_all"]["before"], rep["fit_all"]["after"]
    print(f"fit on {len(samples)} videos ({rep['frames']} frames): weighted r {b['weighted_r']:.3f} -> "
          f"{a['weighted_r']:.3f}, jaw r {b['jawOpen_r']:.3f} -> {a['jawOpen_r']:.3f}")
    if "lovo" in rep:
        m = rep["lovo"]["mean"]
        print(f"leave-one-video-out: weighted r {m['before']['weighted_r']:.3f} -> {m['after']['weighted_r']:.3f}, "
              f"jaw r {m['before']['jawOpen_r']:.3f} -> {m['after']['jawOpen_r']:.3f}")
    print(f"-> {args.out}, {plot_path}")
    return 0

