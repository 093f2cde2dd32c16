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
