"""ONNX export of the renderer, parity with PyTorch, the onnxruntime RendererRuntime, bench CLI."""
import json

import numpy as np
import pytest

import torch

from _renderer_synth import one_torch_thread


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    yield from one_torch_thread()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from realtalk_bridge.nets.renderer import Renderer, make_dims, save_renderer

    torch.manual_seed(0)
    m = Renderer(make_dims("tiny", n_id=14)).eval()
    for fia in m.decoder:  # non-trivial AdaIN so the coefficient path is exercised by the parity check
        torch.nn.init.normal_(fia.adain.affine.weight, std=0.3)
    d = tmp_path_factory.mktemp("tiny")
    save_renderer(d / "renderer.safetensors", m)
    return m, d


def test_export_cli_and_parity(tiny, capsys):
    from realtalk_bridge.cli import main
    from realtalk_bridge.runtime.export_renderer import parity

    m, d = tiny
    out = d / "renderer.onnx"
    assert main(["export", "renderer", str(d / "renderer.safetensors"), "--out", str(out)]) == 0
    assert "parity" not in capsys.readouterr().err
    assert parity(m, out, batch=3) < 1e-4


def test_runtime_uint8_interface_matches_torch(tiny):
    from realtalk_bridge.runtime.export_renderer import export_model
    from realtalk_bridge.runtime.renderer import RendererRuntime

    m, d = tiny
    path = export_model(m, d / "rt.onnx")
    rt = RendererRuntime(path)
    assert rt.size == 64 and rt.n_coeffs == 14 + 52 + 6 and rt.provider == "CPUExecutionProvider"
    rng = np.random.default_rng(0)
    src = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    ref = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    mask = np.ones((64, 64), np.float32)
    mask[32:] = 0
    c = rng.uniform(0, 1, rt.n_coeffs).astype(np.float32)
    guide = np.zeros((64, 64), np.float32)
    guide[40:48, 20:44], guide[42:46, 24:40] = 0.5, 1.0  # lips and a mouth opening
    assert rt.has_guide
    out = rt(src, mask, ref, c, guide)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert np.array_equal(out[:32], src[:32])
    with torch.no_grad():
        t = lambda x: torch.from_numpy(x).permute(2, 0, 1)[None].float() / 127.5 - 1
        want = m(t(src), torch.from_numpy(mask)[None, None], t(ref), torch.from_numpy(c)[None],
                 torch.from_numpy(guide)[None, None])
    want = ((want[0].permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255)
    assert np.abs(out.astype(int) - want).max() <= 1
    assert not np.array_equal(rt(src, mask, ref, c, np.zeros_like(guide)), out)  # the guide reaches the output
    batch = rt(np.stack([src, ref]), np.stack([mask, mask]), np.stack([ref, ref]), np.stack([c, c]), guide)
    assert batch.shape == (2, 64, 64, 3) and np.array_equal(batch[0], out)
    with pytest.raises(ValueError, match="guide"):
        rt(src, mask, ref, c)
    with pytest.raises(ValueError, match="coefficients"):
        rt(src, mask, ref, c[:10], guide)
    with pytest.raises(ValueError, match="64x64"):
        rt(np.zeros((32, 32, 3), np.uint8), mask, ref, c, guide)


def test_models_without_a_guide_export_and_run_with_four_inputs(tmp_path):
    """Checkpoints from before the lip guide (dims.guide false) keep the 4-input graph."""
    from realtalk_bridge.nets.renderer import Renderer, RendererDims, make_dims
    from realtalk_bridge.runtime.export_renderer import export_model, parity
    from realtalk_bridge.runtime.renderer import RendererRuntime

    d = make_dims("tiny", n_id=14, guide=False)
    assert RendererDims.from_json(d.to_json().replace(', "guide": false', "")) == d  # old metadata
    m = Renderer(d).eval()
    path = export_model(m, tmp_path / "old.onnx")
    rt = RendererRuntime(path)
    assert not rt.has_guide and parity(m, path) < 1e-4
    img = np.zeros((64, 64, 3), np.uint8)
    assert rt(img, np.ones((64, 64), np.float32), img, np.zeros(rt.n_coeffs, np.float32)).shape == (64, 64, 3)


def test_runtime_rejects_other_files(tmp_path):
    from realtalk_bridge.runtime.renderer import RendererRuntime

    with pytest.raises(ValueError, match="not found"):
        RendererRuntime(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="cannot load renderer model"):
        RendererRuntime(bad)


def test_bench_cli_writes_json_and_png(tmp_path):
    from realtalk_bridge.cli import main

    out = tmp_path / "bench.json"
    assert main(["bench", "renderer", "--config", "tiny", "--out", str(out), "--iters", "5", "--warmup", "1"]) == 0
    r = json.loads(out.read_text())
    for k in ("ms_per_frame_median", "fps", "params", "provider"):
        assert k in r
    assert r["provider"] == "CPUExecutionProvider" and r["params"] > 50_000 and len(r["times_ms"]) == 5
    assert r["fps"] == pytest.approx(1000 / r["ms_per_frame_median"], rel=0.01)
    assert out.with_suffix(".png").stat().st_size > 1000


def test_bench_cli_on_an_export_needs_no_torch_or_onnx(tiny, tmp_path):
    # a core install (onnxruntime only) benchmarks an exported model; the size comes from its metadata
    import os
    import subprocess
    import sys
    from pathlib import Path

    from realtalk_bridge.nets.renderer import count_params
    from realtalk_bridge.runtime.export_renderer import export_model
    from realtalk_bridge.runtime.renderer import RendererRuntime

    m, d = tiny
    path = export_model(m, tmp_path / "r.onnx")
    assert RendererRuntime(path).params == count_params(m)
    out = tmp_path / "bench.json"
    root = Path(__file__).resolve().parents[1]
    code = ("import importlib.abc, sys\n"
            "class B(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.partition('.')[0] in ('torch', 'onnx', 'cv2', 'mediapipe'):\n"
            "            raise ModuleNotFoundError(name, name=name)\n"
            "sys.meta_path.insert(0, B())\n"
            "from realtalk_bridge.cli import main\n"
            f"sys.exit(main(['bench', 'renderer', '--model', {str(path)!r}, '--out', {str(out)!r}, "
            "'--iters', '3', '--warmup', '1', '--threads', '1']))\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(root)})
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert res["params"] == count_params(m) and res["config"] == "model" and len(res["times_ms"]) == 3


def test_bench_cli_times_each_config_and_provider(tmp_path, capsys):
    import onnxruntime as ort

    from realtalk_bridge.cli import main

    out = tmp_path / "bench.json"
    assert main(["bench", "renderer", "--config", "tiny,tiny", "--image-size", "32", "--provider", "all",
                 "--out", str(out), "--iters", "3", "--warmup", "1", "--threads", "1"]) == 0
    r = json.loads(out.read_text())
    n_prov = len([p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()])
    assert len(r["runs"]) == 2 * n_prov and all(x["image_size"] == 32 and x["guide"] for x in r["runs"])
    assert r["ms_per_frame_median"] == r["runs"][0]["ms_per_frame_median"]
    assert "ms/frame" in capsys.readouterr().out
    if "CUDAExecutionProvider" not in ort.get_available_providers():  # asked for, absent: a clear error
        assert main(["bench", "renderer", "--config", "tiny", "--provider", "CUDAExecutionProvider",
                     "--out", str(out), "--iters", "2"]) == 2
        assert "not usable here" in capsys.readouterr().err
