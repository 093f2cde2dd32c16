"""A2E network: shapes, front-ends, loss (MSE + vertex), checkpoints, overfitting a small batch."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from realtalk_bridge.nets.a2e import (A2E, A2EDims, a2e_loss, count_params, dims_for, load_checkpoint,  # noqa: E402
                                      mouth_basis, read_checkpoint_meta, save_checkpoint)
from realtalk_bridge.nets.audio_frontend import LogMelFrontend, dft_kernels  # noqa: E402
from realtalk_bridge.train.a2e import fit, sample_batch, synth_clip  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_forward_shapes_and_batch_independence():
    dims = dims_for("tiny")
    m = A2E(dims).eval()
    a = torch.randn(3, dims.window_samples) * 0.1
    i = torch.randn(3, dims.n_id)
    h = torch.randn(3, dims.n_hist, dims.n_expr)
    with torch.no_grad():
        y = m(a, i, h)
        y1 = m(a[1:2], i[1:2], h[1:2])
    assert y.shape == (3, dims.n_frames, dims.n_expr)
    torch.testing.assert_close(y[1:2], y1, atol=1e-5, rtol=0)
    # the T zero queries are told apart by the positional encoding: frames differ
    assert (y[0, 0] - y[0, 5]).abs().max() > 0


def test_every_input_matters():
    dims = dims_for("tiny")
    m = A2E(dims).eval()
    g = torch.Generator().manual_seed(1)
    a, i, h = torch.randn(1, dims.window_samples, generator=g), torch.randn(1, dims.n_id, generator=g), torch.randn(1, dims.n_hist, dims.n_expr, generator=g)
    with torch.no_grad():
        y = m(a, i, h)
        assert (m(a * 0, i, h) - y).abs().max() > 1e-4
        assert (m(a, i * 0, h) - y).abs().max() > 1e-4
        assert (m(a, i, h * 0) - y).abs().max() > 1e-4


def test_dims_overrides_are_typed_and_checked():
    from realtalk_bridge.nets.a2e import parse_overrides

    assert parse_overrides(["d_model=96", "frontend=hubert", "dropout=0.2"]) == {"d_model": 96, "frontend": "hubert", "dropout": 0.2}
    for bad in (["nope=1"], ["d_model"], ["d_model=abc"], ["hubert_config=1"]):
        with pytest.raises(ValueError):
            parse_overrides(bad)


def test_dims_validation_and_configs():
    with pytest.raises(ValueError, match="2 \\* n_frames"):
        A2EDims(n_audio=30)
    with pytest.raises(ValueError):
        A2EDims(d_model=130, n_head=4)
    with pytest.raises(ValueError, match="unknown config"):
        dims_for("huge")
    d = dims_for("default")
    assert (d.n_hist, d.n_frames, d.n_audio) == (16, 16, 32)  # the paper's N, T, l
    assert d.window_samples == 10240


def test_logmel_stft_matches_torch_stft():
    fe = LogMelFrontend(n_mels=40, n_fft=400, out_dim=16)
    x = torch.randn(2, 3200)
    spec = torch.nn.functional.conv1d(torch.nn.functional.pad(x[:, None], (40, 40)), fe.dft, stride=320)
    ref = torch.stft(torch.nn.functional.pad(x, (40, 40)), 400, hop_length=320, window=torch.hann_window(400),
                     center=False, return_complex=True)
    torch.testing.assert_close(spec[:, :201], ref.real, atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(spec[:, 201:], ref.imag, atol=1e-3, rtol=1e-4)
    assert fe(x).shape == (2, 10, 16)
    assert dft_kernels(400).shape == (402, 1, 400)


def test_hubert_frontend_gives_50hz_tokens():
    pytest.importorskip("transformers")
    dims = A2EDims(frontend="hubert", d_model=32, n_head=2, n_enc=1, n_dec=1, d_ff=64, n_hist=4, n_id=8)
    m = A2E(dims).eval()
    assert dims.hubert_config is not None  # saved in the checkpoint so the model can be rebuilt
    with torch.no_grad():
        tok = m.frontend(torch.randn(1, dims.window_samples))
        y = m(torch.randn(1, dims.window_samples), torch.randn(1, 8), torch.randn(1, 4, 52))
    assert tok.shape == (1, 32, 32) and y.shape == (1, 16, 52)


def test_vertex_loss_matches_explicit_vertices():
    rng = np.random.default_rng(0)
    V, E, K = 30, 52, 5
    mean, id_basis, exp_basis = rng.normal(size=(V, 3)), rng.normal(size=(V * 3, K)), rng.normal(size=(V * 3, E))
    mouth = np.array([2, 5, 7, 11])
    alpha = rng.normal(size=K)
    beta, beta_hat = rng.normal(size=(2, 4, E)), rng.normal(size=(2, 4, E))
    R = np.linalg.qr(rng.normal(size=(3, 3)))[0]  # a rigid pose cancels too

    def verts(b):
        v = mean + (id_basis @ alpha + exp_basis @ b).reshape(V, 3)
        return (v @ R.T + 1.5)[mouth]

    explicit = np.mean([[np.sum((verts(beta[i, t]) - verts(beta_hat[i, t])) ** 2) for t in range(4)] for i in range(2)])
    mb = torch.tensor(mouth_basis(exp_basis, mouth))
    total, parts = a2e_loss(torch.tensor(beta_hat, dtype=torch.float32), torch.tensor(beta, dtype=torch.float32), mb)
    mse = np.mean(np.sum((beta - beta_hat) ** 2, -1))
    assert parts["vertex"] == pytest.approx(explicit, rel=1e-4)
    assert parts["mse"] == pytest.approx(mse, rel=1e-5)
    assert float(total) == pytest.approx(mse + 0.1 * explicit, rel=1e-4)
    only_mse, p2 = a2e_loss(torch.tensor(beta_hat, dtype=torch.float32), torch.tensor(beta, dtype=torch.float32))
    assert "vertex" not in p2 and float(only_mse) == pytest.approx(mse, rel=1e-5)


def test_tiny_model_overfits_a_small_batch():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    dims = dims_for("tiny")
    names = [f"c{i}" for i in range(52)]
    names[17] = "jawOpen"
    names[19] = "mouthFunnel"
    clips = [synth_clip(rng, 3.0, names, dims.n_id, cid=f"c{i}") for i in range(2)]
    batch = sample_batch(clips, dims, 8, rng)
    mb = np.asarray(rng.normal(size=(12, 52)) * 0.2, np.float32)
    losses = []
    m = A2E(dims)
    fit(m, lambda step: batch, 150, lr=3e-3, mouth_b=mb, log=lambda s, loss, parts, lr: losses.append(loss))
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])


@pytest.mark.parametrize("config", ["tiny", "hubert"])
def test_checkpoint_roundtrip(tmp_path, config):
    if config == "hubert":
        pytest.importorskip("transformers")
        # the HuBERT config travels inside the checkpoint: the model is rebuilt from it alone
        dims = dims_for("hubert", d_model=32, n_head=2, n_enc=1, n_dec=1, d_ff=64, n_hist=4, n_id=8)
    else:
        dims = dims_for("tiny")
    m = A2E(dims).eval()
    p = tmp_path / "a.safetensors"
    save_checkpoint(p, m, [f"n{i}" for i in range(52)], "arkit52", extra={"step": 7})
    meta = read_checkpoint_meta(p)
    assert meta["dims"]["d_model"] == dims.d_model and meta["step"] == 7 and meta["layout"] == "arkit52"
    if config == "hubert":
        assert meta["dims"]["hubert_config"]["hidden_size"] == 64
    m2, meta2 = load_checkpoint(p)
    x = (torch.randn(1, dims.window_samples), torch.randn(1, dims.n_id), torch.randn(1, dims.n_hist, 52))
    with torch.no_grad():
        torch.testing.assert_close(m(*x), m2(*x))
    assert count_params(m2) == count_params(m)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 16)
    with pytest.raises(ValueError):
        load_checkpoint(bad)


def test_vertex_loss_with_the_shipped_face_model():
    # the real ARKit face model (face branch): eq. 4 through FaceModel.vertices with identity and pose
    fm_mod = pytest.importorskip("realtalk_bridge.face.face_model")
    try:
        fm = fm_mod.load_face_model("arkit")
    except (FileNotFoundError, ValueError) as exc:
        pytest.skip(f"shipped face model not available: {exc}")
    from realtalk_bridge.face.arkit import ARKIT_NAMES
    from realtalk_bridge.train.a2e import mouth_basis_for

    mb = mouth_basis_for("arkit", list(ARKIT_NAMES))
    mouth = fm.regions["mouth"]
    assert mb.shape == (3 * len(mouth), 52)
    rng = np.random.default_rng(3)
    alpha = rng.normal(size=fm.id_basis.shape[1])
    pose = np.array([0.1, -0.2, 0.05, 1.0, 2.0, -30.0])
    beta, beta_hat = rng.uniform(0, 1, size=(2, 3, 52))
    explicit = np.mean([np.sum((fm.vertices(alpha, beta[t], pose)[mouth] - fm.vertices(alpha, beta_hat[t], pose)[mouth]) ** 2)
                        for t in range(3)])
    _, parts = a2e_loss(torch.tensor(beta_hat[None], dtype=torch.float32), torch.tensor(beta[None], dtype=torch.float32),
                        torch.tensor(mb))
    assert parts["vertex"] == pytest.approx(explicit, rel=1e-3)
    # jawOpen moves the mouth, eyeBlinkLeft does not
    assert np.abs(mb[:, ARKIT_NAMES.index("jawOpen")]).max() > 0.1
    assert np.abs(mb[:, ARKIT_NAMES.index("eyeBlinkLeft")]).max() < 1e-6
