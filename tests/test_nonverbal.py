from __future__ import annotations

import numpy as np
import pytest

from realtalk_bridge.face.arkit import ARKIT_INDEX, ARKIT_NAMES
from realtalk_bridge.face.nonverbal import EMOTIONS, NonVerbal, blink_curve

FPS = 30
I = ARKIT_INDEX


def run(nv: NonVerbal, seconds: float, weights=None, t0: float = 0.0):
    w = np.zeros(52, np.float32) if weights is None else weights
    out, poses = [], []
    for k in range(int(seconds * FPS)):
        y, p = nv.step(t0 + k / FPS, w)
        out.append(y)
        poses.append(p)
    return np.array(out), poses


def aperture(w: np.ndarray) -> float:
    """How far apart the lips are: jaw opening not cancelled by lip closure, plus lip raisers/lowerers."""
    return (max(0.0, w[I["jawOpen"]] - w[I["mouthClose"]])
            + 0.5 * (w[I["mouthLowerDownLeft"]] + w[I["mouthLowerDownRight"]])
            + 0.5 * (w[I["mouthUpperUpLeft"]] + w[I["mouthUpperUpRight"]]) + w[I["mouthFunnel"]])


def test_same_seed_same_output_different_seed_differs():
    a, pa = run(NonVerbal(ARKIT_NAMES, seed=3), 20)
    b, pb = run(NonVerbal(ARKIT_NAMES, seed=3), 20)
    c, _ = run(NonVerbal(ARKIT_NAMES, seed=4), 20)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(np.array(pa), np.array(pb))
    assert not np.array_equal(a, c)


def test_blinks_are_human_like():
    out, _ = run(NonVerbal(ARKIT_NAMES, idle=False, gaze=False, seed=11), 120)
    blink = out[:, I["eyeBlinkLeft"]]
    np.testing.assert_array_equal(blink, out[:, I["eyeBlinkRight"]])
    closed = blink > 0.5
    onsets = np.flatnonzero(closed[1:] & ~closed[:-1])
    assert 16 <= len(onsets) <= 50, len(onsets)  # 8-25 per minute
    assert blink.max() == pytest.approx(1.0, abs=0.05)
    # each closure (> 0.5) is short: under 0.3 s
    ends = np.flatnonzero(~closed[1:] & closed[:-1])
    durations = (ends[: len(onsets)] - onsets[: len(ends)]) / FPS
    assert np.all(durations < 0.3) and np.all(durations > 0)
    assert np.mean(blink < 0.05) > 0.9  # eyes are open almost all the time
    # other channels are untouched when gaze and emotion are off
    others = np.delete(out, [I["eyeBlinkLeft"], I["eyeBlinkRight"]], axis=1)
    assert not np.any(others)


def test_blink_curve_shape():
    assert blink_curve(-0.1, 0.08, 0.03, 0.15) == 0.0
    assert blink_curve(0.04, 0.08, 0.03, 0.15) == pytest.approx(0.5)
    assert blink_curve(0.09, 0.08, 0.03, 0.15) == 1.0
    assert 0 < blink_curve(0.15, 0.08, 0.03, 0.15) < 1
    assert blink_curve(0.3, 0.08, 0.03, 0.15) == 0.0


def test_switches_turn_channels_off():
    nv = NonVerbal(ARKIT_NAMES, blink=False, idle=False, gaze=False, seed=1)
    w = np.random.default_rng(0).uniform(0, 1, 52).astype(np.float32)
    out, poses = run(nv, 10, w)
    assert all(p is None for p in poses)
    np.testing.assert_array_equal(out, np.broadcast_to(w, out.shape))
    nv.blink = True  # switchable at run time
    out2, _ = run(nv, 20, np.zeros(52, np.float32), t0=10.0)
    assert out2[:, I["eyeBlinkLeft"]].max() > 0.9


def test_idle_head_motion_is_small_and_alive():
    _, poses = run(NonVerbal(ARKIT_NAMES, blink=False, gaze=False, seed=5), 60)
    P = np.array(poses)
    assert P.shape == (60 * FPS, 6) and np.all(np.isfinite(P))
    assert np.all(np.abs(P[:, :3]) < np.radians(5)) and np.all(np.abs(P[:, 3:]) < 0.01)
    assert np.all(P[:, :3].std(axis=0) > np.radians(0.2))  # it moves
    assert np.abs(np.diff(P[:, :3], axis=0)).max() < np.radians(1.0)  # smoothly


def test_gaze_drifts_within_limits_and_uses_both_eyes_consistently():
    out, _ = run(NonVerbal(ARKIT_NAMES, blink=False, idle=False, seed=9), 60)
    right = out[:, I["eyeLookOutRight"]]
    assert right.max() > 0.02 and out[:, I["eyeLookOutLeft"]].max() > 0.02  # looks both ways
    np.testing.assert_array_equal(right, out[:, I["eyeLookInLeft"]])
    np.testing.assert_array_equal(out[:, I["eyeLookUpLeft"]], out[:, I["eyeLookUpRight"]])
    assert out[:, [I[n] for n in ARKIT_NAMES if n.startswith("eyeLook")]].max() <= 0.35
    changes = np.count_nonzero(np.abs(np.diff(right)) > 0.01)
    assert changes > 10


def test_emotion_fades_in_scales_with_strength_and_clears():
    nv = NonVerbal(ARKIT_NAMES, blink=False, idle=False, gaze=False, seed=0)
    run(nv, 1)
    nv.set_emotion("happy", 1.0)
    out, _ = run(nv, 2, t0=1.0)
    smile = out[:, I["mouthSmileLeft"]]
    assert smile[0] < 0.2 and smile[-1] == pytest.approx(EMOTIONS["happy"]["mouthSmileLeft"], abs=0.01)
    nv.set_emotion("happy", 0.5)
    out, _ = run(nv, 2, t0=3.0)
    assert out[-1, I["mouthSmileLeft"]] == pytest.approx(0.3, abs=0.01)
    nv.set_emotion("neutral", 1.0)
    out, _ = run(nv, 3, t0=5.0)
    assert out[-1].max() < 0.01
    for emo in ("sad", "angry", "surprised"):
        nv.set_emotion(emo, 1.0)
        out, _ = run(nv, 2, t0=8.0 + 2 * list(EMOTIONS).index(emo))
        key = max(EMOTIONS[emo], key=EMOTIONS[emo].get)
        assert out[-1, I[key]] == pytest.approx(EMOTIONS[emo][key], abs=0.02), emo


@pytest.mark.parametrize("name,strength", [("furious", 1.0), ("happy", 1.5), ("happy", -0.1),
                                           ("happy", float("nan")), ("happy", "1"), (None, 1.0)])
def test_bad_emotion_is_a_value_error(name, strength):
    with pytest.raises(ValueError):
        NonVerbal(ARKIT_NAMES).set_emotion(name, strength)


@pytest.mark.parametrize("emotion", list(EMOTIONS))
def test_emotion_never_opens_closed_lips(emotion):
    """During bilabials (m, b, p) the overlay must not part the lips."""
    bilabials = [
        dict(jawOpen=0.08, mouthClose=0.08, mouthPressLeft=0.4, mouthPressRight=0.4),
        dict(jawOpen=0.15, mouthClose=0.15, mouthRollLower=0.3, mouthRollUpper=0.3),
        dict(jawOpen=0.02, mouthClose=0.02, mouthPressLeft=0.3, mouthPressRight=0.3),
    ]
    nv = NonVerbal(ARKIT_NAMES, blink=False, idle=False, gaze=False, seed=0)
    nv.set_emotion(emotion, 1.0)
    run(nv, 2)
    for k, shape in enumerate(bilabials):
        w = np.zeros(52, np.float32)
        for n, v in shape.items():
            w[I[n]] = v
        y, _ = nv.step(2.0 + k / FPS, w)
        assert aperture(y) <= aperture(w) + 1e-6, (emotion, shape)
        assert y[I["mouthClose"]] >= w[I["mouthClose"]]


def test_emotion_still_shows_on_an_open_mouth():
    nv = NonVerbal(ARKIT_NAMES, blink=False, idle=False, gaze=False, seed=0)
    nv.set_emotion("surprised", 1.0)
    run(nv, 2)
    w = np.zeros(52, np.float32)
    w[I["jawOpen"]] = 0.4
    y, _ = nv.step(2.0, w)
    assert y[I["jawOpen"]] > 0.4 and y[I["eyeWideLeft"]] > 0.5


def test_time_jumping_back_restarts_cleanly_and_bad_shapes_raise():
    nv = NonVerbal(ARKIT_NAMES, seed=2)
    run(nv, 5)
    out, poses = run(nv, 5, t0=0.0)  # a new utterance restarts its clock
    assert np.all(np.isfinite(out)) and all(np.all(np.isfinite(p)) for p in poses)
    with pytest.raises(ValueError, match="expected 52"):
        nv.step(6.0, np.zeros(10))
    with pytest.raises(ValueError, match="finite"):
        nv.step(float("nan"), np.zeros(52))
    y, _ = nv.step(6.0, np.full(52, np.nan))
    assert np.all(np.isfinite(y))


def test_other_layouts_are_supported():
    names = ["jawOpen", "eyeBlinkLeft", "customThing"]
    nv = NonVerbal(names, seed=1)
    nv.set_emotion("surprised", 1.0)
    out, poses = run(nv, 30, np.zeros(3, np.float32))
    assert out.shape == (30 * FPS, 3) and out[:, 1].max() > 0.9 and not np.any(out[:, 2])


def test_serve_options_build_a_configured_layer():
    import argparse

    from realtalk_bridge.face.nonverbal import add_arguments, from_options, parse_emotion

    p = argparse.ArgumentParser()
    add_arguments(p)
    nv = from_options(ARKIT_NAMES, p.parse_args(["--no-blink", "--no-idle", "--emotion", "sad:0.5",
                                                 "--nonverbal-seed", "4"]))
    assert (nv.blink, nv.idle, nv.gaze, nv.emotion, nv.strength) == (False, False, True, "sad", 0.5)
    out, poses = run(nv, 3)
    assert poses[-1] is None and out[-1, I["browInnerUp"]] == pytest.approx(0.3, abs=0.01)
    default = from_options(ARKIT_NAMES, p.parse_args([]))
    assert (default.blink, default.idle, default.gaze, default.strength) == (True, True, True, 0.0)
    assert from_options(ARKIT_NAMES, {"gaze": False}).gaze is False
    assert parse_emotion("happy") == ("happy", 1.0)
    for bad in ("happy:lots", "joyful", "happy:2"):
        with pytest.raises(ValueError):
            parse_emotion(bad)
    for cfg in ({"blink": "yes"}, {"nonverbal_seed": 1.5}, {"emotion": "furious"}):
        with pytest.raises(ValueError):
            from_options(ARKIT_NAMES, cfg)
