"""The articulation teacher: timed phonemes -> ARKit-52 mouth curves at 25 fps.

No talking-face data set can be had here, so the A2E learns lip-sync from this rule-based teacher
(docs/teacher.md). Each phone has a mouth *target* and a *dominance* (how strongly it pulls the mouth
towards its target, and for how long before and after). Overlapping dominance functions blend the
targets (Cohen & Massaro 1993), which gives coarticulation for free: rounding of /uw/ spreads into the
consonants before it, /h/ and /k/ take the lip shape of their neighbours, but /p b m/ always close.

Pure numpy, no I/O. Phones come as `Phone(label, start, end)` in seconds; labels may be ARPAbet
(CMU dict, flite, festival, pocketsphinx, HTS labels) or IPA (espeak-ng).
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass

import numpy as np

from realtalk_bridge.face.arkit import ARKIT_INDEX, ARKIT_NAMES

FPS = 25
_RATE = 200  # Hz, internal time grid; frames are box-averaged from it so 30 ms phones are not missed


@dataclass(frozen=True)
class Phone:
    label: str
    start: float  # s
    end: float  # s


# ---------------------------------------------------------------------------------------------
# Phone inventory: ARPAbet keys -> targets
# ---------------------------------------------------------------------------------------------

# Latent articulators. "lipClose" is not an ARKit channel: ARKit's mouthClose means "lips sealed *while*
# the jaw is open", so it is derived at the end as lipClose * jawOpen.
LATENT = (
    "jawOpen", "lipClose", "mouthPress", "mouthFunnel", "mouthPucker", "mouthStretch", "mouthSmile",
    "mouthRollLower", "mouthRollUpper", "mouthUpperUp", "mouthLowerDown", "mouthShrugLower",
    "jawForward", "tongueOut",
)
_L = {n: i for i, n in enumerate(LATENT)}
# which dominance group each latent follows: the jaw and the lips move with different stiffness
_GROUP = {n: ("jaw" if n in ("jawOpen", "jawForward") else "tongue" if n == "tongueOut" else "lips") for n in LATENT}
GROUPS = ("jaw", "lips", "tongue")

# dominance per group (jaw, lips, tongue): how much a phone insists on its own target
_D_VOWEL = (0.9, 0.6, 0.3)
_D_ROUND = (0.9, 0.9, 0.3)
_D_BILABIAL = (0.8, 1.0, 0.2)
_D_LABIODENTAL = (0.55, 0.95, 0.2)
_D_CORONAL = (0.35, 0.15, 0.6)   # t d n l s z: tongue does the work, lips follow their neighbours
_D_POSTALV = (0.45, 0.75, 0.5)    # sh zh ch jh: lips protrude
_D_DENTAL = (0.4, 0.3, 0.9)      # th dh: tongue tip shows
_D_DORSAL = (0.25, 0.1, 0.2)      # k g ng
_D_GLOTTAL = (0.1, 0.05, 0.05)   # hh: fully coarticulated
_D_GLIDE_W = (0.6, 0.95, 0.2)
_D_GLIDE = (0.5, 0.45, 0.3)

# (targets, dominance). Numbers are judged from visemes of common lip-sync tools (Oculus, Preston Blair
# charts) and ARKit captures of speech; jawOpen 0.5 is a wide "ah", 0.1 nearly closed teeth.
_PHONES: dict[str, tuple[dict[str, float], tuple[float, float, float]]] = {
    # vowels
    "AA": (dict(jawOpen=0.55, mouthLowerDown=0.25, mouthStretch=0.05), _D_VOWEL),
    "AE": (dict(jawOpen=0.45, mouthStretch=0.3, mouthUpperUp=0.15, mouthLowerDown=0.25, mouthSmile=0.1), _D_VOWEL),
    "AH": (dict(jawOpen=0.36, mouthLowerDown=0.12), _D_VOWEL),
    "AO": (dict(jawOpen=0.45, mouthFunnel=0.35, mouthPucker=0.1, mouthLowerDown=0.1), _D_ROUND),
    "EH": (dict(jawOpen=0.34, mouthStretch=0.25, mouthLowerDown=0.15, mouthSmile=0.05), _D_VOWEL),
    "ER": (dict(jawOpen=0.2, mouthFunnel=0.3, mouthPucker=0.2, mouthUpperUp=0.1), _D_ROUND),
    "IH": (dict(jawOpen=0.2, mouthStretch=0.3, mouthSmile=0.12, mouthUpperUp=0.05), _D_VOWEL),
    "IY": (dict(jawOpen=0.12, mouthStretch=0.45, mouthSmile=0.3, mouthUpperUp=0.1), _D_VOWEL),
    "UH": (dict(jawOpen=0.2, mouthFunnel=0.3, mouthPucker=0.35), _D_ROUND),
    "UW": (dict(jawOpen=0.12, mouthFunnel=0.35, mouthPucker=0.75), _D_ROUND),
    "AX": (dict(jawOpen=0.25, mouthLowerDown=0.05), (0.6, 0.3, 0.2)),  # schwa: weak, short, coarticulated
    # consonants
    "P": (dict(jawOpen=0.08, lipClose=1.0, mouthPress=0.45, mouthRollLower=0.1, mouthRollUpper=0.1), _D_BILABIAL),
    "B": (dict(jawOpen=0.09, lipClose=1.0, mouthPress=0.3, mouthRollLower=0.08, mouthRollUpper=0.08), _D_BILABIAL),
    "M": (dict(jawOpen=0.09, lipClose=1.0, mouthPress=0.25, mouthRollLower=0.05), _D_BILABIAL),
    "F": (dict(jawOpen=0.08, mouthRollLower=0.5, mouthUpperUp=0.25, mouthShrugLower=0.15), _D_LABIODENTAL),
    "V": (dict(jawOpen=0.09, mouthRollLower=0.45, mouthUpperUp=0.22, mouthShrugLower=0.1), _D_LABIODENTAL),
    "TH": (dict(jawOpen=0.15, tongueOut=0.35, mouthStretch=0.1), _D_DENTAL),
    "DH": (dict(jawOpen=0.14, tongueOut=0.3, mouthStretch=0.1), _D_DENTAL),
    "T": (dict(jawOpen=0.14, mouthStretch=0.15), _D_CORONAL),
    "D": (dict(jawOpen=0.15, mouthStretch=0.12), _D_CORONAL),
    "N": (dict(jawOpen=0.14, mouthStretch=0.1), _D_CORONAL),
    "L": (dict(jawOpen=0.2, mouthStretch=0.08), _D_CORONAL),
    "S": (dict(jawOpen=0.06, mouthStretch=0.3, mouthSmile=0.1, mouthUpperUp=0.05), (0.5, 0.35, 0.6)),
    "Z": (dict(jawOpen=0.07, mouthStretch=0.25, mouthSmile=0.08), (0.5, 0.3, 0.6)),
    "SH": (dict(jawOpen=0.08, mouthFunnel=0.45, mouthPucker=0.3, mouthUpperUp=0.15, mouthLowerDown=0.15,
                jawForward=0.1), _D_POSTALV),
    "ZH": (dict(jawOpen=0.08, mouthFunnel=0.4, mouthPucker=0.25, mouthUpperUp=0.12, mouthLowerDown=0.12), _D_POSTALV),
    "CH": (dict(jawOpen=0.07, mouthFunnel=0.4, mouthPucker=0.3, mouthUpperUp=0.12, mouthLowerDown=0.1,
                jawForward=0.08), _D_POSTALV),
    "JH": (dict(jawOpen=0.08, mouthFunnel=0.38, mouthPucker=0.25, mouthUpperUp=0.1, mouthLowerDown=0.1), _D_POSTALV),
    "K": (dict(jawOpen=0.2), _D_DORSAL),
    "G": (dict(jawOpen=0.2), _D_DORSAL),
    "NG": (dict(jawOpen=0.18), _D_DORSAL),
    "HH": (dict(jawOpen=0.25), _D_GLOTTAL),
    "R": (dict(jawOpen=0.14, mouthFunnel=0.35, mouthPucker=0.35), (0.5, 0.7, 0.3)),
    "W": (dict(jawOpen=0.08, mouthFunnel=0.4, mouthPucker=0.85), _D_GLIDE_W),
    "Y": (dict(jawOpen=0.1, mouthStretch=0.3, mouthSmile=0.15), _D_GLIDE),
    "SIL": ({}, (1.0, 1.0, 1.0)),  # rest; its dominance is scaled by the pause length below
}

# diphthongs: (first part, second part, share of the segment taken by the first)
_DIPHTHONGS = {"AW": ("AA", "UH", 0.55), "AY": ("AA", "IH", 0.55), "EY": ("EH", "IY", 0.6),
               "OW": ("AO", "UH", 0.55), "OY": ("AO", "IY", 0.55)}

# ARPAbet spellings used by the various tools -> our keys
_ARPA_ALIASES = {
    "AXR": "ER", "IX": "IH", "UX": "UW", "EL": "L", "EM": "M", "EN": "N", "NX": "N", "DX": "D", "Q": "SIL",
    "PAU": "SIL", "H#": "SIL", "SP": "SIL", "SIL": "SIL", "<SIL>": "SIL", "++NOISE++": "SIL", "[NOISE]": "SIL",
    "+NSN+": "SIL", "+SPN+": "SIL", "BRTH": "SIL", "SSIL": "SIL", "X": "SIL", "HV": "HH", "WH": "W", "AX": "AX",
    "AH0": "AX",
}

# IPA (espeak-ng, en-* voices) -> ARPAbet keys; longest match first
_IPA = {
    "tʃ": "CH", "dʒ": "JH", "aɪ": "AY", "aʊ": "AW", "eɪ": "EY", "oʊ": "OW", "əʊ": "OW", "ɔɪ": "OY", "eə": "EH",
    "ɪə": "IH", "ʊə": "UH", "iə": "IY", "ɑɪ": "AY", "ʌʊ": "OW", "ɐʊ": "AW", "ɛə": "EH", "oː": "AO", "ɜː": "ER",
    "ɔː": "AO", "ɑː": "AA", "iː": "IY", "uː": "UW",
    "p": "P", "b": "B", "m": "M", "f": "F", "v": "V", "θ": "TH", "ð": "DH", "t": "T", "d": "D", "n": "N",
    "l": "L", "ɫ": "L", "s": "S", "z": "Z", "ʃ": "SH", "ʒ": "ZH", "k": "K", "g": "G", "ɡ": "G", "ŋ": "NG",
    "h": "HH", "ɹ": "R", "r": "R", "ɾ": "D", "w": "W", "j": "Y", "ʔ": "HH", "x": "HH", "ç": "HH", "ʍ": "W",
    "ɑ": "AA", "a": "AA", "æ": "AE", "ʌ": "AH", "ɐ": "AH", "ɒ": "AO", "ɔ": "AO", "o": "AO", "ɛ": "EH",
    "e": "EH", "ə": "AX", "ɚ": "ER", "ɝ": "ER", "ɜ": "ER", "ɪ": "IH", "ᵻ": "IH", "i": "IY", "ʊ": "UH",
    "u": "UW", "y": "UW", "ʏ": "UH", "ø": "UH",
}
_IPA_KEYS = sorted(_IPA, key=len, reverse=True)
_STRESS_MARKS = "ˈˌ"


def normalize_phone(label: str) -> list[tuple[str, int]]:
    """A phone label from any of our tools -> [(ARPAbet key, stress)], stress 1 primary, 2 secondary, 0 none.

    Diphthongs stay one key here (split later); an unknown label gives [("AX", 0)], a weak neutral shape,
    so odd symbols never break a clip.
    """
    raw = unicodedata.normalize("NFC", label.strip())
    if not raw or raw in ("_", "_:", "||", "|", "-", "#"):
        return [("SIL", 0)]
    up = raw.upper()
    m = re.fullmatch(r"([A-Z]+)([012])?", up)
    if m and (m.group(1) in _PHONES or m.group(1) in _DIPHTHONGS or m.group(1) in _ARPA_ALIASES):
        key, stress = m.group(1), int(m.group(2) or 0)
        if up == "AH0":
            return [("AX", 0)]
        key = _ARPA_ALIASES.get(key, key)
        return [(key, stress)]
    if up in _ARPA_ALIASES:
        return [(_ARPA_ALIASES[up], 0)]
    # IPA: a stress mark applies to the vowel that follows
    stress = 1 if "ˈ" in raw else 2 if "ˌ" in raw else 0
    s = "".join(ch for ch in raw if ch not in _STRESS_MARKS and not unicodedata.combining(ch) and ch not in "ʰʲʷ̩")
    out: list[tuple[str, int]] = []
    i = 0
    while i < len(s):
        for k in _IPA_KEYS:
            if s.startswith(k, i):
                out.append((_IPA[k], stress))
                i += len(k)
                break
        else:
            i += 1  # length marks and unknown symbols
    return out or [("AX", 0)]


# ---------------------------------------------------------------------------------------------
# Speaker style: the per-utterance "way of speaking" the N historical expressions reveal
# ---------------------------------------------------------------------------------------------

@dataclass
class Style:
    amplitude: float = 1.0    # overall articulation size
    jaw_ratio: float = 1.0    # > 1: talks with the jaw, < 1: with the lips
    rest_smile: float = 0.05  # resting mouth corners, also present while speaking
    rest_open: float = 0.0    # lips slightly apart at rest
    asymmetry: float = 0.0    # left minus right on smile/stretch/press
    lead: float = 0.03        # s: the mouth moves this much before the sound (visual lead)
    spread: float = 1.0       # coarticulation width multiplier

    @classmethod
    def sample(cls, rng: np.random.Generator) -> "Style":
        return cls(
            amplitude=float(rng.uniform(0.7, 1.3)),
            jaw_ratio=float(np.exp(rng.uniform(np.log(0.7), np.log(1.4)))),
            rest_smile=float(rng.uniform(0.0, 0.25)),
            rest_open=float(rng.uniform(0.0, 0.06)),
            asymmetry=float(rng.uniform(-0.08, 0.08)),
            lead=float(rng.uniform(0.01, 0.05)),
            spread=float(rng.uniform(0.8, 1.25)),
        )

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# Calibration: the few free parameters fitted to real faces (corpus/calibrate.py, docs/teacher.md)
# ---------------------------------------------------------------------------------------------

# phone classes the calibration scales (diphthongs are split into these before scaling)
OPEN_VOWELS = frozenset({"AA", "AE", "AH", "AO"})
MID_VOWELS = frozenset({"EH", "ER", "AX"})
CLOSE_VOWELS = frozenset({"IH", "IY", "UH", "UW"})
ROUND_VOWELS = frozenset({"UW", "UH", "AO", "ER"})
ROUND_CONSONANTS = frozenset({"W", "R", "SH", "ZH", "CH", "JH"})
SPREAD_PHONES = frozenset({"IY", "IH", "EH", "AE", "Y", "S", "Z"})


@dataclass(frozen=True)
class Calibration:
    """Multipliers and shifts on the hand-set rules; the defaults reproduce them exactly.

    Targets are scaled *relative to anchor phones that keep their hand-set values* (open vowels for jawOpen,
    rounded vowels for funnel/pucker, spread phones for stretch/smile): the fit compares shapes, not the ARKit
    scale, so the absolute size of the articulation stays the hand-set one.
    """

    lead_shift: float = 0.0        # s added to Style.lead
    anticipation: float = 1.0      # x the anticipation widths (before a segment)
    carryover: float = 1.0         # x the carry-over widths (after a segment)
    jaw_width: float = 0.75        # the jaw group's width factor (it follows syllables closely)
    round_anticipation: float = 1.8  # how much further ahead lip rounding is anticipated
    jaw_mid_vowels: float = 1.0    # x jawOpen targets of EH ER AX (AA AE AH AO stay as set)
    jaw_close_vowels: float = 1.0  # ... of IH IY UH UW
    jaw_consonants: float = 1.0    # ... of every consonant
    round_consonants: float = 1.0  # x mouthFunnel/mouthPucker of W R SH ZH CH JH (UW UH AO ER stay as set)
    stretch_others: float = 1.0    # x mouthStretch/mouthSmile of phones other than IY IH EH AE Y S Z

    # (low, high): values outside are refused when loading (and bound the fit)
    BOUNDS = {"lead_shift": (-0.08, 0.08), "anticipation": (0.4, 2.5), "carryover": (0.4, 2.5),
              "jaw_width": (0.3, 1.5), "round_anticipation": (0.8, 3.0), "jaw_mid_vowels": (0.4, 2.5),
              "jaw_close_vowels": (0.4, 2.5), "jaw_consonants": (0.3, 3.0), "round_consonants": (0.3, 3.0),
              "stretch_others": (0.3, 3.0)}

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(cls.BOUNDS)

    def to_dict(self) -> dict:
        return {k: float(getattr(self, k)) for k in self.names()}

    @classmethod
    def from_dict(cls, d: dict) -> "Calibration":
        unknown = set(d) - set(cls.BOUNDS)
        if unknown:
            raise ValueError(f"unknown teacher calibration keys: {sorted(unknown)}")
        vals = {}
        for k, v in d.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
                raise ValueError(f"teacher calibration {k!r} must be a finite number, got {v!r}")
            lo, hi = cls.BOUNDS[k]
            if not lo <= v <= hi:
                raise ValueError(f"teacher calibration {k!r} = {v} is outside [{lo}, {hi}]")
            vals[k] = float(v)
        return cls(**vals)

    def scale_target(self, key: str, tvec: np.ndarray) -> np.ndarray:
        jaw = (1.0 if key in OPEN_VOWELS else self.jaw_mid_vowels if key in MID_VOWELS
               else self.jaw_close_vowels if key in CLOSE_VOWELS else self.jaw_consonants)
        tvec = tvec.copy()
        tvec[_L["jawOpen"]] *= jaw
        if key in ROUND_CONSONANTS:
            tvec[_L["mouthFunnel"]] *= self.round_consonants
            tvec[_L["mouthPucker"]] *= self.round_consonants
        if key not in SPREAD_PHONES:
            tvec[_L["mouthStretch"]] *= self.stretch_others
            tvec[_L["mouthSmile"]] *= self.stretch_others
        return tvec


HAND_SET = Calibration()
CALIBRATION_ENV = "REALTALK_TEACHER_CALIBRATION"  # a JSON path, or "none" for the hand-set rules


def load_calibration(path=None) -> Calibration:
    """A calibration JSON (`{"params": {...}}` as written by `corpus calibrate-teacher`) -> Calibration."""
    import json
    from pathlib import Path

    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read teacher calibration {path}: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("params"), dict):
        raise ValueError(f"{path}: a teacher calibration needs a 'params' object")
    try:
        return Calibration.from_dict(doc["params"])
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


_DEFAULT_CAL: dict = {}


def default_calibration() -> Calibration:
    """The shipped calibration (models/teacher/calibration.json), unless $REALTALK_TEACHER_CALIBRATION says
    otherwise ("none": the hand-set rules); the hand-set rules when no file ships."""
    import os

    env = os.environ.get(CALIBRATION_ENV, "")
    if env not in _DEFAULT_CAL:
        if env.lower() == "none":
            _DEFAULT_CAL[env] = HAND_SET
        elif env:
            _DEFAULT_CAL[env] = load_calibration(env)
        else:
            from realtalk_bridge.assets import model_path

            p = model_path("teacher", "calibration.json")
            _DEFAULT_CAL[env] = load_calibration(p) if p.is_file() else HAND_SET
    return _DEFAULT_CAL[env]


# ---------------------------------------------------------------------------------------------
# The math
# ---------------------------------------------------------------------------------------------

def _segments(phones: list[Phone]) -> list[tuple[str, int, float, float]]:
    """Phones -> (key, stress, start, end) with diphthongs split into two parts and pads of silence."""
    segs: list[tuple[str, int, float, float]] = []
    for p in phones:
        start, end = float(p.start), float(p.end)
        if not np.isfinite(start) or not np.isfinite(end) or end < start:
            raise ValueError(f"bad phone timing {p}")
        parts = normalize_phone(p.label)
        # several symbols in one label (IPA clusters) share its span evenly
        bounds = np.linspace(start, end, len(parts) + 1)
        for (key, stress), a, b in zip(parts, bounds[:-1], bounds[1:]):
            if key in _DIPHTHONGS:
                k1, k2, share = _DIPHTHONGS[key]
                mid = a + share * (b - a)
                segs.append((k1, stress, a, mid))
                segs.append((k2, stress, mid, b))
            else:
                segs.append((key, stress, a, b))
    return segs


def _dominance(t: np.ndarray, a: float, b: float, alpha: float, ant: float, carry: float) -> np.ndarray:
    """Cohen-Massaro dominance: alpha inside the segment's core, decaying exp(-(d/w)^1.5) outside it."""
    # the core is the middle of the segment: transitions happen around boundaries, not after them
    shrink = min(0.15 * (b - a), 0.02)
    a2, b2 = a + shrink, b - shrink
    d_before = np.clip(a2 - t, 0.0, None) / ant
    d_after = np.clip(t - b2, 0.0, None) / carry
    return alpha * np.exp(-((d_before + d_after) ** 1.5))


def latent_curves(phones: list[Phone], t: np.ndarray, style: Style, cal: Calibration = HAND_SET) -> np.ndarray:
    """(len(t), len(LATENT)) blended articulator targets at times t (s)."""
    segs = _segments(phones)
    n = len(t)
    num = np.zeros((n, len(LATENT)))
    den = np.zeros((n, len(LATENT)))
    group_cols = {g: np.array([i for i, name in enumerate(LATENT) if _GROUP[name] == g]) for g in GROUPS}
    ordered = bool(np.all(np.diff(t) >= 0))
    lead = style.lead + cal.lead_shift
    # rest before the first and after the last phone
    first = segs[0][2] if segs else 0.0
    last = segs[-1][3] if segs else 0.0
    segs = [("SIL", 0, first - 10.0, first)] + segs + [("SIL", 0, last, last + 10.0)]
    for key, stress, a, b in segs:
        target, dom = _PHONES.get(key, _PHONES["AX"])
        a, b = a - lead, b - lead
        dur = b - a
        tvec = np.zeros(len(LATENT))
        for name, v in target.items():
            tvec[_L[name]] = v
        tvec = cal.scale_target(key, tvec)
        if key == "SIL":
            # short pauses barely close the mouth; long ones return it to rest
            alpha_scale = float(np.clip((dur - 0.06) / 0.25, 0.05, 1.0))
            ant, carry = 0.06 * style.spread * cal.anticipation, 0.08 * style.spread * cal.carryover
        else:
            alpha_scale = 1.0
            if key in _VOWELS:
                # stressed vowels open wider, unstressed ones less
                tvec[_L["jawOpen"]] *= {1: 1.15, 2: 1.0, 0: 0.85}.get(stress, 1.0)
            ant, carry = 0.07 * style.spread * cal.anticipation, 0.06 * style.spread * cal.carryover
        for gi, g in enumerate(GROUPS):
            # the heavy jaw follows each syllable closely; lip rounding is anticipated early
            w_ant = ant * (cal.jaw_width if g == "jaw" else
                           cal.round_anticipation if (g == "lips" and key in _ROUNDED) else 1.0)
            w_carry = carry * (cal.jaw_width if g == "jaw" else 1.0)
            # beyond 8 widths the dominance is below 1e-10: only the window around the segment is computed
            i0, i1 = (np.searchsorted(t, a - 8 * w_ant), np.searchsorted(t, b + 8 * w_carry, "right")) if ordered \
                else (0, n)
            if i1 <= i0:
                continue
            dval = _dominance(t[i0:i1], a, b, dom[gi] * alpha_scale, w_ant, w_carry)
            cols = group_cols[g]
            num[i0:i1, cols] += dval[:, None] * tvec[cols][None, :]
            den[i0:i1, cols] += dval[:, None]
    return num / np.maximum(den, 1e-6)


_VOWELS = {"AA", "AE", "AH", "AO", "EH", "ER", "IH", "IY", "UH", "UW", "AX"}
_ROUNDED = {"UW", "UH", "AO", "W", "R", "ER", "SH", "ZH", "CH", "JH"}


def latent_to_arkit(lat: np.ndarray, style: Style) -> np.ndarray:
    """(n, LATENT) -> (n, 52) with the speaker style applied."""
    n = lat.shape[0]
    out = np.zeros((n, len(ARKIT_NAMES)), dtype=np.float64)
    jaw_gain = style.amplitude * style.jaw_ratio
    lip_gain = style.amplitude / np.sqrt(style.jaw_ratio)
    L = lambda name: lat[:, _L[name]]  # noqa: E731
    jaw = np.clip(L("jawOpen") * jaw_gain + style.rest_open * (1.0 - L("lipClose")), 0.0, 1.0)
    sym = lambda name, v, asym=0.0: (out.__setitem__((slice(None), ARKIT_INDEX[name + "Left"]), v * (1 + asym)),  # noqa: E731
                                     out.__setitem__((slice(None), ARKIT_INDEX[name + "Right"]), v * (1 - asym)))
    out[:, ARKIT_INDEX["jawOpen"]] = jaw
    out[:, ARKIT_INDEX["jawForward"]] = L("jawForward") * jaw_gain
    out[:, ARKIT_INDEX["tongueOut"]] = L("tongueOut") * style.amplitude
    # ARKit mouthClose seals the lips against an open jaw: it can never exceed jawOpen
    out[:, ARKIT_INDEX["mouthClose"]] = np.minimum(np.clip(L("lipClose"), 0, 1) * jaw, jaw)
    out[:, ARKIT_INDEX["mouthFunnel"]] = L("mouthFunnel") * lip_gain
    out[:, ARKIT_INDEX["mouthPucker"]] = L("mouthPucker") * lip_gain
    out[:, ARKIT_INDEX["mouthRollLower"]] = L("mouthRollLower") * lip_gain
    out[:, ARKIT_INDEX["mouthRollUpper"]] = L("mouthRollUpper") * lip_gain
    out[:, ARKIT_INDEX["mouthShrugLower"]] = L("mouthShrugLower") * lip_gain
    a = style.asymmetry
    sym("mouthStretch", L("mouthStretch") * lip_gain, a)
    # rounding pulls the corners in, so the resting smile fades while the lips pucker
    rest = style.rest_smile * (1.0 - np.clip(L("mouthPucker") + L("mouthFunnel"), 0, 1))
    sym("mouthSmile", L("mouthSmile") * lip_gain + rest, a)
    sym("mouthPress", L("mouthPress") * lip_gain, a)
    sym("mouthUpperUp", L("mouthUpperUp") * lip_gain, a)
    sym("mouthLowerDown", L("mouthLowerDown") * lip_gain, a)
    return np.clip(out, 0.0, 1.0)


def teacher_curves(phones: list[Phone], n_frames: int, fps: int = FPS, style: Style | None = None,
                   calibration: Calibration | None = None) -> np.ndarray:
    """Timed phones -> (n_frames, 52) float32 ARKit curves; frame i is the face at time i / fps.

    Each frame is the mean over its +-half-frame neighbourhood of a 200 Hz curve, the way a camera
    integrates over its exposure. `calibration` None: the shipped one fitted to real faces
    (`default_calibration()`); `HAND_SET` gives the hand-set rules.
    """
    style = style or Style()
    cal = default_calibration() if calibration is None else calibration
    if n_frames <= 0:
        return np.zeros((0, len(ARKIT_NAMES)), dtype=np.float32)
    t_fine = np.arange(-0.5 / fps, (n_frames - 0.5) / fps + 1e-9, 1.0 / _RATE)
    ark = latent_to_arkit(latent_curves(list(phones), t_fine, style, cal), style)
    # box-average fine samples into frames centred on i / fps
    edges = np.searchsorted(t_fine, (np.arange(n_frames + 1) - 0.5) / fps - 1e-9)
    csum = np.concatenate([np.zeros((1, ark.shape[1])), np.cumsum(ark, axis=0)])
    counts = np.maximum(edges[1:] - edges[:-1], 1)[:, None]
    frames = (csum[edges[1:]] - csum[edges[:-1]]) / counts
    return frames.astype(np.float32)


def phones_from_starts(events: list[tuple[str, float]], end: float) -> list[Phone]:
    """(label, start) events (espeak-ng's PHONEME events) -> Phones ending where the next one starts."""
    out = []
    for i, (label, start) in enumerate(events):
        stop = events[i + 1][1] if i + 1 < len(events) else end
        if stop > start:
            out.append(Phone(label, start, stop))
    return out


def phones_from_ends(items: list[tuple[str, float]], start: float = 0.0) -> list[Phone]:
    """(label, end) items (flite -psdur, festival segs) -> Phones starting where the previous one ended."""
    out = []
    prev = start
    for label, end in items:
        if end > prev:
            out.append(Phone(label, prev, end))
        prev = max(prev, end)
    return out


# the channels the teacher drives; the rest (eyes, brows, cheeks, nose) stay at zero for nonverbal/
MOUTH_CHANNELS: tuple[str, ...] = tuple(
    n for n in ARKIT_NAMES if n.startswith(("jaw", "mouth", "tongue")) and n not in ("jawLeft", "jawRight", "mouthLeft",
                                                                                      "mouthRight")
)
