"""The RealTalk audio-to-expression transformer (paper sec. 3.1), and its loss and checkpoints.

Inputs for one window: raw audio (l * 320 samples = l tokens at 50 Hz), the identity (shape)
coefficients alpha (n_id,) and N historical expressions beta_1..N (N, E). Audio tokens, one identity
token and N history tokens (l + N + 1) get a periodic positional encoding and go through N1
cross-modal self-attention layers (memory Z). T zero-initialised expression queries go through N2
temporal cross-attention layers against Z, and a linear decoder gives T frames of E coefficients
at 25 fps. Frame j of a window that starts at sample s is the face at time s / 16000 + j / 25.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from realtalk_bridge.nets.audio_frontend import HOP, make_frontend

CHECKPOINT_FORMAT = "realtalk-a2e/1"


@dataclass
class A2EDims:
    n_expr: int = 52        # E: expression coefficients (ARKit-52 by default)
    n_id: int = 32          # identity (shape) coefficients alpha
    n_audio: int = 32       # l: audio tokens per window (50 Hz)
    n_hist: int = 16        # N: historical expressions
    n_frames: int = 16      # T: predicted frames per window (25 fps)
    d_model: int = 128
    n_head: int = 4
    n_enc: int = 3          # N1 cross-modal self-attention layers
    n_dec: int = 2          # N2 temporal cross-attention layers
    d_ff: int = 256
    frontend: str = "mel"   # "mel", "hubert" or "whisper" (Whisper tiny.en features, nets/whisper.py)
    n_mels: int = 64
    n_fft: int = 400
    ppe_period: int = 32    # periodic positional encoding period (tokens)
    dropout: float = 0.1
    sample_rate: int = 16000
    fps: int = 25
    hubert_config: dict | None = field(default=None)  # transformers HubertConfig.to_dict() when frontend == "hubert"

    def __post_init__(self):
        if self.sample_rate != 16000 or self.fps != 25:
            raise ValueError("the A2E works at 16 kHz audio and 25 fps frames")
        if self.n_audio != 2 * self.n_frames:
            # 50 Hz tokens and 25 fps frames must span the same window
            raise ValueError(f"n_audio ({self.n_audio}) must be 2 * n_frames ({self.n_frames})")
        if self.d_model % self.n_head:
            raise ValueError("d_model must be divisible by n_head")

    @property
    def window_samples(self) -> int:
        return self.n_audio * HOP

    @property
    def frame_samples(self) -> int:
        return self.sample_rate // self.fps

    @classmethod
    def from_dict(cls, d: dict) -> "A2EDims":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


# Named configurations. "default" is what we ship and bench (<= 3 ms per step on 2 CPU cores);
# "tiny" trains in seconds for tests; "paper" is closer to the paper's HuBERT setting.
CONFIGS: dict[str, dict] = {
    "tiny": dict(d_model=32, n_head=2, n_enc=1, n_dec=1, d_ff=64, n_mels=24, n_hist=4, n_id=8, dropout=0.0),
    "default": dict(),  # 0.94 M params, ~1.0 ms per step on one core of the 2-core dev machine
    "paper": dict(frontend="hubert", d_model=256, n_head=4, n_enc=3, n_dec=3, d_ff=1024),
    # the default transformer on frozen, streamed Whisper tiny.en features (nets/whisper.py)
    "whisper": dict(frontend="whisper"),
    # the default transformer on a tiny HuBERT trained from scratch: the "learned front-end" choice
    "hubert": dict(frontend="hubert", hubert_config=dict(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, conv_dim=(32,) * 7,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, do_stable_layer_norm=True,
        feat_extract_norm="layer", mask_time_prob=0.0)),
}


def parse_overrides(items: list[str] | None) -> dict:
    """["d_model=96", "frontend=hubert"] -> {"d_model": 96, "frontend": "hubert"} (typed by A2EDims' fields)."""
    out: dict = {}
    fields = A2EDims.__dataclass_fields__
    for item in items or []:
        key, sep, val = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in fields or key == "hubert_config":
            raise ValueError(f"bad dims override {item!r}; use KEY=VALUE with KEY one of "
                             f"{', '.join(k for k in fields if k != 'hubert_config')}")
        default = getattr(A2EDims(), key)
        try:
            out[key] = type(default)(val)
        except ValueError as exc:
            raise ValueError(f"dims override {item!r}: {exc}") from exc
    return out


def dims_for(config: str, **overrides) -> A2EDims:
    if config not in CONFIGS:
        raise ValueError(f"unknown config {config!r}; choose from {sorted(CONFIGS)}")
    return A2EDims(**{**CONFIGS[config], **overrides})


def periodic_pe(n: int, d: int, period: int) -> torch.Tensor:
    """FaceFormer's periodic positional encoding: sinusoids of (position mod period)."""
    pos = (torch.arange(n) % period).float()[:, None]
    div = torch.exp(torch.arange(0, d, 2).float() * (-np.log(10000.0) / d))
    pe = torch.zeros(n, d)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)
    return pe


class MultiHeadAttention(nn.Module):
    # written out with matmuls (not nn.MultiheadAttention) so the ONNX graph is plain and fast
    def __init__(self, d: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.o = nn.Linear(d, d)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        m = ctx.shape[1]
        h = self.n_head
        q = self.q(x).view(b, n, h, d // h).transpose(1, 2)
        k, v = self.kv(ctx).view(b, m, 2, h, d // h).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-1, -2) * (d // h) ** -0.5, dim=-1)
        return self.o((att @ v).transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm transformer block; with `cross=True` a self-attention + cross-attention decoder block."""

    def __init__(self, d: int, n_head: int, d_ff: int, dropout: float, cross: bool):
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = MultiHeadAttention(d, n_head)
        self.cross = cross
        if cross:
            self.ln_x = nn.LayerNorm(d)
            self.xattn = MultiHeadAttention(d, n_head)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, d_ff), nn.GELU(), nn.Linear(d_ff, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mem: torch.Tensor | None = None) -> torch.Tensor:
        h = self.ln1(x)
        x = x + self.drop(self.attn(h, h))
        if self.cross:
            x = x + self.drop(self.xattn(self.ln_x(x), mem))
        return x + self.drop(self.mlp(self.ln2(x)))


class A2E(nn.Module):
    def __init__(self, dims: A2EDims, hubert_path: str | None = None):
        """`hubert_path`: a local transformers HuBERT folder to start from (frontend 'hubert' only)."""
        super().__init__()
        self.dims = dims
        d = dims.d_model
        self.frontend = make_frontend(dims.frontend, d, n_mels=dims.n_mels, n_fft=dims.n_fft,
                                      hubert_path=hubert_path, hubert_config=dims.hubert_config)
        if dims.frontend == "hubert":
            # the full config goes into checkpoints so the model can be rebuilt without the source
            dims.hubert_config = self.frontend.hubert.config.to_dict()
        # the paper's fully connected embeddings, one per modality
        self.audio_fc = nn.Linear(d, d)
        self.id_fc = nn.Sequential(nn.Linear(dims.n_id, d), nn.GELU(), nn.Linear(d, d))
        self.hist_fc = nn.Sequential(nn.Linear(dims.n_expr, d), nn.GELU(), nn.Linear(d, d))
        # which modality a token is (PPE alone repeats across modalities)
        self.type_emb = nn.Parameter(torch.zeros(3, d))
        n_tok = dims.n_audio + 1 + dims.n_hist
        self.register_buffer("pe_mem", periodic_pe(n_tok, d, dims.ppe_period), persistent=False)
        self.register_buffer("pe_query", periodic_pe(dims.n_frames, d, dims.ppe_period), persistent=False)
        self.encoder = nn.ModuleList([Block(d, dims.n_head, dims.d_ff, dims.dropout, cross=False) for _ in range(dims.n_enc)])
        self.ln_mem = nn.LayerNorm(d)
        self.decoder = nn.ModuleList([Block(d, dims.n_head, dims.d_ff, dims.dropout, cross=True) for _ in range(dims.n_dec)])
        self.ln_out = nn.LayerNorm(d)
        self.out = nn.Linear(d, dims.n_expr)

    def forward(self, audio: torch.Tensor, identity: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """audio (B, l*320), identity (B, n_id), history (B, N, E) -> (B, T, E).
        Front-end 'whisper': `audio` is the window's encoder features (B, l, 384) instead."""
        dims = self.dims
        w = self.audio_fc(self.frontend(audio)) + self.type_emb[0]
        a = self.id_fc(identity)[:, None, :] + self.type_emb[1]
        hst = self.hist_fc(history) + self.type_emb[2]
        z = torch.cat([w, a, hst], dim=1) + self.pe_mem
        for blk in self.encoder:
            z = blk(z)
        z = self.ln_mem(z)
        # T zero-initialised expression queries; only the positional encoding tells them apart
        q = torch.zeros(audio.shape[0], dims.n_frames, dims.d_model, dtype=audio.dtype, device=audio.device) + self.pe_query
        for blk in self.decoder:
            q = blk(q, z)
        return self.out(self.ln_out(q))


# ---------------------------------------------------------------------------------------------- loss

def mouth_basis(exp_basis: np.ndarray, mouth: np.ndarray) -> np.ndarray:
    """Rows of a (V*3, E) expression basis (x, y, z interleaved per vertex) for the mouth vertices -> (M*3, E)."""
    mouth = np.asarray(mouth, dtype=np.int64)
    rows = (mouth[:, None] * 3 + np.arange(3)[None, :]).reshape(-1)
    return np.asarray(exp_basis, dtype=np.float32)[rows]


def a2e_loss(pred: torch.Tensor, target: torch.Tensor, mouth_b: torch.Tensor | None = None,
             w_vertex: float = 0.1) -> tuple[torch.Tensor, dict[str, float]]:
    """Paper eq. 3-4: L = 1/T sum_t ||beta_t - beta^_t||^2 + 0.1 * 1/T sum_t ||V(beta_t) - V(beta^_t)||^2.

    V is linear in beta (mean + id_basis alpha + exp_basis beta, then a rigid pose), so the identity,
    the mean and the pose cancel in the difference: the vertex term only needs the mouth rows of
    exp_basis (`mouth_b`, (M*3, E)). Averaged over batch and frames, summed over coefficients / coordinates.
    """
    diff = pred - target
    mse = (diff * diff).sum(-1).mean()
    parts = {"mse": float(mse.detach())}
    if mouth_b is None:
        return mse, parts
    dv = diff @ mouth_b.T  # (B, T, M*3)
    vert = (dv * dv).sum(-1).mean()
    parts["vertex"] = float(vert.detach())
    return mse + w_vertex * vert, parts


# ---------------------------------------------------------------------------------------- checkpoints

def save_checkpoint(path: str | Path, model: A2E, names: list[str], layout: str, extra: dict | None = None) -> None:
    """safetensors with dims, names, layout (and anything in `extra`) as JSON in the metadata."""
    from safetensors.torch import save_file

    meta = {
        "format": CHECKPOINT_FORMAT,
        "dims": json.dumps(asdict(model.dims)),
        "names": json.dumps(list(names)),
        "layout": layout,
    }
    for k, v in (extra or {}).items():
        meta[k] = json.dumps(v)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(str(path) + ".tmp")
    save_file(state, str(tmp), metadata=meta)
    tmp.replace(path)  # never leave a half-written checkpoint behind


def read_checkpoint_meta(path: str | Path) -> dict:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
    except Exception as exc:
        raise ValueError(f"{path} is not a readable safetensors checkpoint: {exc}") from exc
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not an A2E checkpoint (format {meta.get('format')!r}, want {CHECKPOINT_FORMAT!r})")
    out = {"dims": json.loads(meta["dims"]), "names": json.loads(meta["names"]), "layout": meta["layout"]}
    for k, v in meta.items():
        if k not in ("format", "dims", "names", "layout"):
            out[k] = json.loads(v)
    return out


def load_checkpoint(path: str | Path) -> tuple[A2E, dict]:
    """-> (model in eval mode, metadata dict with dims / names / layout / extras)."""
    from safetensors.torch import load_file

    meta = read_checkpoint_meta(path)
    dims = A2EDims.from_dict(meta["dims"])
    model = A2E(dims)
    model.load_state_dict(load_file(str(path)))
    model.eval()
    return model, meta


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

