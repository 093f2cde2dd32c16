"""The articulation teacher: phonetics we can check by eye, as numbers."""
from __future__ import annotations

import numpy as np
import pytest

from realtalk_bridge.corpus.teacher import (MOUTH_CHANNELS, Phone, Style, normalize_phone, phones_from_ends,
                                            phones_from_starts, teacher_curves)
from realtalk_bridge.face.arkit import ARKIT_INDEX as I
from realtalk_bridge.face.arkit import ARKIT_NAMES

FPS = 25


def seq(*items, start=0.5):
    """("AA", 0.2), ("B", 0.08) ... -> Phones laid end to end after `start` s of silence."""
    out, t = [Phone("sil", 0.0, start)], start
    for label, dur in items:
        out.append(Phone(label, t, t + dur))
        t += dur
    out.append(Phone("sil", t, t + 0.6))
    return out


def frame(t):
    return int(round(t * FPS))


def curves(phones, style=None):
    n = int(phones[-1].end * FPS)
    return teacher_curves(phones, n, FPS, style or Style(rest_smile=0.0, lead=0.0))


def test_normalize_phone_ipa_and_arpabet():
    assert normalize_phone("AA1") == [("AA", 1)]
    assert normalize_phone("ah0") == [("AX", 0)]
    assert normalize_phone("pau") == [("SIL", 0)]
    assert normalize_phone("SIL") == [("SIL", 0)]
    assert normalize_phone("ˈoʊ") == [("OW", 1)]
    assert normalize_phone("ˈɜː") == [("ER", 1)]
    assert normalize_phone("tʃ") == [("CH", 0)]
    assert normalize_phone("ɡ") == [("G", 0)]
    assert normalize_phone("") == [("SIL", 0)]
    assert normalize_phone("%%") == [("AX", 0)]  # unknown symbols degrade to a weak neutral shape


def test_shape_range_and_silent_channels():
    c = curves(seq(("HH", 0.08), ("AH", 0.15), ("L", 0.07), ("OW", 0.25)))
    assert c.shape == (int(seq(("HH", 0.08), ("AH", 0.15), ("L", 0.07), ("OW", 0.25))[-1].end * FPS), 52)
    assert c.dtype == np.float32
    assert c.min() >= 0.0 and c.max() <= 1.0
    others = [i for i, n in enumerate(ARKIT_NAMES) if n not in MOUTH_CHANNELS]
    assert np.all(c[:, others] == 0.0), "the teacher drives only jaw, mouth and tongue"


def test_open_vowel_opens_jaw_and_silence_rests():
    ph = seq(("AA", 0.3))
    c = curves(ph)
    mid = frame(0.65)
    assert c[mid, I["jawOpen"]] > 0.4
    assert c[frame(0.1), I["jawOpen"]] < 0.02
    assert np.all(c[frame(0.1)] < 0.02), "long silence returns to the rest pose"
    assert np.all(c[-1] < 0.02)


def test_bilabial_closes_lips_between_vowels():
    ph = seq(("AA", 0.2), ("B", 0.09), ("AA", 0.2))
    c = curves(ph)
    tb = frame(0.5 + 0.2 + 0.045)
    ta = frame(0.6)
    assert c[tb, I["mouthPressLeft"]] > 0.15
    assert c[tb, I["mouthClose"]] > 0.05
    assert c[tb, I["jawOpen"]] < c[ta, I["jawOpen"]] - 0.1, "the mouth closes for /b/"
    assert c[ta, I["mouthPressLeft"]] < 0.05


def test_rounding_vs_spreading_and_labiodental():
    u = curves(seq(("UW", 0.3)))[frame(0.65)]
    i = curves(seq(("IY", 0.3)))[frame(0.65)]
    f = curves(seq(("F", 0.15)))[frame(0.57)]
    assert u[I["mouthPucker"]] > 0.5 and i[I["mouthPucker"]] < 0.05
    assert i[I["mouthStretchLeft"]] > 0.3 and u[I["mouthStretchLeft"]] < 0.05
    assert f[I["mouthRollLower"]] > 0.3 and f[I["mouthUpperUpLeft"]] > 0.1


def test_coarticulation_anticipates_rounding():
    # "s t uw": the lips already round during /s/ (anticipation), unlike in "s t iy"
    su = curves(seq(("S", 0.1), ("T", 0.06), ("UW", 0.25)))
    si = curves(seq(("S", 0.1), ("T", 0.06), ("IY", 0.25)))
    ts = frame(0.55)
    assert su[ts, I["mouthPucker"]] > 0.1
    assert su[ts, I["mouthPucker"]] > si[ts, I["mouthPucker"]] + 0.1
    # /h/ takes the shape of the vowel after it: rounded in "who", spread in "he"
    hu = curves(seq(("HH", 0.08), ("UW", 0.3)))
    hi = curves(seq(("HH", 0.08), ("IY", 0.3)))
    th = frame(0.54)
    assert hu[th, I["mouthPucker"]] > hi[th, I["mouthPucker"]] + 0.2


def test_onset_precedes_sound():
    # the lips start moving before the sound (visual lead) and the jaw starts opening ahead of the vowel
    ph = seq(("AA", 0.3))
    c = teacher_curves(ph, int(ph[-1].end * FPS), FPS, Style(rest_smile=0.0, lead=0.04))
    assert c[frame(0.48), I["jawOpen"]] > 0.05


def test_short_pause_does_not_fully_close():
    short = curves(seq(("AA", 0.2), ("sil", 0.06), ("AA", 0.2)))
    long = curves(seq(("AA", 0.2), ("sil", 0.6), ("AA", 0.2)))
    assert short[frame(0.73), I["jawOpen"]] > 0.15
    assert long[frame(1.0), I["jawOpen"]] < 0.03


def test_style_scales_articulation_and_rest_smile():
    ph = seq(("AA", 0.3))
    small = teacher_curves(ph, 40, FPS, Style(amplitude=0.7, rest_smile=0.0, lead=0.0))
    big = teacher_curves(ph, 40, FPS, Style(amplitude=1.3, rest_smile=0.0, lead=0.0))
    assert big[frame(0.65), I["jawOpen"]] > 1.6 * small[frame(0.65), I["jawOpen"]]
    smiling = teacher_curves(ph, 40, FPS, Style(rest_smile=0.2, lead=0.0))
    assert smiling[2, I["mouthSmileLeft"]] == pytest.approx(0.2, abs=1e-3)
    jaw = teacher_curves(ph, 40, FPS, Style(jaw_ratio=1.4, rest_smile=0.0, lead=0.0))
    lips = teacher_curves(ph, 40, FPS, Style(jaw_ratio=0.7, rest_smile=0.0, lead=0.0))
    assert jaw[frame(0.65), I["jawOpen"]] > lips[frame(0.65), I["jawOpen"]] * 1.5
    s = Style.sample(np.random.default_rng(1))
    assert 0.7 <= s.amplitude <= 1.3 and 0 <= s.rest_smile <= 0.25


def test_event_helpers_and_bad_input():
    ph = phones_from_starts([("h", 0.0), ("ə", 0.1), ("", 0.3)], 0.5)
    assert [(p.label, p.start, p.end) for p in ph] == [("h", 0.0, 0.1), ("ə", 0.1, 0.3), ("", 0.3, 0.5)]
    ph = phones_from_ends([("pau", 0.2), ("hh", 0.3), ("ax", 0.4)])
    assert [(p.start, p.end) for p in ph] == [(0.0, 0.2), (0.2, 0.3), (0.3, 0.4)]
    with pytest.raises(ValueError):
        teacher_curves([Phone("AA", 0.5, 0.2)], 10)
    with pytest.raises(ValueError):
        teacher_curves([Phone("AA", float("nan"), 0.2)], 10)
    assert teacher_curves([], 5).shape == (5, 52)
    assert teacher_curves([Phone("AA", 0, 1)], 0).shape == (0, 52)
