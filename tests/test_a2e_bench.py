"""`bench a2e` writes the JSON keys and the histogram PNG (the numbers themselves are the command's job)."""
import json

import pytest

pytest.importorskip("torch")

from realtalk_bridge.cli import main  # noqa: E402


def test_bench_random_init_writes_json_and_png(tmp_path):
    out = tmp_path / "b" / "a2e.json"
    assert main(["bench", "a2e", "--random-init", "--config", "tiny", "--out", str(out), "--steps", "40",
                 "--warmup", "5", "--seconds", "1"]) == 0
    r = json.loads(out.read_text())
    for k in ("step_ms_median", "step_ms_p95", "rtf", "params", "provider"):
        assert k in r
    assert r["provider"] == "CPUExecutionProvider" and r["params"] > 1000
    assert 0 < r["step_ms_median"] <= r["step_ms_p95"] and 0 < r["rtf"] and 0 < r["offline_rtf"]
    assert r["rtf_frames"] == 30  # 1 s of audio at 30 fps through A2EStream
    png = out.with_suffix(".png")
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_model_file(tiny_a2e_onnx, tmp_path):
    out = tmp_path / "m.json"
    assert main(["bench", "a2e", "--model", str(tiny_a2e_onnx), "--out", str(out), "--steps", "20", "--warmup", "2",
                 "--seconds", "0.5"]) == 0
    # the file name only: a results file must not record a developer's absolute path
    assert json.loads(out.read_text())["model"] == tiny_a2e_onnx.name


def test_bench_names_the_shipped_model_relative_to_the_models_folder():
    from realtalk_bridge.bench.a2e import model_label
    from realtalk_bridge.runtime.a2e import DEFAULT_MODEL

    assert model_label(DEFAULT_MODEL) == "a2e/default.onnx"


def test_bench_without_model_says_what_to_do(tmp_path, capsys):
    assert main(["bench", "a2e", "--model", str(tmp_path / "none.onnx"), "--out", str(tmp_path / "x.json")]) == 1
    assert "--random-init" in capsys.readouterr().err
