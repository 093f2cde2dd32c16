"""The expression-to-face renderer (RealTalk section 3.2): shared encoder, FIA decoder, patch discriminator.

Inputs are 256x256 crops in [-1, 1]:
  source    (B, 3, H, W)  the current frame, masked inside by the learnable mask (eq. 5)
  mask      (B, 1, H, W)  1 = keep the source pixel, 0 = the network paints it (eq. 8)
  reference (B, 3, H, W)  one unmasked frame of the same person (the identity reference)
  coeffs    (B, C)        [identity alpha, expression beta (ARKit-52), pose rho (6)]
  guide     (B, 1, H, W)  (dims.guide only) the face model's lips (0.5) and mouth opening (1) for the expression
                          to render, projected with the frame's camera: a spatial form of beta, fed with the source
Output: (B, 3, H, W) = mask * source + (1 - mask) * decoder output (eq. 8).

Training only: runtime inference goes through the ONNX export (runtime/export_renderer.py).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class RendererDims:
    image_size: int = 256
    channels: tuple[int, ...] = (64, 128, 256, 512)  # encoder stage widths (d = len(channels))
    stem: int = 32  # full-resolution stem width
    blocks: int = 2  # residual blocks per encoder stage and per FIA module
    n_id: int = 16  # identity coefficients (the face model's K_id)
    n_exp: int = 52  # expression coefficients (ARKit-52)
    n_pose: int = 6  # (rx, ry, rz, tx, ty, tz)
    mlp_hidden: int = 256  # the FIA's 3-layer coefficient MLP
    attn_scales: tuple[int, ...] = (8, 16)  # cross-attention at 1/8 and 1/16 (paper, section 3.2)
    heads: int = 4
    guide: bool = False  # a 5th encoder input channel: the projected lip guide (checkpoints before it: False)

    @property
    def n_coeffs(self) -> int:
        return self.n_id + self.n_exp + self.n_pose

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "RendererDims":
        raw = json.loads(text)
        known = {f for f in cls.__dataclass_fields__}
        raw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in raw.items() if k in known}
        return cls(**raw)


# `paper` lands within 10% of Table 7's 69.24 M parameters (generator only); `lite` runs on CPUs.
CONFIGS: dict[str, RendererDims] = {
    "paper": RendererDims(channels=(96, 192, 384, 768), stem=32, blocks=2, mlp_hidden=512, heads=8, guide=True),
    "lite": RendererDims(channels=(24, 48, 96, 160), stem=16, blocks=2, mlp_hidden=128, heads=4, guide=True),
    "tiny": RendererDims(image_size=64, channels=(8, 16, 24, 32), stem=8, blocks=1, mlp_hidden=32, heads=2, guide=True),
}


def make_dims(config: str, **overrides) -> RendererDims:
    if config not in CONFIGS:
        raise ValueError(f"unknown renderer config {config!r}; choose from {sorted(CONFIGS)}")
    d = asdict(CONFIGS[config])
    d.update({k: v for k, v in overrides.items() if v is not None})
    return RendererDims(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})


class ResBlock(nn.Module):
    """conv-act-conv with a skip; `stride=2` halves the resolution (first block of an encoder stage)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.skip = None if (c_in == c_out and stride == 1) else nn.Conv2d(c_in, c_out, 1, stride)

    def forward(self, x):
        h = self.conv2(F.leaky_relu(self.conv1(F.leaky_relu(x, 0.2)), 0.2))
        return h + (x if self.skip is None else self.skip(x))


class AdaIN(nn.Module):
    """Instance-normalise, then scale/shift per channel from the coefficient embedding."""

    def __init__(self, channels: int, embed: int):
        super().__init__()
        self.affine = nn.Linear(embed, 2 * channels)
        nn.init.zeros_(self.affine.weight)
        nn.init.zeros_(self.affine.bias)

    def forward(self, x, e):
        gamma, beta = self.affine(e)[:, :, None, None].chunk(2, dim=1)
        mu = x.mean(dim=(2, 3), keepdim=True)
        sd = (x.var(dim=(2, 3), keepdim=True, unbiased=False) + 1e-5).sqrt()
        return (x - mu) / sd * (1 + gamma) + beta


class CrossAttention(nn.Module):
    """Queries from the current features, keys/values from the reference features of the same scale."""

    def __init__(self, channels: int, heads: int):
        super().__init__()
        self.heads = heads
        self.scale = 1.0 / math.sqrt(channels // heads)
        self.norm_q = nn.GroupNorm(1, channels)
        self.norm_kv = nn.GroupNorm(1, channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.kv = nn.Conv2d(channels, 2 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x, ref):
        b, c, h, w = x.shape
        hd = c // self.heads
        q = self.q(self.norm_q(x)).reshape(b, self.heads, hd, h * w).transpose(2, 3)  # (b, H, n, hd)
        k, v = self.kv(self.norm_kv(ref)).chunk(2, dim=1)
        k = k.reshape(b, self.heads, hd, -1)  # (b, H, hd, m)
        v = v.reshape(b, self.heads, hd, -1).transpose(2, 3)  # (b, H, m, hd)
        att = torch.softmax(torch.matmul(q, k) * self.scale, dim=-1)
        y = torch.matmul(att, v).transpose(2, 3).reshape(b, c, h, w)
        return x + self.out(y)


class FIA(nn.Module):
    """Facial Identity Alignment module (eq. 7): upsample -> AdaIN(coeffs) -> residual blocks -> align to reference.

    At the attention scales the reference is aligned by cross-attention; at the finer scales (where attention over
    all pixels would cost too much) the reference and the masked source's encoder features are fused by a 1x1 conv.
    """

    def __init__(self, c_in: int, c_out: int, embed: int, blocks: int, attention: bool, heads: int,
                 upsample: bool = True):
        super().__init__()
        self.upsample = upsample
        self.up = nn.Conv2d(c_in, c_out, 3, 1, 1)
        self.adain = AdaIN(c_out, embed)
        self.blocks = nn.Sequential(*[ResBlock(c_out, c_out) for _ in range(blocks)])
        self.attention = CrossAttention(c_out, heads) if attention else None
        self.fuse = None if attention else nn.Conv2d(3 * c_out, c_out, 1)

    def forward(self, x, e, ref, skip):
        if self.upsample:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        x = self.blocks(self.adain(self.up(x), e))
        if self.attention is not None:
            return self.attention(x + skip, ref)
        return x + self.fuse(torch.cat([x, skip, ref], dim=1))


class Renderer(nn.Module):
    def __init__(self, dims: RendererDims):
        super().__init__()
        self.dims = dims
        ch = dims.channels
        d = len(ch)
        # source carries its mask as a 4th channel (and the lip guide as a 5th); the reference gets an all-ones
        # mask (and an empty guide): both go through the same shared encoder
        self.stem = nn.Conv2d(5 if dims.guide else 4, dims.stem, 3, 1, 1)
        stages, c_prev = [], dims.stem
        for c in ch:
            stages.append(nn.Sequential(ResBlock(c_prev, c, stride=2), *[ResBlock(c, c) for _ in range(dims.blocks - 1)]))
            c_prev = c
        self.encoder = nn.ModuleList(stages)
        embed = dims.mlp_hidden
        self.mlp = nn.Sequential(
            nn.Linear(dims.n_coeffs, embed), nn.LeakyReLU(0.2),
            nn.Linear(embed, embed), nn.LeakyReLU(0.2),
            nn.Linear(embed, embed),
        )
        # decoder: one FIA at the bottleneck (1/2^d, no upsampling), then one per upsampling step back to full size
        widths = list(ch[::-1]) + [dims.stem]  # feature widths at 1/2^d ... 1/1
        self.decoder = nn.ModuleList()
        for i in range(d + 1):
            scale = 2 ** (d - i)
            c_in = widths[max(i - 1, 0)]
            self.decoder.append(FIA(c_in, widths[i], embed, dims.blocks, scale in dims.attn_scales, dims.heads,
                                    upsample=i > 0))
        self.to_rgb = nn.Conv2d(dims.stem, 3, 3, 1, 1)

    def encode(self, x):
        feats = [self.stem(x)]
        for stage in self.encoder:
            feats.append(stage(feats[-1]))
        return feats  # resolutions 1/1, 1/2, ..., 1/2^d

    def forward(self, source, mask, reference, coeffs, guide=None):
        b = source.shape[0]
        src = [source * mask, mask]
        ref = [reference, torch.ones_like(mask)]
        if self.dims.guide:
            if guide is None:  # no spatial cue: the coefficients alone (an all-zero guide)
                guide = torch.zeros_like(mask)
            src.append(guide)
            ref.append(torch.zeros_like(guide))
        src, ref = torch.cat(src, dim=1), torch.cat(ref, dim=1)
        feats = self.encode(torch.cat([src, ref], dim=0))  # eq. 6: one batch through the shared encoder
        e = self.mlp(coeffs)
        x = feats[-1][:b]
        for i, fia in enumerate(self.decoder):
            f = feats[len(feats) - 1 - i]
            x = fia(x, e, f[b:], f[:b])
        out = torch.tanh(self.to_rgb(F.leaky_relu(x, 0.2)))
        return mask * source + (1 - mask) * out  # eq. 8


class PatchDiscriminator(nn.Module):
    """PatchGAN: one real/fake logit per overlapping patch."""

    def __init__(self, width: int = 64, layers: int = 3):
        super().__init__()
        mods, c = [nn.Conv2d(3, width, 4, 2, 1), nn.LeakyReLU(0.2)], width
        for i in range(1, layers):
            c_next = min(width * 2 ** i, 512)
            mods += [nn.Conv2d(c, c_next, 4, 2, 1), nn.InstanceNorm2d(c_next, affine=True), nn.LeakyReLU(0.2)]
            c = c_next
        mods += [nn.Conv2d(c, c, 4, 1, 1), nn.InstanceNorm2d(c, affine=True), nn.LeakyReLU(0.2), nn.Conv2d(c, 1, 4, 1, 1)]
        self.net = nn.Sequential(*mods)

    def forward(self, x):
        return self.net(x)


# --- perceptual backbone ---------------------------------------------------------------------------------------

# torchvision's vgg19().features layout, so its state dict (saved as safetensors) loads by key name
_VGG19_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512]
_VGG19_TAPS = (1, 6, 11, 20, 29)  # relu1_1, relu2_1, relu3_1, relu4_1, relu5_1


_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class VGG19Features(nn.Module):
    def __init__(self):
        super().__init__()
        layers, c = [], 3
        for v in _VGG19_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, v, 3, 1, 1), nn.ReLU(inplace=False)]
                c = v
        self.features = nn.Sequential(*layers[: _VGG19_TAPS[-1] + 1])
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x):  # x in [-1, 1]
        h = ((x + 1) / 2 - self.mean) / self.std
        out = []
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in _VGG19_TAPS:
                out.append(h)
        return out


def load_vgg19(path) -> VGG19Features:
    """VGG19 conv weights from a safetensors file with torchvision key names (`features.0.weight`, ...)."""
    from safetensors.torch import load_file

    with torch.device("meta"):  # no random init of 20 M weights that are overwritten anyway
        net = VGG19Features()
    try:
        state = load_file(str(path))
    except Exception as exc:
        raise ValueError(f"cannot read VGG19 weights {path}: {exc}") from exc
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    want = {k for k in net.state_dict() if k.startswith("features.")}
    missing = sorted(want - set(state))
    if missing:
        raise ValueError(f"VGG19 weights {path} lack {len(missing)} tensors, e.g. {missing[:3]} "
                         "(expected torchvision vgg19().features key names)")
    net.load_state_dict({k: state[k].float() for k in want}, strict=False, assign=True)
    net.mean = torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1)
    net.std = torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1)
    return net.eval().requires_grad_(False)


class PerceptualLoss(nn.Module):
    """L2 of eq. 9: L1 between VGG19 features. Without weights: a documented fallback, multi-scale L1 on the image
    pyramid plus L1 on image gradients (keeps edges sharp; no learned features)."""

    def __init__(self, vgg_path=None):
        super().__init__()
        self.vgg = load_vgg19(vgg_path) if vgg_path else None
        self.kind = "vgg19" if self.vgg is not None else "fallback: multi-scale L1 + gradient L1 (no VGG19 weights)"

    def forward(self, x, y):
        if self.vgg is not None:
            return sum(F.l1_loss(a, b) for a, b in zip(self.vgg(x), self.vgg(y)))
        loss = x.new_zeros(())
        for _ in range(4):
            loss = loss + F.l1_loss(x, y)
            loss = loss + F.l1_loss(x[..., 1:, :] - x[..., :-1, :], y[..., 1:, :] - y[..., :-1, :])
            loss = loss + F.l1_loss(x[..., 1:] - x[..., :-1], y[..., 1:] - y[..., :-1])
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
        return loss


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- checkpoints (safetensors; the dims travel in the metadata) -------------------------------------------------

def save_renderer(path, model: Renderer, extra: dict | None = None) -> None:
    from safetensors.torch import save_file

    meta = {"kind": "realtalk-renderer", "dims": model.dims.to_json()}
    meta.update({k: str(v) for k, v in (extra or {}).items()})
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(path), metadata=meta)


def load_renderer(path, map_location: str = "cpu") -> tuple[Renderer, dict]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device=map_location) as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise ValueError(f"cannot read renderer checkpoint {path}: {exc}") from exc
    if meta.get("kind") != "realtalk-renderer" or "dims" not in meta:
        raise ValueError(f"{path} is not a renderer checkpoint (no 'dims' in its safetensors metadata)")
    model = Renderer(RendererDims.from_json(meta["dims"]))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"renderer checkpoint {path} does not match its dims: {exc}") from exc
    return model.eval(), meta
