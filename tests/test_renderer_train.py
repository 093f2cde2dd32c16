"""Renderer training on a tiny synthetic clip: the loss falls (overfit), resume, the CLI's outputs."""
import json

import numpy as np
import pytest

import torch

from _renderer_synth import make_dataset, one_torch_thread


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    yield from one_torch_thread()


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("synth"), n_frames=24, size=64)


def test_dataset_batches(synth):
    from realtalk_bridge.train.renderer import RendererDataset

    data = RendererDataset(synth, 64)
    b = data.batch(3)
    assert b["image"].shape == (3, 64, 64, 3) and b["image"].dtype == np.uint8
    assert b["mask"].shape == (3, 64, 64) and 0.05 < (b["mask"] == 0).mean() < 0.6
    assert b["coeffs"].shape == (3, data.n_id + 52 + 6)
    assert (b["teeth"] <= 1 - b["mask"]).all()  # the teeth region lies inside the painted region
    # the lip guide: lips (0.5) and mouth opening (1) of the frame's own expression, inside the painted region
    assert b["guide"].shape == (3, 64, 64) and b["guide"].max() > 0.9
    assert (b["guide"][b["mask"] == 1] < 0.05).mean() > 0.99
    held = RendererDataset(synth, 64, frames=(0.0, 0.5))
    assert len(held) == 12
    with pytest.raises(ValueError, match="no face frames"):
        RendererDataset(synth, 64, frames=(0.99, 1.0))


def test_tiny_renderer_overfits_a_synthetic_clip(synth, tmp_path):
    from realtalk_bridge.nets.renderer import make_dims
    from realtalk_bridge.train.renderer import RendererDataset, Trainer

    torch.manual_seed(0)
    torch.set_num_threads(1)
    data = RendererDataset(synth, 64, seed=0)
    trainer = Trainer(make_dims("tiny", n_id=data.n_id), data, tmp_path, lr=2e-3, log=lambda s: None)
    fixed = data.batch(4)  # overfit one batch: the loss must fall clearly
    hist = [trainer.train_step(fixed) for _ in range(80)]
    first = np.mean([h["l1"] + h["perceptual"] for h in hist[:3]])
    last = np.mean([h["l1"] + h["perceptual"] for h in hist[-5:]])
    assert last < 0.5 * first, (first, last)
    # the painted region now resembles the ground truth far better than at the start
    assert hist[-1]["teeth"] < hist[0]["teeth"]


def test_resume_restores_generator_discriminator_and_optimisers(synth, tmp_path):
    from realtalk_bridge.nets.renderer import make_dims
    from realtalk_bridge.train.renderer import RendererDataset, Trainer

    torch.manual_seed(0)
    data = RendererDataset(synth, 64, seed=0)
    dims = make_dims("tiny", n_id=data.n_id)
    a = Trainer(dims, data, tmp_path, log=lambda s: None)
    for _ in range(3):
        a.train_step(data.batch(2))
    a.save()
    b = Trainer(dims, data, tmp_path, log=lambda s: None)
    b.resume()
    assert b.step == 3
    for p, q in zip(a.G.parameters(), b.G.parameters()):
        assert torch.equal(p, q)
    for p, q in zip(a.D.parameters(), b.D.parameters()):
        assert torch.equal(p, q)
    sa, sb = a.opt_g.state_dict()["state"], b.opt_g.state_dict()["state"]
    assert sa.keys() == sb.keys() and torch.equal(sa[0]["exp_avg"], sb[0]["exp_avg"])
    b.train_step(data.batch(2))
    assert b.step == 4


def test_train_cli_writes_checkpoint_samples_metrics(synth, tmp_path, capsys):
    from realtalk_bridge.cli import main
    from realtalk_bridge.nets.renderer import load_renderer

    out = tmp_path / "run"
    args = ["train", "renderer", "--data", str(synth), "--config", "tiny", "--out", str(out), "--steps", "4",
            "--batch", "2", "--save-every", "2", "--sample-every", "2", "--threads", "1"]
    assert main(args) == 0
    model, meta = load_renderer(out / "renderer.safetensors")
    assert meta["step"] == "4" and model.dims.image_size == 64
    assert "fallback" in meta["perceptual"]
    assert sorted(p.name for p in (out / "samples").glob("*.png"))
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert (out / "loss.png").stat().st_size > 1000
    assert "perceptual loss: fallback" in capsys.readouterr().err
    # resume continues the step count
    assert main(args[:8] + ["--steps", "6", "--batch", "2", "--resume", "--threads", "1"]) == 0
    assert load_renderer(out / "renderer.safetensors")[1]["step"] == "6"


def test_train_cli_rejects_bad_data(tmp_path, capsys):
    from realtalk_bridge.cli import main

    assert main(["train", "renderer", "--data", str(tmp_path), "--config", "tiny", "--out", str(tmp_path / "r")]) == 2
    assert "manifest.json is missing" in capsys.readouterr().err


def test_dataset_rejects_malformed_clips(synth, tmp_path):
    import shutil

    from realtalk_bridge.train.renderer import RendererDataset

    bad = tmp_path / "bad"
    shutil.copytree(synth, bad)
    with np.load(bad / "clips" / "synth.npz") as z:
        arrays = {k: z[k] for k in z.files if k != "camera"}
    np.savez(bad / "clips" / "synth.npz", **arrays)
    with pytest.raises(ValueError, match="not a prepared renderer clip"):
        RendererDataset(bad, 64)
    arrays["camera"] = np.zeros((3, 2, 4), np.float32)
    np.savez(bad / "clips" / "synth.npz", **arrays)
    with pytest.raises(ValueError, match="shapes do not match"):
        RendererDataset(bad, 64)


def test_train_cli_image_size_override(synth, tmp_path, capsys):
    from realtalk_bridge.cli import main
    from realtalk_bridge.nets.renderer import load_renderer

    base = ["train", "renderer", "--data", str(synth), "--config", "tiny", "--steps", "1", "--batch", "2"]
    assert main(base + ["--out", str(tmp_path / "a"), "--image-size", "32"]) == 0
    assert load_renderer(tmp_path / "a" / "renderer.safetensors")[0].dims.image_size == 32
    assert main(base + ["--out", str(tmp_path / "b"), "--image-size", "40"]) == 2
    assert "multiple of 16" in capsys.readouterr().err


def test_ctrl_c_writes_a_checkpoint_and_resume_goes_on(synth, tmp_path):
    """SIGINT to a real `train renderer` process: it finishes the step, checkpoints, exits 130; --resume continues."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from realtalk_bridge.nets.renderer import load_renderer

    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    base = [sys.executable, "-m", "realtalk_bridge", "train", "renderer", "--data", str(synth), "--config", "tiny",
            "--out", str(out), "--batch", "2", "--threads", "1", "--quiet"]
    proc = subprocess.Popen(base + ["--steps", "100000", "--save-every", "100000", "--sample-every", "100000"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 90
    while time.time() < deadline and proc.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "stopped by Ctrl-C" in err and "Traceback" not in err
    steps = len(metrics.read_text().splitlines())
    assert int(load_renderer(out / "renderer.safetensors")[1]["step"]) == steps >= 3
    assert (out / "train_state.safetensors").is_file() and (out / "loss.png").is_file()
    assert list((out / "samples").glob("*.png"))
    r = subprocess.run(base + ["--steps", str(steps + 2), "--resume"], env=env, capture_output=True, text=True,
                       timeout=90)
    assert r.returncode == 0, r.stderr
    assert f"resumed at step {steps}" in r.stderr
    assert int(load_renderer(out / "renderer.safetensors")[1]["step"]) == steps + 2
    assert [json.loads(x)["step"] for x in metrics.read_text().splitlines()][-3:] == [steps, steps + 1, steps + 2]
