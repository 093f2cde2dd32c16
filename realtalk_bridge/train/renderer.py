"""`realtalk-bridge train renderer --data DATASET --config paper|lite`: train the expression-to-face renderer.

Losses (eq. 9-10): L1 + perceptual (VGG19 with user weights, else the documented fallback) + 0.1 * adversarial
(patch discriminator, non-saturating) + teeth-region L1. Checkpoints are safetensors (`renderer.safetensors`: the
generator with its dims; `train_state.safetensors`: discriminator and optimiser state for --resume). Sample grids
(masked source + lip guide | output | ground truth | reference) are written as PNG; metrics go to `metrics.jsonl`
and `loss.png`. Ctrl-C (SIGINT) finishes the current step, writes the checkpoint and exits 130; `--resume` goes on.
"""
from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import numpy as np

LAMBDA = {"l1": 1.0, "perceptual": 1.0, "adversarial": 0.1, "teeth": 1.0}  # eq. 10


def add_arguments(p) -> None:
    p.add_argument("--data", required=True, help="dataset folder written by `realtalk-bridge prepare`")
    p.add_argument("--config", default="lite", help="paper | lite | tiny")
    p.add_argument("--image-size", type=int, default=None,
                   help="train at this resolution instead of the config's (e.g. 128 for a 4x cheaper CPU model)")
    p.add_argument("--out", default="runs/renderer", help="run folder: checkpoints, samples, metrics")
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--frames", default="0:1", help="fraction range of each clip's frames to train on, e.g. 0:0.8")
    p.add_argument("--vgg19", default=None, help="VGG19 weights (safetensors, torchvision key names) for the perceptual loss")
    p.add_argument("--resume", action="store_true", help="continue from OUT/renderer.safetensors + train_state")
    p.add_argument("--save-every", type=int, default=500)
    p.add_argument("--sample-every", type=int, default=250)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    p.add_argument("--no-guide", action="store_true",
                   help="ablation: no lip-guide input (the paper's conditioning: coefficients through AdaIN only)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def parse_range(text: str) -> tuple[float, float]:
    try:
        a, b = (float(x) for x in text.split(":"))
    except ValueError:
        raise ValueError(f"frame range must look like 0:0.8, got {text!r}") from None
    if not 0 <= a < b <= 1:
        raise ValueError(f"frame range must satisfy 0 <= start < end <= 1, got {text!r}")
    return a, b


class RendererDataset:
    """Reads the renderer shards of a prepared dataset; yields batches as numpy arrays.

    Each sample is one face frame: its crop (ground truth and source), the learnable mask for its tracked expression,
    the teeth mask from its inner-lip landmarks, its coefficients, and a reference crop: another random frame of the
    same clip (the paper uses the clip's first frame at test time; a random one in training keeps the network from
    copying the reference's mouth).
    """

    def __init__(self, root, image_size: int, frames: tuple[float, float] = (0.0, 1.0), geometry=None,
                 split: str | None = None, cache_shards: int = 8, seed: int = 0):
        from realtalk_bridge.video.facefit import FaceGeometry
        from realtalk_bridge.video.prepare import load_manifest

        self.root = Path(root)
        self.manifest = load_manifest(self.root)
        self.size = image_size
        self.crop_size = int(self.manifest.get("renderer", {}).get("crop_size", 256))
        self.geometry = geometry if geometry is not None else FaceGeometry()
        self.rng = np.random.default_rng(seed)
        self.clips, self.items = {}, []  # items: (clip id, shard name, frame indices in range)
        for c in self.manifest["clips"]:
            if split and c.get("split") != split or not c.get("shards"):
                continue
            cid = c["id"]
            path = self.root / "clips" / f"{cid}.npz"
            try:
                with np.load(path, allow_pickle=False) as z:
                    meta = {k: z[k] for k in ("expr", "identity", "pose", "camera", "valid")}
            except (OSError, KeyError, ValueError) as exc:
                raise ValueError(f"{path}: not a prepared renderer clip ({exc}); run `realtalk-bridge prepare`") from exc
            n = len(meta["expr"])
            if meta["camera"].shape != (n, 2, 4) or meta["pose"].shape != (n, 6) or meta["expr"].ndim != 2:
                raise ValueError(f"{path}: array shapes do not match ({n} frames)")
            lo, hi = int(np.floor(frames[0] * n)), int(np.ceil(frames[1] * n))
            self.clips[cid] = meta
            for name in c["shards"]:
                with np.load(self.root / "frames" / cid / name, allow_pickle=False) as z:
                    f = z["frame"]
                keep = np.flatnonzero((f >= lo) & (f < hi))
                if len(keep) >= 2:
                    self.items.append((cid, name, keep))
        if not self.items:
            raise ValueError(f"{root}: no face frames in range {frames} (need at least 2 per shard)")
        self.n_id = int(next(iter(self.clips.values()))["identity"].shape[0])
        self._cache: dict[tuple[str, str], dict] = {}
        self._cache_size = cache_shards

    def __len__(self) -> int:
        return sum(len(k) for _, _, k in self.items)

    def shard(self, cid: str, name: str) -> dict:
        key = (cid, name)
        if key not in self._cache:
            if len(self._cache) >= self._cache_size:
                self._cache.pop(next(iter(self._cache)))
            with np.load(self.root / "frames" / cid / name, allow_pickle=False) as z:
                self._cache[key] = {k: z[k] for k in ("crops", "landmarks", "frame")}
        return self._cache[key]

    def sample(self, cid: str, name: str, i: int, ref_i: int) -> dict:
        import cv2

        from realtalk_bridge.video.driver import coeff_vector
        from realtalk_bridge.video.geometry import teeth_mask

        sh, meta = self.shard(cid, name), self.clips[cid]
        f = int(sh["frame"][i])
        s = self.size / self.crop_size
        P = meta["camera"][f] * s
        img, ref = sh["crops"][i], sh["crops"][ref_i]
        if self.size != self.crop_size:
            img = cv2.resize(img, (self.size, self.size), interpolation=cv2.INTER_AREA)
            ref = cv2.resize(ref, (self.size, self.size), interpolation=cv2.INTER_AREA)
        # as at inference (FaceDriver.mask): paint where this frame's jaw is and where another frame's jaw was
        f_ref = int(sh["frame"][ref_i])
        mask = np.minimum(self.geometry.mask(meta["identity"], meta["expr"][f], P, self.size),
                          self.geometry.mask(meta["identity"], meta["expr"][f_ref], P, self.size))
        teeth = teeth_mask(sh["landmarks"][i] * s, self.size)
        return {"image": img, "reference": ref, "mask": mask, "teeth": teeth * (1 - mask),
                "guide": self.geometry.guide(meta["identity"], meta["expr"][f], P, self.size),
                "coeffs": coeff_vector(meta["identity"], meta["expr"][f], meta["pose"][f])}

    def batch(self, n: int) -> dict:
        cid, name, keep = self.items[self.rng.integers(len(self.items))]
        out = []
        for _ in range(n):
            i, r = self.rng.choice(keep, 2, replace=False)
            out.append(self.sample(cid, name, int(i), int(r)))
        return {k: np.stack([o[k] for o in out]) for k in out[0]}


def to_tensors(batch: dict, device) -> dict:
    import torch

    t = {}
    for k in ("image", "reference"):
        t[k] = torch.from_numpy(batch[k]).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1
    for k in ("mask", "teeth", "guide"):
        t[k] = torch.from_numpy(batch[k]).to(device)[:, None].float()
    t["coeffs"] = torch.from_numpy(batch["coeffs"]).to(device).float()
    return t


def to_uint8(x) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8."""
    return ((x.detach().float().cpu().permute(0, 2, 3, 1).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)


def sample_grid(t: dict, out) -> np.ndarray:
    """Rows: masked source (with the lip guide drawn in) | output | ground truth | reference, one column per sample."""
    cols = []
    masked = to_uint8(t["image"] * t["mask"] + (t["mask"] - 1) + (1 - t["mask"]) * t["guide"])
    for parts in zip(masked, to_uint8(out), to_uint8(t["image"]), to_uint8(t["reference"])):
        cols.append(np.concatenate(parts, axis=0))
    return np.concatenate(cols, axis=1)


def _state_tensors(prefix: str, opt) -> dict:
    import torch

    out = {}
    for idx, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            out[f"{prefix}.{idx}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    return out


def _load_opt(opt, prefix: str, tensors: dict) -> None:
    sd = opt.state_dict()
    state = {}
    for key, v in tensors.items():
        if key.startswith(prefix + "."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    sd["state"] = state
    opt.load_state_dict(sd)


class Trainer:
    def __init__(self, dims, data: RendererDataset, out, lr: float = 2e-4, vgg19=None, device="cpu", log=print):
        import torch

        from realtalk_bridge.nets.renderer import PatchDiscriminator, PerceptualLoss, Renderer

        self.dims, self.data, self.out, self.device, self.log = dims, data, Path(out), device, log
        self.G = Renderer(dims).to(device)
        self.D = PatchDiscriminator(width=max(16, min(64, dims.channels[0]))).to(device)
        self.perceptual = PerceptualLoss(vgg19).to(device)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=lr, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=lr, betas=(0.5, 0.999))
        self.step = 0
        log(f"renderer: {sum(p.numel() for p in self.G.parameters()) / 1e6:.2f} M parameters; "
            f"perceptual loss: {self.perceptual.kind}")

    def train_step(self, batch: dict) -> dict:
        import torch
        import torch.nn.functional as F

        t = to_tensors(batch, self.device)
        fake = self.G(t["image"], t["mask"], t["reference"], t["coeffs"], t["guide"])
        # discriminator
        d_real = self.D(t["image"])
        d_fake = self.D(fake.detach())
        loss_d = (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
                  + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        # generator
        d_gen = self.D(fake)
        losses = {
            "l1": F.l1_loss(fake, t["image"]),
            "perceptual": self.perceptual(fake, t["image"]),
            "adversarial": F.binary_cross_entropy_with_logits(d_gen, torch.ones_like(d_gen)),
            "teeth": (t["teeth"] * (fake - t["image"]).abs()).sum() / (3 * t["teeth"].sum() + 1.0),
        }
        total = sum(LAMBDA[k] * v for k, v in losses.items())
        self.opt_g.zero_grad(set_to_none=True)
        total.backward()
        self.opt_g.step()
        self.step += 1
        self._last = (t, fake)
        return {"step": self.step, "total": total.item(), "d": loss_d.item(), **{k: v.item() for k, v in losses.items()}}

    def save(self) -> Path:
        from safetensors.torch import save_file

        from realtalk_bridge.nets.renderer import save_renderer

        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / "renderer.safetensors"
        save_renderer(path, self.G, {"step": self.step, "perceptual": self.perceptual.kind})
        state = {f"D.{k}": v.detach().contiguous() for k, v in self.D.state_dict().items()}
        state.update(_state_tensors("optG", self.opt_g))
        state.update(_state_tensors("optD", self.opt_d))
        save_file({k: v.contiguous() for k, v in state.items()}, str(self.out / "train_state.safetensors"),
                  metadata={"step": str(self.step)})
        return path

    def resume(self) -> None:
        from safetensors.torch import load_file

        from realtalk_bridge.nets.renderer import load_renderer

        G, meta = load_renderer(self.out / "renderer.safetensors")
        if G.dims != self.dims:
            raise ValueError(f"cannot resume: checkpoint dims {G.dims} differ from {self.dims}")
        self.G.load_state_dict(G.state_dict())
        st = load_file(str(self.out / "train_state.safetensors"))
        self.D.load_state_dict({k[2:]: v for k, v in st.items() if k.startswith("D.")})
        _load_opt(self.opt_g, "optG", st)
        _load_opt(self.opt_d, "optD", st)
        self.step = int(meta.get("step", 0))
        self.log(f"resumed at step {self.step}")

    def write_sample(self) -> Path:
        import cv2

        t, fake = self._last
        path = self.out / "samples" / f"step_{self.step:07d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), cv2.cvtColor(_grid4(t, fake), cv2.COLOR_RGB2BGR))
        return path


def _grid4(t, fake):
    k = min(4, fake.shape[0])
    return sample_grid({n: v[:k] for n, v in t.items()}, fake[:k])


def plot_metrics(metrics_path: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    steps = [r["step"] for r in rows]
    for k in ("total", "l1", "perceptual", "teeth", "adversarial", "d"):
        ax.plot(steps, [r[k] for r in rows], label=k)
    ax.set_xlabel("step")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("renderer training losses")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def run(args) -> int:
    import torch

    from realtalk_bridge.nets.renderer import make_dims

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        frames = parse_range(args.frames)
        guide = False if args.no_guide else None
        base = make_dims(args.config, image_size=args.image_size, guide=guide)
        if base.image_size % 2 ** len(base.channels):
            raise ValueError(f"--image-size must be a multiple of {2 ** len(base.channels)}")
        data = RendererDataset(args.data, base.image_size, frames, seed=args.seed)
        dims = make_dims(args.config, n_id=data.n_id, image_size=args.image_size, guide=guide)
    except (ValueError, RuntimeError) as exc:
        print(f"train renderer: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(dims, data, out, lr=args.lr, vgg19=args.vgg19, device=device,
                      log=lambda s: print(s, file=sys.stderr))
    if args.resume:
        if not (out / "renderer.safetensors").is_file():
            print(f"train renderer: nothing to resume in {out}", file=sys.stderr)
            return 2
        trainer.resume()
    metrics = out / "metrics.jsonl"
    from tqdm import tqdm

    # Ctrl-C: finish the step in flight, then checkpoint (a second Ctrl-C aborts at once)
    stop = {"asked": False}

    def on_sigint(signum, frame):
        if stop["asked"]:
            raise KeyboardInterrupt
        stop["asked"] = True

    previous = signal.signal(signal.SIGINT, on_sigint)
    t0 = time.time()
    try:
        with open(metrics, "a") as log, tqdm(total=args.steps, initial=trainer.step, desc="train renderer",
                                             disable=args.quiet) as bar:
            while trainer.step < args.steps and not stop["asked"]:
                m = trainer.train_step(data.batch(args.batch))
                m["time"] = round(time.time() - t0, 2)
                log.write(json.dumps(m) + "\n")
                log.flush()
                bar.update(1)
                bar.set_postfix(loss=f"{m['total']:.3f}", l1=f"{m['l1']:.3f}")
                if trainer.step % args.sample_every == 0:
                    trainer.write_sample()
                if trainer.step % args.save_every == 0:
                    trainer.save()
                    plot_metrics(metrics, out / "loss.png")
    finally:
        signal.signal(signal.SIGINT, previous)
    if getattr(trainer, "_last", None) is not None:
        trainer.write_sample()
    path = trainer.save()
    plot_metrics(metrics, out / "loss.png")
    if stop["asked"]:
        print(f"train renderer: stopped by Ctrl-C at step {trainer.step}; checkpoint {path} "
              f"(continue with --resume)", file=sys.stderr)
        return 130
    print(f"train renderer: {trainer.step} steps -> {path}")
    return 0
