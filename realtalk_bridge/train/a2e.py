"""`realtalk-bridge train a2e --data DIR --out DIR`: train the audio-to-expression transformer.

Reads the "A2E training data" folder of docs/ARCHITECTURE.md (manifest.json + clips/<id>.wav + .npz).
A training example is a random window: l audio tokens (l * 320 samples) starting on a frame boundary,
the T frames they cover, the clip's identity, and N history frames drawn at random from the same clip
(the paper's "randomly selected" historical expressions). Loss: paper eq. 3-4 (MSE + 0.1 vertex).

Writes to --out: `last.safetensors` (every --save-every steps, for --resume), `best.safetensors`
(lowest validation loss), `train_state.safetensors` (optimizer + RNG + history, for --resume),
`log.jsonl`, `loss.png`.
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FRAME_SAMPLES = 640  # 16 kHz / 25 fps


# ---------------------------------------------------------------------------------------- data

@dataclass
class Clip:
    id: str
    split: str
    speaker: str
    audio: np.ndarray     # (S,) float32 16 kHz
    expr: np.ndarray      # (F, E) float32 25 fps
    identity: np.ndarray  # (K_id,) float32


def read_dataset(folder: str | Path) -> tuple[dict, list[Clip]]:
    """Read and validate an A2E training-data folder -> (manifest, clips)."""
    from realtalk_bridge.audio import load_audio

    folder = Path(folder)
    mpath = folder / "manifest.json"
    if not mpath.is_file():
        raise FileNotFoundError(f"{folder} has no manifest.json (see docs/ARCHITECTURE.md, 'A2E training data')")
    try:
        manifest = json.loads(mpath.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{mpath}: not valid JSON: {exc}") from exc
    if manifest.get("version") != 1:
        raise ValueError(f"{mpath}: unsupported version {manifest.get('version')!r} (want 1)")
    names = manifest.get("names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{mpath}: 'names' must be a non-empty list of strings")
    if manifest.get("fps") != 25 or manifest.get("sample_rate") != 16000:
        raise ValueError(f"{mpath}: need fps 25 and sample_rate 16000, got {manifest.get('fps')} / {manifest.get('sample_rate')}")
    clips_meta = manifest.get("clips")
    if not isinstance(clips_meta, list) or not clips_meta:
        raise ValueError(f"{mpath}: 'clips' must be a non-empty list")
    clips: list[Clip] = []
    n_id = None
    for c in clips_meta:
        cid = c.get("id") if isinstance(c, dict) else None
        if not isinstance(cid, str) or not cid or "/" in cid or "\\" in cid or cid.startswith("."):
            raise ValueError(f"{mpath}: bad clip id {cid!r}")
        split = c.get("split")
        if split not in ("train", "val"):
            raise ValueError(f"{mpath}: clip {cid}: split must be 'train' or 'val', got {split!r}")
        wav, npz = folder / "clips" / f"{cid}.wav", folder / "clips" / f"{cid}.npz"
        audio = load_audio(wav)
        try:
            with np.load(npz, allow_pickle=False) as z:
                expr = np.asarray(z["expr"], dtype=np.float32)
                identity = np.asarray(z["identity"], dtype=np.float32).reshape(-1)
        except (OSError, KeyError, ValueError) as exc:
            raise ValueError(f"{npz}: cannot read expr/identity: {exc}") from exc
        if expr.ndim != 2 or expr.shape[1] != len(names):
            raise ValueError(f"{npz}: expr must be (frames, {len(names)}), got {expr.shape}")
        if not (np.all(np.isfinite(expr)) and np.all(np.isfinite(identity))):
            raise ValueError(f"{npz}: NaN or inf in expr/identity")
        if n_id is None:
            n_id = identity.size
        elif identity.size != n_id:
            raise ValueError(f"{npz}: identity has {identity.size} coefficients, other clips {n_id}")
        clips.append(Clip(cid, split, str(c.get("speaker", cid)), audio, expr, identity))
    return manifest, clips


def sample_batch(clips: list[Clip], dims, batch: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Random windows -> audio (B, W), identity (B, n_id), history (B, N, E), target (B, T, E).

    The window may start up to T-1 frames before the clip or run past its end (silence there, and the
    target holds the first/last frame), so the model sees the stream's zero-padded edges too.
    """
    W, T, N = dims.window_samples, dims.n_frames, dims.n_hist
    E = clips[0].expr.shape[1]
    audio = np.zeros((batch, W), np.float32)
    ident = np.zeros((batch, clips[0].identity.size), np.float32)
    hist = np.zeros((batch, N, E), np.float32)
    target = np.zeros((batch, T, E), np.float32)
    for b in range(batch):
        c = clips[rng.integers(len(clips))]
        n = c.expr.shape[0]
        f0 = int(rng.integers(-(T // 2), max(1, n - T // 2)))
        s0 = f0 * FRAME_SAMPLES
        lo, hi = max(0, s0), min(len(c.audio), s0 + W)
        if hi > lo:
            audio[b, lo - s0:hi - s0] = c.audio[lo:hi]
        target[b] = c.expr[np.clip(np.arange(f0, f0 + T), 0, n - 1)]
        ident[b] = c.identity
        hist[b] = c.expr[np.sort(rng.integers(0, n, N))]
    return audio, ident, hist, target


def dataset_defaults(clips: list[Clip], n_hist: int, rng: np.random.Generator) -> dict:
    """Runtime defaults: mean identity, and N frames spread over the training clips as a typical history."""
    ident = np.mean([c.identity for c in clips], axis=0)
    allf = np.concatenate([c.expr for c in clips], axis=0)
    idx = np.sort(rng.choice(len(allf), size=n_hist, replace=len(allf) < n_hist))
    return {"identity": ident.astype(np.float32).tolist(), "history": allf[idx].astype(np.float32).tolist()}


# ---------------------------------------------------------------------------------- synthetic data

SYNTH_NAMES = ("jawOpen", "mouthFunnel", "mouthSmileLeft", "mouthSmileRight", "mouthClose")


def synth_clip(rng: np.random.Generator, seconds: float, names: list[str], n_id: int, cid: str = "synth",
               split: str = "train") -> Clip:
    """A clip whose expressions follow its audio: tone bursts ('syllables') with random pitch and loudness.

    jawOpen follows loudness (scaled by the speaker's identity[0]: a per-speaker amplitude), low
    pitches round the lips (mouthFunnel), high pitches smile, silence closes the mouth. Enough
    structure that a model must read the audio to fit it; used by tests and `make_tiny_model`.
    """
    sr, S = 16000, int(seconds * 16000)
    n_frames = S // FRAME_SAMPLES
    audio = np.zeros(S, np.float32)
    idx = {n: i for i, n in enumerate(names)}
    expr = np.zeros((n_frames, len(names)), np.float32)
    identity = rng.normal(0, 1, n_id).astype(np.float32)
    gain = 1.0 + 0.3 * np.tanh(identity[0])
    t = 0
    while t < S:
        dur = int(rng.integers(3, 9)) * FRAME_SAMPLES  # 120-320 ms segments on the frame grid
        end = min(S, t + dur)
        if rng.random() < 0.7:
            f = float(rng.uniform(120, 700))
            a = float(rng.uniform(0.2, 0.9))
            tt = np.arange(end - t) / sr
            audio[t:end] = a * 0.5 * (np.sin(2 * np.pi * f * tt) + 0.3 * np.sin(2 * np.pi * 2.7 * f * tt))
            fr = slice(t // FRAME_SAMPLES, end // FRAME_SAMPLES)
            if "jawOpen" in idx:
                expr[fr, idx["jawOpen"]] = a * gain * 0.8
            if "mouthFunnel" in idx:
                expr[fr, idx["mouthFunnel"]] = a * float(f < 300)
            for side in ("mouthSmileLeft", "mouthSmileRight"):
                if side in idx:
                    expr[fr, idx[side]] = a * float(f > 480)
        elif "mouthClose" in idx:
            expr[t // FRAME_SAMPLES:end // FRAME_SAMPLES, idx["mouthClose"]] = 0.3
        t = end
    audio += rng.normal(0, 0.003, S).astype(np.float32)
    return Clip(cid, split, cid, audio, expr, identity)


def write_synthetic_dataset(folder: str | Path, n_clips: int = 6, seconds: float = 4.0, seed: int = 0,
                            names: list[str] | None = None, n_id: int = 8) -> Path:
    """Write a synthetic dataset in the ARCHITECTURE.md format (for tests and smoke runs)."""
    from realtalk_bridge.audio import save_audio
    from realtalk_bridge.face.arkit import ARKIT_NAMES

    names = list(names or ARKIT_NAMES)
    folder = Path(folder)
    (folder / "clips").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    meta = []
    for i in range(n_clips):
        split = "val" if i == n_clips - 1 else "train"
        c = synth_clip(rng, seconds, names, n_id, cid=f"synth{i:03d}", split=split)
        save_audio(folder / "clips" / f"{c.id}.wav", c.audio)
        np.savez(folder / "clips" / f"{c.id}.npz", expr=c.expr, identity=c.identity)
        meta.append({"id": c.id, "split": split, "speaker": c.id, "source": "synthetic", "license": "CC0-1.0"})
    manifest = {"version": 1, "space": "arkit52", "names": names, "fps": 25, "sample_rate": 16000, "clips": meta}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return folder


# ------------------------------------------------------------------------------------- training

def mouth_basis_for(face: str | None, names: list[str]):
    """The mouth rows of the face model's expression basis for the vertex loss, or None.

    `face`: "arkit" (the shipped model), a path (user BFM), or "none". Returns None with a note
    when the face model is not available (then the loss is the MSE term alone).
    """
    if face in (None, "", "none"):
        return None
    try:
        from realtalk_bridge.face.face_model import load_face_model
    except ImportError:
        print("train a2e: face model module not available; training without the vertex loss", file=sys.stderr)
        return None
    from realtalk_bridge.nets.a2e import mouth_basis

    fm = load_face_model(face)
    exp_names = list(getattr(fm, "exp_names", names))
    if exp_names != list(names):
        raise ValueError("the face model's expression names differ from the dataset's names")
    return mouth_basis(fm.exp_basis, fm.regions["mouth"])


def fit(model, sampler, steps: int, lr: float = 1e-3, mouth_b=None, w_vertex: float = 0.1, log=None,
        optimizer=None, start_step: int = 0, warmup: int = 50, grad_clip: float = 1.0):
    """Plain AdamW loop with warm-up + cosine decay. `sampler(step) -> (audio, ident, hist, target)` numpy."""
    import torch

    from realtalk_bridge.nets.a2e import a2e_loss

    opt = optimizer or torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    mb = None if mouth_b is None else torch.as_tensor(mouth_b, dtype=torch.float32)
    model.train()
    for step in range(start_step, steps):
        frac = step / max(1, steps)
        cur = lr * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * frac))
        for g in opt.param_groups:
            g["lr"] = cur
        a, i, h, y = (torch.from_numpy(v) for v in sampler(step))
        loss, parts = a2e_loss(model(a, i, h), y, mb, w_vertex)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        if log is not None:
            log(step, float(loss.detach()), parts, cur)
    model.eval()
    return opt


def make_tiny_model(out_dir: str | Path, steps: int = 300, seed: int = 0) -> Path:
    """Train the 'tiny' config on synthetic clips for a few seconds and export it -> path of the .onnx.

    A real (small, quickly trained) model for tests of everything downstream of the A2E before the
    shipped model exists. Deterministic for a given seed.
    """
    import torch

    from realtalk_bridge.face.arkit import ARKIT_LAYOUT, ARKIT_NAMES
    from realtalk_bridge.nets.a2e import A2E, dims_for, save_checkpoint
    from realtalk_bridge.runtime.export import export_checkpoint

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    names = list(ARKIT_NAMES)
    dims = dims_for("tiny")
    clips = [synth_clip(rng, 6.0, names, dims.n_id, cid=f"c{i}") for i in range(4)]
    model = A2E(dims)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small ops: threads only add overhead on the shared 2-core machine
    try:
        fit(model, lambda step: sample_batch(clips, dims, 16, rng), steps, lr=3e-3)
    finally:
        torch.set_num_threads(threads)
    ckpt = out_dir / "tiny.safetensors"
    save_checkpoint(ckpt, model, names, ARKIT_LAYOUT,
                    extra={"defaults": dataset_defaults(clips, dims.n_hist, rng), "step": steps, "data": "synthetic"})
    onnx_path = out_dir / "tiny.onnx"
    export_checkpoint(ckpt, onnx_path)
    return onnx_path


def add_arguments(parser) -> None:
    parser.add_argument("--data", type=Path, required=True, help="A2E training-data folder (manifest.json + clips/)")
    parser.add_argument("--out", type=Path, required=True, help="run folder for checkpoints, log and loss plot")


def run(args) -> int:
    print("train a2e: not implemented yet", file=sys.stderr)
    return 1


_ = time
