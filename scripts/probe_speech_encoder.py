#!/usr/bin/env python
"""Does a pretrained speech encoder hear real lips better than our log-mel? A linear probe, and its cost.

Smart Turn v3.2 (PyPI `pipecat-ai` 1.14.0, `pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx`,
BSD-2-Clause) is an int8 Whisper-tiny encoder. We expose its final encoder LayerNorm (`layer_norm_8`: 384-dim at
50 Hz) and compare three feature sets as inputs of one ridge regression to MediaPipe's jawOpen:
  mel    the Whisper log-mel (80 bands, 100 Hz) itself;
  st8s   the encoder on an 8 s window (its native input; the clip right-aligned in it);
  st064  the encoder on a 0.64 s window (the A2E's window): a graph edit keeps the last 32 positional
         embeddings and sets the sequence length to 32 (what a streaming front-end would run per step).
Frames are averaged to 25 fps and stacked with +-3 neighbours. The probe is fitted on GRID s1 clips
(MediaPipe-tracked, `corpus build --videos` cache) and scored (Pearson r) on other GRID speakers and on the
shared real-speech videos. Also times one 0.64 s encoder call (onnxruntime, 1 thread).

Usage: scripts/probe_speech_encoder.py --wheel pipecat_ai-1.14.0-py3-none-any.whl --train-tracks DIR
       --test NAME=DIR ... --out models/a2e/frontend_probe.json
(`pip download --no-deps pipecat-ai==1.14.0 -d .cache/wheels` gets the wheel; nothing is installed.)
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

ONNX_MEMBER = "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx"
MEL_MEMBER = "pipecat/audio/turn/smart_turn/_whisper_features.py"


def build_graphs(wheel: Path, tmp: Path):
    """The Smart Turn ONNX with its encoder output exposed: an 8 s graph and a 0.64 s (32-token) graph."""
    import onnx
    from onnx import numpy_helper

    with zipfile.ZipFile(wheel) as z:
        (tmp / "st.onnx").write_bytes(z.read(ONNX_MEMBER))
        (tmp / "wf.py").write_bytes(z.read(MEL_MEMBER))
    m = onnx.load(tmp / "st.onnx")
    feat = next(n.output[0] for n in m.graph.node if n.name == "layer_norm_8_DequantizeLinear")
    del m.graph.output[:]
    m.graph.output.append(onnx.helper.make_tensor_value_info(feat, onnx.TensorProto.FLOAT, None))
    m = onnx.utils.Extractor(m).extract_model(["input_features"], [feat])
    onnx.save(m, tmp / "st8s.onnx")
    # 0.64 s: 64 mel frames -> 32 tokens; the positional table and the one hard-coded length 400 -> 32
    for i, init in enumerate(m.graph.initializer):
        a = numpy_helper.to_array(init)
        if init.name == "inner.encoder.embed_positions.weight":
            m.graph.initializer[i].CopyFrom(numpy_helper.from_array(a[-32:].copy(), init.name))
        elif a.dtype == np.int64 and a.size <= 4 and (a == 400).any():
            m.graph.initializer[i].CopyFrom(numpy_helper.from_array(np.where(a == 400, 32, a).astype(a.dtype), init.name))
    m.graph.input[0].type.tensor_type.shape.dim[2].dim_value = 64
    del m.graph.value_info[:]
    for o in m.graph.output:
        o.type.tensor_type.ClearField("shape")
    onnx.save(m, tmp / "st064.onnx")
    sys.path.insert(0, str(tmp))
    from wf import compute_whisper_log_mel_features  # noqa: E402  (the package's own numpy log-mel)

    return tmp / "st8s.onnx", tmp / "st064.onnx", compute_whisper_log_mel_features


def to25(x: np.ndarray, n: int, rate: int) -> np.ndarray:
    k = rate // 25
    t = min(len(x) // k, n)
    y = x[: t * k].reshape(t, k, -1).mean(1)
    return np.concatenate([y, np.repeat(y[-1:], n - t, 0)]) if t < n else y


def stack(x: np.ndarray, c: int = 3) -> np.ndarray:
    p = np.pad(x, ((c, c), (0, 0)), mode="edge")
    return np.concatenate([p[i:i + len(x)] for i in range(2 * c + 1)], 1)


def features(audio, n, s8, s64, wmel) -> dict:
    a = audio[-128000:]
    a8 = np.pad(a, (128000 - len(a), 0)).astype(np.float32)
    mel = wmel(a8, do_normalize=True)  # (80, 800), the clip right-aligned
    st = s8.run(None, {"input_features": mel[None].astype(np.float32)})[0][0]
    fr = int(np.ceil(len(a) / 320))
    out = {"mel": to25(mel[:, 800 - 2 * fr:].T, n, 100), "st8s": to25(st[400 - fr:], n, 50)}
    # streaming: the 0.64 s window ending 80 ms after frame i (the runtime's look-ahead); the frame's 2 tokens.
    # The mel is sliced from the clip's mel (its normalisation then spans the clip, not the window).
    f64 = []
    for i in range(n):
        end = 800 - 2 * fr + 4 * (i + 1) + 8
        w = mel[:, max(0, end - 64):end]
        w = np.pad(w, ((0, 0), (64 - w.shape[1], 0)), mode="edge")
        o = s64.run(None, {"input_features": w[None].astype(np.float32)})[0][0]
        f64.append(o[32 - 6:32 - 4].mean(0))
    out["st064"] = np.asarray(f64)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--wheel", type=Path, required=True)
    ap.add_argument("--train-tracks", type=Path, required=True, help="folder of corpus.sources.track_video caches")
    ap.add_argument("--train-videos", type=Path, required=True, help="the videos of those tracks")
    ap.add_argument("--n-train", type=int, default=60)
    ap.add_argument("--test", nargs="+", required=True, metavar="NAME=DIR", help="folders of test videos")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    import onnxruntime as ort

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from realtalk_bridge.corpus.sources import track_video
    from realtalk_bridge.eval.a2e import pearson

    tmp = Path(tempfile.mkdtemp())
    g8, g64, wmel = build_graphs(args.wheel, tmp)
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    s8 = ort.InferenceSession(str(g8), so, providers=["CPUExecutionProvider"])
    s64 = ort.InferenceSession(str(g64), so, providers=["CPUExecutionProvider"])
    x = np.zeros((1, 80, 64), np.float32)
    ts = []
    for _ in range(300):
        t = time.perf_counter()
        s64.run(None, {"input_features": x})
        ts.append(time.perf_counter() - t)
    x8 = np.zeros((1, 80, 800), np.float32)
    ts8 = []
    for _ in range(10):
        t = time.perf_counter()
        s8.run(None, {"input_features": x8})
        ts8.append(time.perf_counter() - t)

    def load(paths, cache):
        from tqdm import tqdm

        out = []
        for v in tqdm(paths, desc=str(cache)[-30:], mininterval=10):
            try:
                tr = track_video(v, cache)
            except (OSError, ValueError) as exc:  # e.g. a video without an audio track
                print(f"skipped {v.name}: {exc}", file=sys.stderr)
                continue
            out.append((features(tr["audio"], len(tr["expr"]), s8, s64, wmel), tr["expr"][:, 17], tr["valid"]))
        return out

    exts = (".mpg", ".mp4")
    tracks = sorted(args.train_tracks.glob("*.npz"))[: args.n_train]
    train = load([args.train_videos / (p.stem + ".mpg") for p in tracks], args.train_tracks)
    tests = {}
    for spec in args.test:
        name, d = spec.split("=", 1)
        tests[name] = load(sorted(p for p in Path(d).iterdir() if p.suffix in exts), tmp / f"track_{name}")
    res = {}
    for k in ("mel", "st8s", "st064"):
        X = np.concatenate([stack(f[k])[ok] for f, y, ok in train])
        Y = np.concatenate([y[ok] for f, y, ok in train])
        mu, sd = X.mean(0), X.std(0) + 1e-6
        Xn = (X - mu) / sd
        res[k] = {}
        for lam in (10.0, 100.0, 1000.0):
            W = np.linalg.solve(Xn.T @ Xn + lam * len(Xn) / 100 * np.eye(Xn.shape[1]), Xn.T @ (Y - Y.mean()))
            for name, ts_ in tests.items():
                P = np.concatenate([((stack(f[k]) - mu) / sd @ W)[ok] for f, y, ok in ts_])
                T = np.concatenate([y[ok] for f, y, ok in ts_])
                res[k][f"lambda={lam:g}/{name}"] = round(pearson(P, T), 3)
    report = {"train": {"clips": len(train), "tracks": str(args.train_tracks)},
              "tests": {k: len(v) for k, v in tests.items()}, "jaw_r": res,
              "encoder_ms_0.64s_window": {"median": 1000 * float(np.median(ts)), "p10": 1000 * float(np.percentile(ts, 10))},
              "encoder_ms_8s_window": {"median": 1000 * float(np.median(ts8))},
              "note": "ridge probe from features to MediaPipe jawOpen; 1 onnxruntime thread; machine shared"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.2))
        names = list(tests)
        for j, name in enumerate(names):
            vals = [max(v for kk, v in res[k].items() if kk.endswith("/" + name)) for k in res]
            ax.bar(np.arange(3) + 0.35 * j, vals, 0.35, label=name)
        ax.set_xticks(np.arange(3) + 0.17, ["log-mel", "Smart Turn, 8 s", "Smart Turn, 0.64 s"])
        ax.set_ylabel("probe jawOpen r (best lambda)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.out.with_suffix(".png"), dpi=100)
    except ImportError:
        pass
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
