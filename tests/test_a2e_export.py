"""ONNX export: parity with PyTorch, metadata, CLI."""
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from realtalk_bridge.cli import main  # noqa: E402
from realtalk_bridge.nets.a2e import A2E, dims_for, save_checkpoint  # noqa: E402
from realtalk_bridge.runtime.a2e import A2ERuntime  # noqa: E402
from realtalk_bridge.runtime.export import META_KEY, export_onnx  # noqa: E402


@pytest.mark.parametrize("config", ["tiny", "default", "hubert-small"])
def test_export_parity_with_pytorch(tmp_path, config):
    torch.manual_seed(0)
    if config == "hubert-small":
        pytest.importorskip("transformers")
        dims = dims_for("hubert", d_model=32, n_head=2, n_enc=1, n_dec=1, d_ff=64, n_hist=4, n_id=8)
    else:
        dims = dims_for(config)
    m = A2E(dims).eval()
    out = tmp_path / "m.onnx"
    err = export_onnx(m, [f"n{i}" for i in range(52)], "arkit52", out)
    assert err <= 1e-4
    # an independent check on fresh inputs (batch 3: the batch axis is dynamic)
    rt = A2ERuntime(out)
    rng = np.random.default_rng(1)
    a = (rng.normal(size=(3, dims.window_samples)) * 0.2).astype(np.float32)
    i = rng.normal(size=(3, dims.n_id)).astype(np.float32)
    h = rng.normal(size=(3, dims.n_hist, 52)).astype(np.float32)
    with torch.no_grad():
        ref = m(torch.from_numpy(a), torch.from_numpy(i), torch.from_numpy(h)).numpy()
    assert np.abs(rt.run(a, i, h) - ref).max() <= 1e-4
    meta = json.loads(ort.InferenceSession(str(out)).get_modelmeta().custom_metadata_map[META_KEY])
    assert meta["layout"] == "arkit52" and meta["sample_rate"] == 16000 and meta["fps"] == 25
    assert meta["dims"]["n_frames"] == dims.n_frames and len(meta["names"]) == 52


def test_export_cli(tmp_path, capsys):
    dims = dims_for("tiny")
    m = A2E(dims)
    ckpt = tmp_path / "c.safetensors"
    names = [f"n{i}" for i in range(52)]
    hist = np.full((dims.n_hist, 52), 0.25, np.float32)
    save_checkpoint(ckpt, m, names, "arkit52", extra={"defaults": {"identity": [0.5] * dims.n_id, "history": hist.tolist()}})
    out = tmp_path / "x.onnx"
    assert main(["export", "a2e", str(ckpt), "--out", str(out)]) == 0
    rt = A2ERuntime(out)
    assert rt.names == names
    np.testing.assert_array_equal(rt.default_identity, np.full(dims.n_id, 0.5, np.float32))
    np.testing.assert_array_equal(rt.default_history, hist)
    assert main(["export", "a2e", str(tmp_path / "missing.safetensors"), "--out", str(out)]) == 1
    assert "no checkpoint" in capsys.readouterr().err


def test_export_int8_cli_keeps_metadata_and_refuses_twice(tmp_path, capsys):
    from realtalk_bridge.runtime.export import quantize_int8

    torch.manual_seed(0)
    dims = dims_for("tiny")
    ckpt = tmp_path / "c.safetensors"
    names = [f"n{i}" for i in range(52)]
    save_checkpoint(ckpt, A2E(dims), names, "arkit52")
    f32, q8 = tmp_path / "f.onnx", tmp_path / "q.onnx"
    assert main(["export", "a2e", str(ckpt), "--out", str(f32)]) == 0
    assert main(["export", "a2e", str(ckpt), "--out", str(q8), "--int8", "--int8-tolerance", "1"]) == 0
    assert "int8 vs float" in capsys.readouterr().out
    a, b = A2ERuntime(f32), A2ERuntime(q8)
    assert (a.precision, b.precision) == ("float32", "int8") and b.names == names and b.dims == a.dims
    with pytest.raises(ValueError, match="already int8"):
        quantize_int8(q8, tmp_path / "qq.onnx")
    with pytest.raises(ValueError, match="differs from the float one"):
        quantize_int8(f32, tmp_path / "q2.onnx", tolerance=0.0)


def test_shipped_model_is_int8_and_follows_its_float_checkpoint_on_speech():
    """models/a2e/default.onnx is `export a2e models/a2e/default.safetensors --int8`: on real speech its
    coefficients stay within the int8 tolerance of the float checkpoint's, and its jaw follows it (r > 0.98)."""
    from pathlib import Path

    from realtalk_bridge.audio import load_audio
    from realtalk_bridge.nets.a2e import load_checkpoint
    from realtalk_bridge.runtime.export import INT8_TOLERANCE

    root = Path(__file__).resolve().parents[1]
    onnx_path, ckpt = root / "models" / "a2e" / "default.onnx", root / "models" / "a2e" / "default.safetensors"
    if not (onnx_path.is_file() and ckpt.is_file()):
        pytest.skip("no shipped model")
    rt = A2ERuntime(onnx_path)
    assert rt.precision == "int8"
    model, _ = load_checkpoint(ckpt)
    x = load_audio(root / "examples" / "speech" / "hello.wav")
    W = rt.window_samples
    wins = np.stack([x[a:a + W] for a in range(0, len(x) - W, 1280)]).astype(np.float32)
    b = len(wins)
    ident = np.repeat(rt.default_identity[None], b, 0)
    hist = np.repeat(rt.default_history[None], b, 0)
    with torch.no_grad():
        ref = model.eval()(torch.from_numpy(wins), torch.from_numpy(ident), torch.from_numpy(hist)).numpy()
    got = rt.run(wins, ident, hist)
    assert np.abs(got - ref).max() <= 2 * INT8_TOLERANCE
    jaw = rt.names.index("jawOpen")
    assert np.corrcoef(got[..., jaw].ravel(), ref[..., jaw].ravel())[0, 1] > 0.98
